"""Hugging Face Hub names wherever a model folder is accepted, with no network: a real HF cache (blobs, snapshots
linked to them, refs/main) built in a temporary HF_HOME from a tiny model, read with HF_HUB_OFFLINE=1; the online
checks (a RoBERTa, TensorFlow-only weights, a typo, a private repo, a missing revision) against a stand-in for the
Hub's API that must refuse before anything is downloaded."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import main
from bertkit.errors import BertkitError
from bertkit.hub import TOKENIZER_FILES, hub_origin, resolve_model, resolve_tokenizer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "was", "the", "hi"]


def add_to_cache(hub: Path, repo: str, folder: Path, commit: str, ref: str | None = "main") -> Path:
    """folder's files into hub/models--ORG--NAME as huggingface_hub lays them out: blobs named by hash, the
    snapshot's files linked to them, refs/REF holding the commit. Returns the snapshot folder."""
    root = hub / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> dict:
    """HF_HOME with org/tiny-bert (a 2-label classifier) at COMMIT (refs/main) and at OLD (no ref), and
    org/tiny-roberta (a BERT folder whose config says roberta)."""
    d = tmp_path_factory.mktemp("hub")
    rows = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 6)) + f" {i}" for i in range(40)]
    tok = Tokenizer.train(rows, vocab_size=80, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    model = save_model(d / "src", build_model(config, "sequence_classification", 2), tok, labels=["neg", "pos"])
    hub = d / "home" / "hub"
    snapshot = add_to_cache(hub, "org/tiny-bert", model, COMMIT)
    old = add_to_cache(hub, "org/tiny-bert", model, OLD, ref=None)
    roberta = d / "roberta"
    roberta.mkdir()
    for f in model.iterdir():
        roberta.joinpath(f.name).write_bytes(f.read_bytes())
    cfg = json.loads((roberta / "config.json").read_text())
    (roberta / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    add_to_cache(hub, "org/tiny-roberta", roberta, COMMIT)
    train = d / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(rows)))
    return {"home": d / "home", "hub": hub, "snapshot": snapshot, "old": old, "train": train}


@pytest.fixture
def offline(cache, monkeypatch):
    """This process reads the cache only (huggingface_hub reads its settings at import: they are set on it)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache["hub"]))
    return cache


def bertkit(args: list, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in a fresh process with HF_HOME and HF_HUB_OFFLINE=1 set, as a user sets them."""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "bertkit.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_predict_and_finetune_from_a_hub_name_offline_record_name_and_commit(cache, tmp_path):
    """`bertkit predict org/name` and `bertkit finetune org/name` run from the HF cache with no network; the run
    config and the model card name the Hub model and its commit."""
    r = bertkit(["predict", "org/tiny-bert", "--text", "hi"], cache["home"], tmp_path)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["text"] == "hi" and row["label"] in ("neg", "pos")

    r = bertkit(["finetune", "org/tiny-bert", "--train", cache["train"], "--out", "run", "--epochs", "1",
                 "--batch-size", "16", "-q"], cache["home"], tmp_path)
    assert r.returncode == 0, r.stderr
    recipe = json.loads((tmp_path / "run" / "finetune_config.json").read_text())
    assert recipe["hub"] == {"model": {"name": "org/tiny-bert", "revision": COMMIT}}
    assert recipe["model"] == str(cache["snapshot"].resolve())
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    front = card.split("---")[1]
    assert "base_model: org/tiny-bert\n" in front and f"base_model_revision: {COMMIT}\n" in front


def test_a_revision_resolves_to_its_snapshot_and_main_to_refs_main(offline):
    assert resolve_model("org/tiny-bert") == offline["snapshot"]
    assert resolve_model(f"org/tiny-bert@{OLD}") == offline["old"]
    assert resolve_model(f"org/tiny-bert@{COMMIT}") == offline["snapshot"]
    assert hub_origin(offline["old"]) == {"name": "org/tiny-bert", "revision": OLD}
    assert hub_origin(offline["home"]) is None


