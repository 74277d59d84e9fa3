"""Model directories: the layout on disk, bitwise round trip, bertkit's old format, atomic replacement, the model
card, and one-line errors for every bad input."""

import json

import pytest
import torch
from safetensors.torch import save_file

from bertkit import BertkitError, Tokenizer, build_model, load_model, save_model, write_model_card
from bertkit.checkpoint import OLD_FORMAT_NOTE, convert_model
from bertkit.cli import main
from bertkit.model.heads import TASKS
from conftest import random_batch
from test_parity import outputs_bertkit

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
    assert loaded.notes == [] and loaded.reading == {}
    assert {p.name for p in folder.iterdir()} == {
        "config.json", "model.safetensors", "bertkit.json", "README.md", "tokenizer.json", "vocab.txt",
        "tokenizer_config.json", "special_tokens_map.json"}


def test_the_layout_is_hugging_face_s_plus_bertkit_json(saved):
    folder, model, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"} and config["label2id"] == {"a": 0, "b": 1, "c": 2}
    assert config["problem_type"] == "single_label_classification" and "format" not in config
    from safetensors.torch import load_file
    names = set(load_file(str(folder / "model.safetensors")))
    assert "bert.encoder.layer.0.attention.self.query.weight" in names and not any("qkv" in n for n in names)
    assert json.loads((folder / "bertkit.json").read_text()) == {
        "format": "bertkit-model/2", "task": "sequence_classification",
        "bertkit": {"attention_backend": "sdpa", "unpad": False}, "reading": {}}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_head_round_trips_exactly_with_its_settings(tmp_path, tiny_config, task):
    """config (unpad, attention backend, every field off its default), weights, outputs and reading settings."""
    torch.manual_seed(5)
    config = tiny_config.replace(unpad=True, attention_backend="eager", hidden_act="gelu_tanh", hidden_dropout=0.2,
                                 attention_dropout=0.05, classifier_dropout=0.3, layer_norm_eps=1e-7,
                                 initializer_range=0.03, pad_token_id=1, type_vocab_size=3)
    problem = "multi_label" if task == "sequence_classification" else "single_label"
    model = build_model(config, task, 3, problem).eval()
    reading = {"max_length": 48, "window_stride": 16, "window_pool": "max", "pooling": "mean", "normalize": True}
    save_model(tmp_path / "m", model, reading=reading)
    loaded = load_model(tmp_path / "m")
    assert loaded.model.config == config and loaded.model.task == task and loaded.reading == reading
    assert getattr(loaded.model, "problem_type", problem) == problem
    assert loaded.model.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    ids, mask, types = random_batch(config.vocab_size)
    with torch.no_grad():
        for x, y in zip(outputs_bertkit(model, ids, mask, types), outputs_bertkit(loaded.model, ids, mask, types)):
            assert torch.equal(x, y)


def _write_old_format(folder, model, tok=None, labels=None):
    """A bertkit-model/1 directory as bertkit 0.1 wrote it: its own config.json, fused qkv names, labels.json."""
    folder.mkdir(parents=True)
    meta = {"format": "bertkit-model/1", "task": model.task, "model": model.config.to_dict()}
    if model.task in ("sequence_classification", "token_classification"):
        meta["num_labels"] = model.num_labels
    if model.task == "sequence_classification":
        meta["problem_type"] = model.problem_type
    (folder / "config.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    if tok is not None:
        tok.save(folder)
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps({"labels": labels}))


def test_old_format_still_loads_with_a_note_and_converts(tmp_path, tiny_config, capsys):
    torch.manual_seed(6)
    model = build_model(tiny_config.replace(unpad=True), "token_classification", 3).eval()
    assert any("attn.qkv" in k for k in model.state_dict())
    _write_old_format(tmp_path / "old", model, labels=["O", "B-X", "I-X"])
    loaded = load_model(tmp_path / "old")
    assert loaded.labels == ["O", "B-X", "I-X"] and loaded.model.config == model.config
    assert loaded.notes == [OLD_FORMAT_NOTE] and "later release" in OLD_FORMAT_NOTE and loaded.reading == {}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    assert any(OLD_FORMAT_NOTE in n for n in load_model(tmp_path / "old", num_labels=5).notes)
    assert main(["convert", str(tmp_path / "old"), str(tmp_path / "new"), "--to", "bertkit"]) == 0
    assert "old format" not in capsys.readouterr().out
    new = load_model(tmp_path / "new")
    assert new.notes == [] and new.labels == ["O", "B-X", "I-X"] and new.model.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(new.model.state_dict()[k], v)


def test_convert_changes_the_head(saved, tmp_path):
    folder, model, _ = saved
    loaded = convert_model(folder, tmp_path / "qa", task="question_answering")
    assert any("freshly initialised: qa" in n for n in loaded.notes)
    back = load_model(tmp_path / "qa")
    assert back.model.task == "question_answering" and back.notes == []
    assert torch.equal(back.model.bert.embeddings.word.weight, model.bert.embeddings.word.weight)
    with pytest.raises(BertkitError, match="same directory"):
        convert_model(folder, folder)


