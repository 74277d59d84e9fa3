"""Audits that know what they were made with: an embeddings index refuses a query model other than its own, is
replaced only once a new one is complete, streams and resumes; `bias` refuses an MLM head drawn at random on
load and counts pairs it cannot tell apart as unscorable."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, embeddings, save_model
from bertkit.cli import main
from bertkit.embeddings import embed_file, similar
from bertkit.errors import BertkitError
from bertkit.inference import FillMask
from bertkit.inference.shards import part_name
from bertkit.robust.bias import crows
from bertkit.robust.mlm import load_masked_lm
from test_robust import one_line_error

TEXTS = ["the film was great", "a wonderful story", "really boring plot", "terrible acting and cast",
         "quite a great cast", "the plot was boring", "a story with a great cast", "boring and terrible",
         "the plot was dull", "my mother cooked dinner"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS * 3, vocab_size=120, min_frequency=1, show_progress=False)


def tiny(tok, hidden: int = 16) -> BertConfig:
    return BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_layers=1, num_heads=2,
                      intermediate_size=24, max_position_embeddings=32)


# ---- bias --------------------------------------------------------------------------------------------------

def test_bias_refuses_a_masked_lm_whose_head_is_drawn_at_load(tok, tmp_path, capsys):
    """A Hugging Face BertForMaskedLM folder whose weights hold only the encoder: its MLM head would be random,
    another score each run."""
    torch.manual_seed(0)
    folder = save_model(tmp_path / "enc", build_model(tiny(tok), "encoder"), tok)
    (folder / "bertkit.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(BertkitError, match="masked-LM head .* initialised at random"):
        load_masked_lm(folder, "give a trained one")
    one_line_error(["bias", folder, "--out", tmp_path / "b", "-q"], capsys, "initialised at random")
    assert not (tmp_path / "b" / "bias.json").exists()


def test_pairs_the_model_cannot_tell_apart_are_unscorable_not_passes(tok, tmp_path, capsys):
    torch.manual_seed(0)
    mlm_dir = save_model(tmp_path / "mlm", build_model(tiny(tok), "masked_lm"), tok)
    scored = {"category": "a", "stereo": "the plot was dull", "anti": "the plot was great"}
    pairs = [scored,
             {"category": "a", "stereo": "the plot was Ωψ", "anti": "the plot was Ξλ"},  # both sides [UNK]
             {"category": "b", "stereo": "the plot was great", "anti": "the  plot was great"}]  # tokenize alike
    assert tok.encode("Ωψ", add_special_tokens=False).ids == [tok.unk_id]
    mlm = FillMask.load(mlm_dir)
    result = crows(mlm, pairs, progress=False)
    alone = crows(mlm, [scored], progress=False)
    assert alone["unscorable"] == 0 and alone["stereo_pct"] in (0.0, 100.0)  # a tie of random weights: unlikely
    assert (result["pairs"], result["unscorable"], result["stereo_pct"]) == (3, 2, alone["stereo_pct"])
    assert result["categories"]["b"] == {"pairs": 1, "unscorable": 1, "stereo_pct": None}
    assert [s.get("unscorable") is not None for s in result["scores"]] == [False, True, True]
    # the command line: counted in bias.json and the table
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    assert main(["bias", str(mlm_dir), "--input", str(data), "--out", str(tmp_path / "b"), "-q"]) == 0
    written = json.loads((tmp_path / "b" / "bias.json").read_text())
    assert written["unscorable"] == 2 and written["stereo_pct"] == alone["stereo_pct"]
    assert "| b | 1 | 1 | n/a |" in capsys.readouterr().out
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[1:]))
    one_line_error(["bias", mlm_dir, "--input", data, "--out", tmp_path / "c", "-q"], capsys,
                   "none of the 2 sentence pairs can be scored")


# ---- embeddings index -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tok, tmp_path_factory):
    """Encoders A and B of one width (other seeds), C of another, and a file of the texts."""
    d = tmp_path_factory.mktemp("index")
    out = {}
    for name, seed, hidden in (("A", 0, 16), ("B", 1, 16), ("C", 0, 32)):
        torch.manual_seed(seed)
        out[name] = save_model(d / name, build_model(tiny(tok, hidden), "encoder"), tok)
    out["data"] = d / "texts.csv"
    out["data"].write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(TEXTS)))
    return out


def test_an_index_refuses_a_query_model_other_than_its_own(models, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["embed", str(models["A"]), "--input", str(models["data"]), "--out", str(out), "-q", "--no-tsne"]) == 0
    assert similar(out, [TEXTS[4]], k=1)["results"][0][0]["row"] == 4  # its own model
    shutil.copytree(models["A"], tmp_path / "A-copy")  # the same model elsewhere: the same fingerprint
    r = similar(out, [TEXTS[4]], k=1, model=tmp_path / "A-copy")
    assert r["results"][0][0]["row"] == 4 and r["notes"] == []
    for other in ("B", "C"):  # same width, other weights; another width
        with pytest.raises(BertkitError, match="built by another model"):
            similar(out, [TEXTS[4]], model=models[other])
        one_line_error(["similar", out, "--query", TEXTS[4], "--model", models[other]], capsys,
                       "built by another model")
    moved = tmp_path / "A-retrained"  # the recorded folder now holds other weights (trained again into it)
    shutil.copytree(models["B"], moved)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps(meta | {"model": str(moved)}))
    one_line_error(["similar", out, "--query", TEXTS[4]], capsys, "built by another model")
    pytest.importorskip("fastapi")
    from bertkit.serve.app import load_index
    with pytest.raises(BertkitError, match="built by another model"):  # `bertkit serve --index` loads it so too
        load_index(out, {})
    # an index of the previous version (no fingerprint) loads, with a note; another width is still an error
    (out / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}))
    assert main(["similar", str(out), "--query", TEXTS[4], "--k", "1"]) == 0
    captured = capsys.readouterr()
    assert f"#4  [neg]  {TEXTS[4]}" in captured.out and "cannot be checked" in captured.err
    one_line_error(["similar", out, "--query", TEXTS[4], "--model", models["C"]], capsys,
                   "queries of shape (1, 32) do not match the index's vectors of 16")


def test_a_failed_re_embedding_keeps_the_old_index(models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "emb"
    monkeypatch.setattr(embeddings, "CHUNK_ROWS", 3)
    assert main(["embed", str(models["A"]), "--input", str(models["data"]), "--out", str(out), "-q",
                 "--no-tsne"]) == 0  # (t-SNE takes seconds; the failing plot below is a stub)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    real = embeddings._write_chunk

    def disk_full_at_chunk_2(work, k, *args):
        if k == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(work, k, *args)

    def disk_full_in_the_plot(*args, **kwargs):
        (args[2].parent / "tsne.png").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for where, patch in (("_write_chunk", disk_full_at_chunk_2), ("plot_tsne", disk_full_in_the_plot)):
        with monkeypatch.context() as m:
            m.setattr(embeddings, where, patch)
            one_line_error(["embed", models["B"], "--input", models["data"], "--out", out, "-q"], capsys,
                           "no space left on device; the previous index, if any, is unchanged; free space")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before, where
        assert similar(out, [TEXTS[2]], k=1)["results"][0][0]["row"] == 2  # still queryable, with model A
        assert sorted(p.name for p in tmp_path.iterdir()) == [".emb.partial", "emb"]  # no temporary left
    # space freed: --resume finishes from the chunks already written (all of them: only the assembly is left)
    assert main(["embed", str(models["B"]), "--input", str(models["data"]), "--out", str(out), "-q", "--resume",
                 "--no-tsne"]) == 0
    assert "resumed at row 10" in capsys.readouterr().out  # all 4 chunks of 3 rows (the last of 1) were there
    assert similar(out, [TEXTS[2]], k=1, model=models["B"])["results"][0][0]["row"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_a_killed_embed_resumes_to_the_vectors_of_an_uninterrupted_run(models, tmp_path, monkeypatch):
    common = dict(chunk_rows=3, progress=False, tsne=False)
    reference = embed_file(models["A"], models["data"], tmp_path / "ref", **common)
    out = shutil.copytree(reference, tmp_path / "emb")  # an earlier index there, kept until the new one is whole
    real, seen, kill = embeddings._write_chunk, [], [True]

    def killed_after_chunk_1(work, k, vectors, rows, first):
        real(work, k, vectors, rows, first)
        seen.append((k, first, len(rows)))
        if k == 1 and kill and kill.pop():
            raise KeyboardInterrupt  # as a kill would stop it: after chunk 1 is on disk
    monkeypatch.setattr(embeddings, "_write_chunk", killed_after_chunk_1)
    with pytest.raises(KeyboardInterrupt):
        embed_file(models["B"], models["data"], out, **common)
    partial = tmp_path / ".emb.partial"
    assert sorted(p.name for p in partial.glob("0*")) == [f"{part_name(a, b)}.{s}" for a, b in ((0, 3), (3, 6))
                                                          for s in ("jsonl", "npy")]  # written early
    assert similar(out, [TEXTS[0]], k=1)["results"][0][0]["row"] == 0  # the old index (model A) still answers
    # a resume must read the same way
    with pytest.raises(BertkitError, match="differs in: model .or pooling, layer, max length.; give the same"):
        embed_file(models["A"], models["data"], out, resume=True, **common)
    # the refusal kept the chunks; the run then resumes with its own model
    fresh = embed_file(models["B"], models["data"], tmp_path / "ref-b", **common)  # B, uninterrupted
    seen.clear()
    embed_file(models["B"], models["data"], out, resume=True, **common)
    assert seen == [(2, 6, 3), (3, 9, 1)]  # only the chunks the killed run had not written
    np.testing.assert_array_equal(np.load(out / "vectors.npy"), np.load(fresh / "vectors.npy"))
    assert (out / "index.jsonl").read_text() == (fresh / "index.jsonl").read_text()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["resumed_at_row"] == 6 and meta["rows"] == len(TEXTS) and not partial.exists()
