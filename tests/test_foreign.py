"""Folders bertkit did not write give the numbers their own library gives, or a one-line refusal: every BERT
architecture transformers has, masked LMs with an untied decoder, sentence-transformers modules, and tokenizer
settings on which tokenizer.json and tokenizer_config.json disagree."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from bertkit import BertConfig, Tokenizer, load_model
from bertkit.cli import main
from bertkit.convert import ARCHITECTURES, UNSUPPORTED, config_to_hf
from bertkit.errors import BertkitError
from bertkit.inference import pipeline
from conftest import random_batch

WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "the", "a", "was", "and", "really"]
TEXTS = ["the film was great", "a dull plot", "the actor was really good and the story was great", "bad"]
CONFIG = BertConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24,
                    max_position_embeddings=32)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([" ".join(WORDS)] * 20, vocab_size=60, min_frequency=1, show_progress=False)


def hf_folder(path, arch: str, tok: Tokenizer | None = None, seed: int = 0, **config):
    """A transformers model of class `arch` with random weights (LayerNorms and biases too), saved with the tokenizer."""
    torch.manual_seed(seed)
    hf = config_to_hf(CONFIG, "encoder") | {"architectures": [arch], "num_labels": 2 if "Answering" in arch else 3}
    hf |= config
    model = getattr(transformers, arch)(transformers.BertConfig(**hf)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(path)
    if tok is not None:
        tok.save(path)
    return model


def logits(out):
    """transformers' outputs in bertkit's order (one tensor, or a tuple for pre-training and QA)."""
    for names in (("prediction_logits", "seq_relationship_logits"), ("start_logits", "end_logits"),
                  ("last_hidden_state", "pooler_output"), ("logits",)):
        if hasattr(out, names[0]) and getattr(out, names[0]) is not None:
            return [getattr(out, n) for n in names]
    raise AssertionError(out)


@pytest.mark.parametrize("arch", list(ARCHITECTURES) + list(UNSUPPORTED))
def test_every_bert_architecture_is_read_equal_or_refused(tmp_path, arch):
    ids, mask, types = random_batch(CONFIG.vocab_size, T=10)
    if arch in UNSUPPORTED:
        hf_folder(tmp_path, arch)
        with pytest.raises(BertkitError, match=f"architecture {arch} is not supported") as e:
            load_model(tmp_path)
        assert "\n" not in str(e.value)
        # asking for a head of bertkit's keeps the encoder: the refusal is only for reading it as it is
        assert load_model(tmp_path, task="encoder").model.task == "encoder"
        return
    theirs = hf_folder(tmp_path, arch)
    ours = load_model(tmp_path).model
    assert ours.task == ARCHITECTURES[arch]
    with torch.no_grad():
        a = ours(ids, mask, types)
        a = [a.hidden, a.pooled] if ours.task == "encoder" else list(a) if isinstance(a, tuple) else [a]
        b = logits(theirs(input_ids=ids, attention_mask=mask, token_type_ids=types))
    real = mask.bool()
    for x, y in zip(a, b, strict=True):
        if x.dim() >= 2 and x.shape[:2] == real.shape:
            x, y = x[real], y[real]
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_an_unknown_architecture_is_refused_by_name(tmp_path, tok):
    hf_folder(tmp_path, "BertModel", tok)
    hf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(hf | {"architectures": ["BertForSomethingNew"]}))
    with pytest.raises(BertkitError, match="architecture BertForSomethingNew is not supported"):
        pipeline(tmp_path)


@pytest.mark.parametrize("how", ["config", "weights"])
def test_an_untied_decoder_is_kept_and_written_back(tmp_path, tok, how):
    """tie_word_embeddings false, or (transformers' rule) a decoder in the weights unlike the embeddings: the
    decoder is its own; fill-mask logits equal transformers', and convert writes the decoder back."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    theirs = hf_folder(src, "BertForMaskedLM", tok, tie_word_embeddings=False)
    assert theirs.cls.predictions.decoder.weight is not theirs.bert.embeddings.word_embeddings.weight
    if how == "weights":  # config says tied (the default) but the file's decoder differs
        hf = json.loads((src / "config.json").read_text())
        hf.pop("tie_word_embeddings")
        (src / "config.json").write_text(json.dumps(hf))
    ids, mask, types = random_batch(CONFIG.vocab_size, T=10)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        ours = load_model(src).model
        assert not ours.config.tie_word_embeddings
        torch.testing.assert_close(ours(ids, mask, types)[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-4)
    main(["convert", str(src), str(dst)])
    saved = load_file(dst / "model.safetensors")
    torch.testing.assert_close(saved["cls.predictions.decoder.weight"], theirs.cls.predictions.decoder.weight)
    assert json.loads((dst / "config.json").read_text())["tie_word_embeddings"] is False
    with torch.no_grad():
        again = transformers.BertForMaskedLM.from_pretrained(dst).eval()
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, expected)
        round_trip = load_model(dst).model
        for k, v in ours.state_dict().items():
            assert torch.equal(round_trip.state_dict()[k], v), k


def test_a_tied_decoder_stays_tied(tmp_path, tok):
    hf_folder(tmp_path, "BertForMaskedLM", tok)
    model = load_model(tmp_path).model
    assert model.config.tie_word_embeddings and model.mlm.decoder is None
