"""Model directories: bitwise round trip, atomic replacement, and one-line errors for every bad input."""

import json

import pytest
import torch
from safetensors.torch import save_file

from bertkit import BertkitError, Tokenizer, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.convert import export_hf

CORPUS = ["the cat sat on the mat", "a dog and a log", "bert needs words"] * 20


@pytest.fixture
def saved(tmp_path, tiny_config):
    torch.manual_seed(0)
    tok = Tokenizer.train(CORPUS, vocab_size=60, min_frequency=1, show_progress=False)
    config = tiny_config.replace(vocab_size=tok.vocab_size)
    model = build_model(config, "sequence_classification", 3)
    save_model(tmp_path / "m", model, tok, labels=["a", "b", "c"])
    return tmp_path / "m", model, tok


def test_round_trip_is_bitwise(saved):
    folder, model, tok = saved
    loaded = load_model(folder)
    assert loaded.labels == ["a", "b", "c"] and loaded.model.task == "sequence_classification"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    assert loaded.tokenizer.vocab() == tok.vocab()
    assert {p.name for p in folder.iterdir()} == {
        "config.json", "model.safetensors", "labels.json", "tokenizer.json", "vocab.txt",
        "tokenizer_config.json", "special_tokens_map.json"}


def test_saving_over_an_existing_directory_replaces_it_whole(saved, tiny_config):
    folder, model, tok = saved
    (folder / "stale.txt").write_text("old")
    save_model(folder, model, tok, labels=["x", "y", "z"])
    assert not (folder / "stale.txt").exists()
    assert load_model(folder).labels == ["x", "y", "z"]
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_a_failed_save_leaves_the_old_directory(saved, monkeypatch):
    folder, model, tok = saved
    import bertkit.checkpoint as ck

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck, "save_file", broken)
    with pytest.raises(OSError):
        save_model(folder, model, tok, labels=["p", "q", "r"])
    assert load_model(folder).labels == ["a", "b", "c"]
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def _cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_missing_directory_and_files(tmp_path, saved, capsys):
    folder, _, _ = saved
    assert "no such model directory" in _cli_error(capsys, "info", str(tmp_path / "nowhere"))
    (folder / "model.safetensors").unlink()
    assert "model.safetensors: file not found" in _cli_error(capsys, "info", str(folder))
    (folder / "config.json").unlink()
    assert "no config.json" in _cli_error(capsys, "info", str(folder))


def test_corrupt_weights(saved, capsys):
    folder, _, _ = saved
    (folder / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    assert "corrupt or not a safetensors file" in _cli_error(capsys, "info", str(folder))
    (folder / "config.json").write_text("{broken")
    assert "not valid json" in _cli_error(capsys, "info", str(folder))


def test_inconsistent_config(saved, capsys):
    folder, _, _ = saved
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["num_heads"] = 5  # 32 hidden does not split into 5 heads
    (folder / "config.json").write_text(json.dumps(meta))
    assert "not divisible by num_heads" in _cli_error(capsys, "info", str(folder))
    meta["model"]["num_heads"] = 4
    meta["model"]["intermediate_size"] = 64  # the weights say 37
    (folder / "config.json").write_text(json.dumps(meta))
    assert "has shape" in _cli_error(capsys, "info", str(folder))
    meta["model"]["intermediate_size"] = 37
    meta["model"]["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(meta))
    assert "missing" in _cli_error(capsys, "info", str(folder))


def test_vocab_model_size_mismatch(saved, tmp_path, capsys):
    folder, model, _ = saved
    bigger = Tokenizer.train(CORPUS + ["zebra quagga okapi xylophone"] * 5, vocab_size=100, min_frequency=1,
                             show_progress=False)
    assert bigger.vocab_size > model.config.vocab_size
    bigger.save(folder)
    assert "tokenizer has" in _cli_error(capsys, "info", str(folder))
    with pytest.raises(BertkitError, match="must be trained together"):
        save_model(tmp_path / "other", model, bigger)


def test_hf_folder_errors(tmp_path, tiny_config, capsys):
    model = build_model(tiny_config, "encoder")
    export_hf(tmp_path / "hf", model)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg | {"position_embedding_type": "relative_key"}))
    assert "position_embedding_type" in _cli_error(capsys, "convert", str(tmp_path / "hf"), str(tmp_path / "o"),
                                                   "--to", "bertkit")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "hf" / "model.safetensors").unlink()
    assert "no model.safetensors or pytorch_model.bin" in _cli_error(
        capsys, "convert", str(tmp_path / "hf"), str(tmp_path / "o"), "--to", "bertkit")
    # encoder weights missing entirely: refused, not silently initialised
    save_file({"pooler.dense.weight": torch.zeros(32, 32)}, str(tmp_path / "hf" / "model.safetensors"))
    assert "lacks encoder weights" in _cli_error(capsys, "convert", str(tmp_path / "hf"), str(tmp_path / "o"),
                                                 "--to", "bertkit")
    assert not (tmp_path / "o").exists()


def test_pytorch_bin_is_read_with_weights_only(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config, "question_answering")
    export_hf(tmp_path / "hf", model)
    from safetensors.torch import load_file
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "model.safetensors").unlink()
    loaded = load_model(tmp_path / "hf")
    assert loaded.model.task == "question_answering"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    torch.save({"evil": object()}, tmp_path / "hf" / "pytorch_model.bin")  # not plain tensors: refused
    with pytest.raises(BertkitError, match="cannot read weights"):
        load_model(tmp_path / "hf")


def test_a_new_head_on_a_saved_encoder(saved, capsys):
    folder, model, _ = saved
    loaded = load_model(folder, task="token_classification", num_labels=5)
    assert loaded.model.num_labels == 5 and loaded.labels is None
    assert any("freshly initialised: classifier" in n for n in loaded.notes)
    assert any("bert.pooler" in n and "not used" in n for n in loaded.notes)
    for k, v in loaded.model.bert.state_dict().items():
        assert torch.equal(v, model.bert.state_dict()[k])
    wider = load_model(folder, num_labels=4)  # same task, more labels: the classifier starts afresh
    assert wider.model.classifier.weight.shape[0] == 4
    assert any("classifier" in n for n in wider.notes)
    assert torch.equal(wider.model.bert.pooler.weight, model.bert.pooler.weight)
