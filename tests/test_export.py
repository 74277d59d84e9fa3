"""ONNX export: ONNX Runtime gives bertkit's outputs (fp32 within 1e-4; int8 close), for every head."""

import json

import numpy as np
import pytest
import torch

from bertkit import BertkitError, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.export import export_onnx, onnx_session
from bertkit.heads import HEADS
from conftest import random_batch

pytest.importorskip("onnxruntime")


def _reference(model, ids, mask, types):
    with torch.no_grad():
        out = model(ids, mask, types)
    if model.task == "encoder":
        return [out.hidden, out.pooled]
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("task", list(HEADS))
def test_onnx_runtime_matches_bertkit(tmp_path, tiny_config, task):
    torch.manual_seed(0)
    model = build_model(tiny_config, task, 3).eval()
    save_model(tmp_path / "m", model)
    export_onnx(tmp_path / "m", tmp_path / "onnx", int8=task == "sequence_classification")
    ids, mask, types = random_batch(tiny_config.vocab_size, B=4, T=12)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    real = mask.bool()
    for int8 in ([False, True] if task == "sequence_classification" else [False]):
        outs = onnx_session(tmp_path / "onnx", int8).run(None, feeds)
        assert len(outs) == len(HEADS[task].outputs)
        for got, want in zip(outs, _reference(model, ids, mask, types)):
            got = torch.from_numpy(got)
            assert got.shape == want.shape
            if got.dim() >= 2 and got.shape[:2] == real.shape:  # per-token outputs: padding positions feed nothing
                got, want = got[real], want[real]
            diff = float((got - want).abs().max())
            assert diff <= (0.05 if int8 else 1e-4), (task, int8, diff)
    meta = json.loads((tmp_path / "onnx" / "bertkit.json").read_text())
    assert meta["task"] == task and meta["onnx"]["outputs"] == list(HEADS[task].outputs) and meta["format"] == "bertkit-onnx/1"
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["model_type"] == "bert"


@pytest.mark.parametrize("task", ["encoder", "sequence_classification"])
def test_onnx_runtime_fuses_attention(tmp_path, tiny_config, task):
    """The optimised graph holds onnxruntime's fused Attention node in every layer (but the [CLS]-only last layer
    of a classifier), and still matches bertkit on a batch without padding."""
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = build_model(tiny_config, task, 3).eval()
    save_model(tmp_path / "m", model)
    export_onnx(tmp_path / "m", tmp_path / "onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.node]
    layers = tiny_config.num_layers
    assert ops.count("Attention") == (layers - 1 if task == "sequence_classification" else layers), ops
    ids, _, types = random_batch(tiny_config.vocab_size, B=3, T=9)
    mask = torch.ones_like(ids)
    got = onnx_session(tmp_path / "onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                                      "token_type_ids": types.numpy()})
    for g, w in zip(got, _reference(model, ids, mask, types)):
        assert float((torch.from_numpy(g) - w).abs().max()) <= 1e-4


def test_export_keeps_tokenizer_and_labels_and_other_lengths_work(tmp_path, tiny_config):
    from bertkit import Tokenizer
    tok = Tokenizer.train(["the cat sat on the mat", "a dog and a log"] * 20, vocab_size=60, min_frequency=1,
                          show_progress=False)
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(vocab_size=tok.vocab_size), "sequence_classification", 2).eval()
    save_model(tmp_path / "m", model, tok, labels=["neg", "pos"])
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "onnx"), "--onnx"]) == 0
    loaded = load_model(tmp_path / "m")
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    session = onnx_session(tmp_path / "onnx")
    batch = tok.encode_batch(["the cat", "a dog and a log sat on the mat"], max_length=32)
    feeds = {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = loaded.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_export_errors_are_one_line(tmp_path, capsys, tiny_config):
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "o"), "--onnx"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(BertkitError, match="no such file"):
        onnx_session(tmp_path)  # no model.onnx there


def test_the_export_folder_is_what_hugging_face_onnx_tools_open(tmp_path, tiny_config):
    """optimum's ORTModelFor* reads config.json with transformers and feeds the graph transformers' input names: the
    export's config.json is Hugging Face's (labels, problem type), its inputs are named as transformers names them,
    and the tokenizer transformers builds from the folder gives inputs on which the graph matches bertkit. (optimum
    itself is not installable beside transformers 5; when it is, ORTModelForSequenceClassification is tried too.)"""
    transformers = pytest.importorskip("transformers")
    from bertkit import Tokenizer
    tok = Tokenizer.train(["the cat sat on the mat", "a dog and a log"] * 20, vocab_size=60, min_frequency=1,
                          show_progress=False)
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(vocab_size=tok.vocab_size, unpad=True), "sequence_classification", 3,
                        "multi_label").eval()
    save_model(tmp_path / "m", model, tok, labels=["cat", "dog", "log"], reading={"max_length": 32})
    export_onnx(tmp_path / "m", tmp_path / "onnx")
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "onnx"))
    assert config.model_type == "bert" and config.problem_type == "multi_label_classification"
    assert config.id2label == {0: "cat", 1: "dog", 2: "log"}
    meta = json.loads((tmp_path / "onnx" / "bertkit.json").read_text())
    assert meta["bertkit"] == {"attention_backend": "sdpa", "unpad": True} and meta["reading"] == {"max_length": 32}
    session = onnx_session(tmp_path / "onnx")
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "onnx"))
    enc = hf_tok(["the cat", "a dog and a log sat"], ["on the mat", "the cat"], padding=True, return_tensors="np")
    got = session.run(None, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    try:
        from optimum.onnxruntime import ORTModelForSequenceClassification
    except Exception:  # noqa: BLE001 - missing, or broken against this transformers
        return
    ort_model = ORTModelForSequenceClassification.from_pretrained(str(tmp_path / "onnx"))
    np.testing.assert_allclose(ort_model(**hf_tok(["the cat", "a dog and a log sat"], ["on the mat", "the cat"],
                                                  padding=True, return_tensors="pt")).logits.numpy(),
                               want, atol=1e-4, rtol=0)