def test_a_local_folder_wins_over_a_hub_name(offline, tmp_path, monkeypatch):
    (tmp_path / "org" / "tiny-bert").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("org/tiny-bert") == Path("org/tiny-bert")


@pytest.mark.parametrize("name, says", [
    ("org/tiny-roberta", "org/tiny-roberta is a roberta model; bertkit reads BERT models"),
    ("org/not-cached", "org/not-cached: no such folder, and it is not in the Hugging Face cache"),
    (f"org/tiny-bert@{'9' * 40}", "not in the Hugging Face cache"),
    ("org/tiny-bert@v2", "HF_HUB_OFFLINE is set"),
])
def test_refusals_offline_are_one_line(offline, tmp_path, capsys, name, says):
    for args in (["predict", name, "--text", "hi"], ["info", name],
                 ["finetune", name, "--train", offline["train"], "--out", tmp_path / "out"]):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bertkit: error: ") and says in err, err
    assert not (tmp_path / "out").exists()


def test_python_pipeline_takes_a_hub_name(offline):
    from bertkit.inference import pipeline
    p = pipeline("org/tiny-bert")
    assert p.labels == ["neg", "pos"] and len(p(["hi"])) == 1


# Online: the Hub's answers, stood in for; nothing may be downloaded before the checks pass


def _http_error(cls, status: int):
    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    return cls("refused", response=response)


@pytest.fixture
def online(cache, monkeypatch, tmp_path):
    """huggingface_hub online, its API answering `answer` (an exception or a model info); a download recorded, not
    run."""
    import huggingface_hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    state = {"downloads": []}
    real = huggingface_hub.snapshot_download  # reading the (empty) cache is real

    def model_info(self, repo_id, revision=None, **kw):
        if isinstance(state["answer"], Exception):
            raise state["answer"]
        return state["answer"]

    def snapshot_download(repo_id, **kw):
        if kw.get("local_files_only"):
            return real(repo_id, **kw)
        state["downloads"].append((repo_id, kw))
        return str(cache["snapshot"])

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return state


def _info(files, model_type="bert"):
    return SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename=f) for f in files],
                           config={"model_type": model_type})