def test_model_card(saved):
    folder, _, _ = saved
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: bertkit" in front and "pipeline_tag: text-classification" in front and "- bertkit" in front
    assert "| 2 | c |" in card and "AutoModelForSequenceClassification.from_pretrained" in card
    assert "bertkit predict" in card and "from bertkit import load_model" in card
    # a recipe adds what it knows later; labels (and reading settings) still come from the folder
    write_model_card(folder, task="sequence_classification", data={"train": "data/train.csv"},
                     metrics={"test": {"accuracy": 0.875, "confusion_matrix": [[1, 2], [3, 4]]}, "epochs": 3})
    card = (folder / "README.md").read_text()
    assert "| 2 | c |" in card and "| test | accuracy | 0.8750 |" in card
    assert "- train: `train.csv`" in card and "data/" not in card  # a file name travels, a local folder does not
    assert "|  | epochs | 3 |" in card and "confusion_matrix" not in card
    assert load_model(folder).labels == ["a", "b", "c"]  # the card is not read back


@pytest.mark.parametrize("task, tag", [("encoder", "feature-extraction"), ("masked_lm", "fill-mask"),
                                       ("pretraining", "fill-mask"), ("token_classification", "token-classification"),
                                       ("question_answering", "question-answering")])
def test_model_card_pipeline_tags(tmp_path, tiny_config, task, tag):
    save_model(tmp_path / "m", build_model(tiny_config, task, 2), reading={"max_length": 32})
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"pipeline_tag: {tag}" in card and "| max_length | 32 |" in card


def test_bertkit_json_errors(saved, capsys):
    folder, _, _ = saved
    meta = json.loads((folder / "bertkit.json").read_text())
    (folder / "bertkit.json").write_text(json.dumps(meta | {"format": "bertkit-model/9"}))
    assert "this bertkit reads bertkit-model/2" in _cli_error(capsys, "info", str(folder))
    (folder / "bertkit.json").write_text(json.dumps(meta | {"task": "encoder"}))
    assert "holds a BertForSequenceClassification" in _cli_error(capsys, "info", str(folder))
    (folder / "bertkit.json").write_text(json.dumps(meta | {"bertkit": {"unpad": True, "hidden_size": 8}}))
    assert "unknown bertkit field(s) hidden_size" in _cli_error(capsys, "info", str(folder))
    (folder / "bertkit.json").write_text(json.dumps(meta | {"bertkit": {"unpad": "yes"}}))
    assert "unpad must be true or false" in _cli_error(capsys, "info", str(folder))


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
    meta["num_attention_heads"] = 5  # 32 hidden does not split into 5 heads
    (folder / "config.json").write_text(json.dumps(meta))
    assert "not divisible by num_heads" in _cli_error(capsys, "info", str(folder))
    meta["num_attention_heads"] = 4
    meta["intermediate_size"] = 64  # the weights say 37
    (folder / "config.json").write_text(json.dumps(meta))
    assert "has shape" in _cli_error(capsys, "info", str(folder))
    meta["intermediate_size"] = 37
    meta["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(meta))
    assert "missing" in _cli_error(capsys, "info", str(folder))
    meta["num_hidden_layers"] = 1
    (folder / "config.json").write_text(json.dumps(meta))
    assert "unexpected weight" in _cli_error(capsys, "info", str(folder))
    meta["num_hidden_layers"] = 2
    meta["layer_norm_eps"] = -1.0  # named as config.json spells it
    (folder / "config.json").write_text(json.dumps(meta))
    assert "config.json: layer_norm_eps must be" in _cli_error(capsys, "info", str(folder))


def test_vocab_model_size_mismatch(saved, tmp_path, capsys):
    folder, model, _ = saved
    bigger = Tokenizer.train(CORPUS + ["zebra quagga okapi xylophone"] * 5, vocab_size=100, min_frequency=1,
                             show_progress=False)
    assert bigger.vocab_size > model.config.vocab_size
    bigger.save(folder)
    assert "tokenizer has" in _cli_error(capsys, "info", str(folder))
    with pytest.raises(BertkitError, match="must be trained together"):
        save_model(tmp_path / "other", model, bigger)


def _plain_hf_folder(folder, model):
    """A Hugging Face folder as transformers (not bertkit) would write it: no bertkit.json."""
    save_model(folder, model)
    (folder / "bertkit.json").unlink()


def test_hf_folder_errors(tmp_path, tiny_config, capsys):
    model = build_model(tiny_config, "encoder")
    _plain_hf_folder(tmp_path / "hf", model)
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
    _plain_hf_folder(tmp_path / "hf", model)
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
    assert any("pooler" in n and "not used" in n for n in loaded.notes)
    for k, v in loaded.model.bert.state_dict().items():
        assert torch.equal(v, model.bert.state_dict()[k])
    wider = load_model(folder, num_labels=4)  # same task, more labels: the classifier starts afresh
    assert wider.model.classifier.weight.shape[0] == 4
    assert any("classifier" in n for n in wider.notes)
    assert torch.equal(wider.model.bert.pooler.weight, model.bert.pooler.weight)
