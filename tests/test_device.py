"""--device and device=: one resolver (bertkit.hardware.resolve_device) for every verb that runs a model, for
pipeline() and Predictor.load(); refusals in one line; CUDA outputs equal CPU ones (those tests skip without a GPU).

The resolver's GPU branches are tested here by making torch *report* GPUs (torch.cuda.is_available and
device_count patched); nothing is computed on a faked device: every such case is a refusal or a resolved name."""

import json

import numpy as np
import pytest
import torch

from bertkit import hardware
from bertkit.cli import _verbs, build_parser
from bertkit.errors import BertkitError
from bertkit.hardware import resolve_device, use_device
from bertkit.inference import Embedder, TextClassifier, pipeline
from test_reliability import _bases, one_line_error, run, world  # noqa: F401 - world is a fixture

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)


def _gpus(monkeypatch, n: int) -> None:
    """torch reports n CUDA devices (for the resolver's rules only: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def _device_verbs() -> list[str]:
    return sorted(name for name, sub in _verbs(build_parser()).items()
                  if any("--device" in a.option_strings for a in sub._actions))


# ---- the resolver ---------------------------------------------------------------------------------------------------

def test_auto_is_the_cpu_without_a_gpu_and_cpu_is_always_the_cpu(monkeypatch):
    _no_gpu(monkeypatch)
    for spec in ("auto", None, "cpu", "CPU", " cpu ", "cpu:0", torch.device("cpu")):
        assert resolve_device(spec) == torch.device("cpu")


def test_auto_picks_cuda_then_mps(monkeypatch):
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine: its own GPU
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: True)
    assert resolve_device("auto") == resolve_device("mps") == torch.device("mps")


def test_a_gpu_index_beyond_the_count_is_one_line(monkeypatch):
    _gpus(monkeypatch, 2)
    with pytest.raises(BertkitError, match=r"^device 'cuda:7': this machine has 2 CUDA devices \(cuda:0..cuda:1\)$"):
        resolve_device("cuda:7")
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun started more processes than there are GPUs
    with pytest.raises(BertkitError, match="has 2 CUDA devices"):
        resolve_device("auto")


def test_missing_devices_and_unknown_names_are_one_line(monkeypatch):
    _no_gpu(monkeypatch)
    build = "is a CPU build" if torch.version.cuda is None else "sees none"
    for spec, says in (("cuda", f"no CUDA device (torch {torch.__version__} {build}"), ("cuda:7", "no CUDA device"),
                       ("mps", "no Apple MPS device here"), ("tpu", "give one of auto, cpu, cuda, cuda:N, mps"),
                       ("cuda:x", "give one of"), ("", "give one of"), ("cpu:1", "give one of")):
        with pytest.raises(BertkitError, match=r"^[^\n]+$") as e:
            resolve_device(spec)
        assert f"device {spec!r}: " in str(e.value) and says in str(e.value)


def test_int8_is_cpu_only(monkeypatch):
    """int8 dynamic quantisation has CPU kernels only: auto means the CPU for it even with a GPU, and an explicit
    GPU is refused (before, the model was quantised and the first forward pass failed inside torch)."""
    _gpus(monkeypatch, 1)
    assert resolve_device("auto", precision="int8") == torch.device("cpu")
    assert resolve_device("cpu", precision="int8") == torch.device("cpu")
    assert resolve_device("cuda", precision="bf16") == torch.device("cuda", 0)
    with pytest.raises(BertkitError, match=r"^device 'cuda': int8 inference runs on the CPU only; use --precision "
                                           r"bf16 on a GPU, or --device cpu$"):
        resolve_device("cuda", precision="int8")


def test_use_device_sets_the_process_default(monkeypatch):
    _gpus(monkeypatch, 1)
    try:
        assert use_device("cpu") == torch.device("cpu")
        assert resolve_device() == torch.device("cpu")  # what every loader without a device= gets
        with pytest.raises(BertkitError):
            use_device("tpu")
        assert resolve_device() == torch.device("cpu")  # a refused spec leaves the default as it was
    finally:
        use_device(None)
    assert resolve_device() == torch.device("cuda", 0)


# ---- the command line -----------------------------------------------------------------------------------------------

def test_every_verb_that_runs_a_model_takes_device():
    assert _device_verbs() == ["attack", "bias", "demo", "distill", "embed", "evaluate", "explain", "finetune",
                               "predict", "pretrain", "serve", "similar"]


@pytest.mark.parametrize("verb", _device_verbs())
def test_a_missing_device_is_one_line_on_every_verb(world, tmp_path, capsys, monkeypatch, verb):  # noqa: F811
    _no_gpu(monkeypatch)
    args, _ = _bases(world, tmp_path / "out")[verb]
    one_line_error(args + ["--device", "cuda"], capsys, "device 'cuda': no CUDA device")
    one_line_error(args + ["--device", "mps"], capsys, "device 'mps': no Apple MPS device")
    one_line_error(args + ["--device", "tpu"], capsys, "device 'tpu': give one of")
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("verb", ["predict", "evaluate", "serve"])
def test_int8_on_a_gpu_is_refused_by_the_verbs(world, tmp_path, capsys, monkeypatch, verb):  # noqa: F811
    _gpus(monkeypatch, 1)
    args, _ = _bases(world, tmp_path / "out")[verb]
    one_line_error(args + ["--precision", "int8", "--device", "cuda"], capsys, "int8 inference runs on the CPU only")


def test_predict_on_cpu_equals_the_default_here(world, capsys):  # noqa: F811
    args, _ = _bases(world, None)["predict"]
    code, default, err = run(args, capsys)
    assert code == 0, err
    code, on_cpu, err = run(args + ["--device", "cpu"], capsys)
    assert code == 0, err
    assert on_cpu == default and default.count("\n") == 20


def test_a_training_run_records_its_device(world, tmp_path, capsys):  # noqa: F811
    args, _ = _bases(world, tmp_path / "out")["finetune"]
    code, _, err = run(args + ["--device", "cpu"], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert saved["device"] == "cpu" and saved["processes"] == 1


def test_serve_on_cpu_answers_as_pipeline_and_says_its_device(world):  # noqa: F811
    pytest.importorskip("fastapi")
    import httpx
    from test_serve_fuzz import start
    proc, url = start([str(world["classifier"]), "--device", "cpu"])
    try:
        said = proc.stderr.readline().decode()
        answer = httpx.post(url + "/predict", json={"inputs": ["good film", "a dull plot"]}, timeout=10).json()
    finally:
        proc.kill()
        proc.wait()
    assert said.startswith("serving classifier (text-classification) at http://127.0.0.1:") and " on cpu " in said
    assert answer["predictions"] == pipeline(world["classifier"], device="cpu")(["good film", "a dull plot"])


# ---- Python ---------------------------------------------------------------------------------------------------------

def test_pipeline_and_load_take_a_device(world, monkeypatch):  # noqa: F811
    texts = ["good film", "a dull plot was poor"]
    default = pipeline(world["classifier"])(texts)
    assert pipeline(world["classifier"], device="cpu")(texts) == default
    assert TextClassifier.load(world["classifier"], device=torch.device("cpu"))(texts) == default
    clf = pipeline(world["classifier"], device="cpu", precision="int8")
    assert next(clf.model.parameters(), torch.zeros(1)).device.type == "cpu"
    np.testing.assert_array_equal(Embedder.load(world["classifier"], device="cpu").encode(texts),
                                  pipeline(world["classifier"], "feature-extraction").encode(texts))
    _no_gpu(monkeypatch)
    with pytest.raises(BertkitError, match=r"^device 'cuda': no CUDA device"):
        pipeline(world["classifier"], device="cuda")


# ---- on a GPU: the same numbers as on the CPU -----------------------------------------------------------------------

@pytest.fixture
def exact_fp32():
    """No TF32 in matmuls, so fp32 on the GPU means fp32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@GPU