@pytest.mark.parametrize("answer, says", [
    (_info(["config.json", "model.safetensors"], "roberta"), "org/x is a roberta model; bertkit reads BERT models"),
    (_info(["config.json", "tf_model.h5", "flax_model.msgpack", "vocab.txt"]),
     "no PyTorch weights (model.safetensors or pytorch_model.bin) on the Hub, only flax_model.msgpack, tf_model.h5"),
    (_info(["README.md"]), "no config.json on the Hub"),
    (_http_error(RepositoryNotFoundError, 404), "no such model on the Hugging Face Hub (a private one needs HF_TOKEN)"),
    (_http_error(GatedRepoError, 403), "a gated model; accept its terms on huggingface.co and set HF_TOKEN"),
    (_http_error(HfHubHTTPError, 401), "refused access (401); a private model needs HF_TOKEN"),
    (_http_error(RevisionNotFoundError, 404), "no revision"),
    (httpx2.ConnectError("no network"), "the Hugging Face Hub cannot be reached and the model is not in the cache"),
])
def test_refusals_online_are_one_line_and_download_nothing(online, capsys, answer, says):
    online["answer"] = answer
    assert main(["predict", "org/x@v1" if isinstance(answer, RevisionNotFoundError) else "org/x", "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert online["downloads"] == []


def test_online_fetches_one_weights_file_at_the_resolved_commit(online, cache):
    online["answer"] = _info(["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "vocab.txt",
                              "1_Pooling/config.json", "onnx/model.onnx"])
    assert resolve_model("org/x@main") == cache["snapshot"]
    (repo, kw), = online["downloads"]
    assert repo == "org/x" and kw["revision"] == COMMIT  # the commit main named when asked, not the branch
    patterns = kw["allow_patterns"]
    assert "model.safetensors" in patterns and "pytorch_model.bin" not in patterns
    from huggingface_hub.utils import filter_repo_objects
    wanted = set(filter_repo_objects([s.rfilename for s in online["answer"].siblings], allow_patterns=patterns))
    assert wanted == {"config.json", "model.safetensors", "vocab.txt", "1_Pooling/config.json"}


# The fuzz test's command lines (test_reliability), a Hub name in each model slot


from test_reliability import _bases, world  # noqa: E402, F401 - world: the fuzz test's tiny models and files

MODEL_SLOTS = {"convert": [1], "info": [1], "finetune": [1], "distill": [1], "evaluate": [1], "predict": [1],
               "explain": [1], "embed": [1], "similar": [1], "export": [1], "serve": [1], "attack": [1, 7],
               "bias": [1]}


def test_every_verb_refuses_a_non_bert_or_uncached_hub_name_in_one_line(offline, world, tmp_path, capsys):
    bases = _bases(world, tmp_path / "out")
    pretrain = bases["pretrain"][0]
    cases = [(pretrain[:pretrain.index("--preset")] + ["--init", name] + pretrain[pretrain.index("--preset") + 2:],
              name) for name in ("org/tiny-roberta", "org/not-cached")]
    cases += [(bases["distill"][0] + ["--student", name], name) for name in ("org/tiny-roberta", "org/not-cached")]
    for verb, slots in MODEL_SLOTS.items():
        argv = bases[verb][0]
        for slot in slots:
            cases += [(argv[:slot] + [name] + argv[slot + 1:], name) for name in ("org/tiny-roberta", "org/not-cached")]
    failures = []
    for args, name in cases:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        says = "is a roberta model" if "roberta" in name else "not in the Hugging Face cache"
        if code != 2 or err.count("\n") != 1 or name not in err or says not in err:
            failures.append(f"{' '.join(map(str, args))} -> {code}; {err[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "out").exists()


def test_pretrain_init_and_distill_from_hub_names_record_name_and_commit(offline, world, tmp_path, capsys):
    add_to_cache(offline["hub"], "org/world-mlm", world["mlm"], OLD)
    add_to_cache(offline["hub"], "org/world-classifier", world["classifier"], OLD)
    args = ["pretrain", "--data", world["prepared"], "--out", tmp_path / "pt", "--init", "org/world-mlm", "--steps", "2",
            "--batch-size", "4", "--max-len", "16", "--no-nsp", "-q"]
    code, err = main([str(a) for a in args]), capsys.readouterr().err
    assert code == 0, err
    origin = {"name": "org/world-mlm", "revision": OLD}
    assert json.loads((tmp_path / "pt" / "pretrain_config.json").read_text())["hub"] == {"init": origin}
    assert f"base_model: org/world-mlm\nbase_model_revision: {OLD}\n" in (tmp_path / "pt" / "model" / "README.md").read_text()

    args = ["distill", "org/world-classifier", "--train", world["train"], "--dev", world["dev"], "--out", tmp_path / "ds",
            "--epochs", "0.2", "--batch-size", "16", "-q"]
    code, err = main([str(a) for a in args]), capsys.readouterr().err
    assert code == 0, err
    recipe = json.loads((tmp_path / "ds" / "distill_config.json").read_text())
    assert recipe["hub"] == {"teacher": {"name": "org/world-classifier", "revision": OLD}}
    assert "base_model: org/world-classifier\n" in (tmp_path / "ds" / "model" / "README.md").read_text()


def test_serve_names_a_hub_model_as_on_the_hub_not_by_its_commit(offline):
    from bertkit.cli.common import _served
    from bertkit.serve.worker import load_served
    assert _served("org/tiny-bert") == f"tiny-bert={offline['snapshot']}"
    assert _served(f"mine=org/tiny-bert@{OLD}") == f"mine={offline['old']}"
    assert list(load_served([_served("org/tiny-bert")])) == ["tiny-bert"]


# convert and export record where the model came from; the tokenizer verbs take a Hub name and fetch no weights


def test_convert_and_export_from_a_hub_name_record_name_and_commit(offline, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["convert", f"org/tiny-bert@{OLD}", str(tmp_path / "conv")]) == 0, capsys.readouterr().err
    front = (tmp_path / "conv" / "README.md").read_text().split("---")[1]
    assert "base_model: org/tiny-bert\n" in front and f"base_model_revision: {OLD}\n" in front
    assert main(["convert", str(tmp_path / "conv"), str(tmp_path / "local")]) == 0  # a local folder: no Hub origin
    assert "base_model" not in (tmp_path / "local" / "README.md").read_text()

    assert main(["export", "org/tiny-bert", str(tmp_path / "onnx"), "--onnx", "--no-optimize"]) == 0
    meta = json.loads((tmp_path / "onnx" / "bertkit.json").read_text())
    assert meta["base_model"] == {"name": "org/tiny-bert", "revision": COMMIT}
    from bertkit.export import onnx_session
    assert onnx_session(tmp_path / "onnx") is not None  # the export still opens with the extra key
    assert main(["export", str(tmp_path / "local"), str(tmp_path / "onnx-local"), "--onnx", "--no-optimize"]) == 0
    assert "base_model" not in json.loads((tmp_path / "onnx-local" / "bertkit.json").read_text())


def test_tokenizer_verbs_take_a_hub_name_with_only_tokenizer_files(offline, world, tmp_path, capsys):
    """A repo holding a tokenizer and nothing else (no config, no weights) serves `tokenizer encode` and `prepare
    --tokenizer`, which encode exactly as with the local folder."""
    Tokenizer.load(offline["snapshot"]).save(tmp_path / "tok")
    add_to_cache(offline["hub"], "org/tok-only", tmp_path / "tok", OLD)
    assert main(["tokenizer", "encode", "org/tok-only", "good film", "--pair", "dull plot"]) == 0
    via_hub = json.loads(capsys.readouterr().out)
    assert main(["tokenizer", "encode", str(offline["snapshot"]), "good film", "--pair", "dull plot"]) == 0
    assert via_hub == json.loads(capsys.readouterr().out) and len(via_hub["input_ids"]) > 4

    for tokenizer, out in (("org/tok-only", "hub"), (str(tmp_path / "tok"), "local")):
        args = ["prepare", world["corpus"], "-o", tmp_path / out, "--tokenizer", tokenizer, "-q", "--seed", "1"]
        assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    shards = sorted(p.relative_to(tmp_path / "hub") for p in (tmp_path / "hub").rglob("*.npy"))
    assert shards and all((tmp_path / "hub" / s).read_bytes() == (tmp_path / "local" / s).read_bytes() for s in shards)


def test_tokenizer_verbs_refuse_an_uncached_name_in_one_line(offline, world, tmp_path, capsys):
    for args in (["tokenizer", "encode", "org/not-cached", "hi"],
                 ["prepare", world["corpus"], "-o", tmp_path / "out", "--tokenizer", "org/not-cached", "-q"]):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "org/not-cached: no such folder, and it is not in the Hugging Face cache" in err
    assert not (tmp_path / "out").exists()


def test_online_a_tokenizer_fetches_its_files_and_no_weights(online, cache):
    online["answer"] = _info(["config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json",
                              "tokenizer_config.json"], model_type="roberta")  # a tokenizer: model_type is not asked
    assert resolve_tokenizer("org/x") == cache["snapshot"]
    (repo, kw), = online["downloads"]
    assert repo == "org/x" and kw["revision"] == COMMIT and kw["allow_patterns"] == TOKENIZER_FILES
    online["downloads"].clear()
    online["answer"] = _info(["config.json", "model.safetensors"])
    with pytest.raises(BertkitError, match="^org/x: no tokenizer.json or vocab.txt on the Hub$"):
        resolve_tokenizer("org/x")
    assert online["downloads"] == []