def test_predict_and_embed_on_cuda_equal_cpu(world, exact_fp32):  # noqa: F811
    texts = ["good film", "a dull plot was poor", "the story 3"]
    on_cpu, on_gpu = pipeline(world["classifier"], device="cpu"), pipeline(world["classifier"], device="cuda")
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    for a, b in zip(on_cpu(texts), on_gpu(texts)):
        assert a["label"] == b["label"]
        torch.testing.assert_close(a["score"], b["score"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(Embedder.load(world["classifier"], device="cuda").encode(texts)),
                               torch.from_numpy(Embedder.load(world["classifier"], device="cpu").encode(texts)),
                               atol=1e-5, rtol=1e-4)


@GPU
def test_a_finetuning_step_on_cuda_equals_cpu(world, tmp_path, capsys, exact_fp32):  # noqa: F811
    """One optimiser step from the same weights on the same batch, without dropout (its masks come from each
    device's own generator): the same weights after it within fp32 tolerance."""
    from bertkit import load_model, save_model
    from bertkit.checkpoint import read_weights, weights_file
    loaded = load_model(world["encoder"])
    loaded.model.config.hidden_dropout = loaded.model.config.attention_dropout = 0.0
    encoder = save_model(tmp_path / "encoder", loaded.model, loaded.tokenizer)
    weights = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        code, _, err = run(["finetune", encoder, "--train", world["train"], "--dev", world["dev"], "--out", out,
                            "--epochs", "0.2", "--batch-size", "16", "--eval-every", "1000", "-q", "--device",
                            device], capsys)
        assert code == 0, err
        assert json.loads((out / "train_config.json").read_text())["device"].startswith(device)
        weights[device] = read_weights(weights_file(out / "model"))
    assert weights["cpu"].keys() == weights["cuda"].keys()
    for name in weights["cpu"]:
        torch.testing.assert_close(weights["cuda"][name], weights["cpu"][name], atol=1e-5, rtol=1e-4)
