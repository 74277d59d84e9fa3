"""Folders bertkit did not write give the numbers their own library gives, or a one-line refusal: every BERT
architecture transformers has, masked LMs with an untied decoder, sentence-transformers modules, and tokenizer
settings on which tokenizer.json and tokenizer_config.json disagree."""

import json

import numpy as np
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
    """A transformers model of class `arch` with random weights (LayerNorms and biases too), saved with `tok`."""
    torch.manual_seed(seed)
    hf = config_to_hf(CONFIG, "encoder") | {"architectures": [arch], "num_labels": 2 if "Answering" in arch else 3}
    hf["vocab_size"] = max(hf["vocab_size"], tok.vocab_size if tok else 0, config.pop("vocab_size", 0))
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


# ---- sentence-transformers folders ------------------------------------------------------------------------

ST_TEXTS = ["the film was great", "a dull plot", "the actor was really good and the story was great and the "
            "plot was good and the film was really great", "bad"]


def st_folder(path, tok, pooling="mean", dense=None, normalize=True, max_seq_length=12, pytorch_bin=False):
    """A sentence-transformers model on a tiny random BERT, saved by sentence-transformers itself: Transformer,
    Pooling(pooling), optional Dense(s) (out_features, activation, residual), optional Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    hf_folder(path / "hf", "BertModel", tok)
    mods = [modules.Transformer(str(path / "hf"), max_seq_length=max_seq_length)]
    mods.append(modules.Pooling(CONFIG.hidden_size, pooling_mode=pooling))
    width = mods[-1].get_embedding_dimension()
    for out, act, residual in dense or []:
        torch.manual_seed(out)
        mods.append(modules.Dense(width, out, activation_function=act, use_residual=residual))
        width = out
    if normalize:
        mods.append(modules.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(path / "st"), safe_serialization=not pytorch_bin)
    return SentenceTransformer(str(path / "st"), device="cpu")


POOLING_CASES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("max", "cls"),
                 ("mean", "weightedmean", "lasttoken")]


@pytest.mark.parametrize("pooling", POOLING_CASES, ids=lambda p: "+".join(p) if isinstance(p, tuple) else p)
def test_sentence_transformers_pooling_modes_equal_theirs(tmp_path, tok, pooling):
    theirs = st_folder(tmp_path, tok, pooling, normalize=pooling == "mean")
    ours = pipeline(tmp_path / "st")
    assert ours.reading.max_length == 12  # max_seq_length, which truncates the long text
    expected = theirs.encode(ST_TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(torch.from_numpy(ours.encode(ST_TEXTS)), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dense", [[(8, torch.nn.Tanh(), False)],  # LaBSE-style
                                   [(24, torch.nn.GELU(), False), (24, torch.nn.Identity(), True),
                                    (8, torch.nn.ReLU(), True)]],
                         ids=["labse", "stacked-residual"])
@pytest.mark.parametrize("pytorch_bin", [False, True])
def test_sentence_transformers_dense_modules_equal_theirs(tmp_path, tok, dense, pytorch_bin, capsys):
    theirs = st_folder(tmp_path, tok, ("cls", "mean"), dense=dense, pytorch_bin=pytorch_bin)
    expected = theirs.encode(ST_TEXTS, convert_to_tensor=True)
    assert expected.shape == (4, 8)
    torch.testing.assert_close(torch.from_numpy(pipeline(tmp_path / "st").encode(ST_TEXTS)), expected,
                               atol=1e-5, rtol=1e-4)
    # and through the command line: `bertkit embed` writes the same vectors
    (tmp_path / "in.txt").write_text("\n".join(ST_TEXTS) + "\n")
    assert main(["embed", str(tmp_path / "st"), "--input", str(tmp_path / "in.txt"), "--out",
                 str(tmp_path / "index"), "--quiet"]) == 0
    vectors = np.load(tmp_path / "index" / "vectors.npy")
    torch.testing.assert_close(torch.from_numpy(vectors), expected, atol=1e-5, rtol=1e-4)


def test_sentence_transformers_legacy_pooling_keys(tmp_path, tok):
    """Folders saved by older sentence-transformers: pooling_mode_* booleans, max_seq_length in
    sentence_bert_config.json; concatenated in the legacy order whatever the keys' order."""
    theirs = st_folder(tmp_path, tok, ("cls", "max"), normalize=False, max_seq_length=None)
    pooling = tmp_path / "st" / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"word_embedding_dimension": CONFIG.hidden_size, "pooling_mode_max_tokens": True,
                                   "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (tmp_path / "st" / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 9,
                                                                           "do_lower_case": False}))
    from sentence_transformers import SentenceTransformer
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert theirs.max_seq_length == 9
    ours = pipeline(tmp_path / "st")
    assert (ours.reading.pooling, ours.reading.max_length, ours.reading.normalize) == ("cls+max", 9, False)
    torch.testing.assert_close(torch.from_numpy(ours.encode(ST_TEXTS)),
                               theirs.encode(ST_TEXTS, convert_to_tensor=True), atol=1e-5, rtol=1e-4)


def edit_json(path, **changes):
    """Merge `changes` into a json file (a list is replaced whole)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(data | changes if isinstance(data, dict) else changes["list"]))


@pytest.mark.parametrize("change, message", [
    (lambda st: edit_json(st / "modules.json", list=json.loads((st / "modules.json").read_text())[:3] + [
        {"idx": 3, "path": "3_Custom", "type": "my.Custom"}]), "module 'my.Custom' is not supported"),
    (lambda st: edit_json(st / "2_Dense" / "config.json", activation_function="my.Swish"),
     "activation_function 'my.Swish' is not supported"),
    (lambda st: edit_json(st / "config_sentence_transformers.json", prompts={"query": "query: "},
                          default_prompt_name="query"), "default_prompt_name 'query' is not supported"),
    (lambda st: edit_json(st / "1_Pooling" / "config.json", pooling_mode="attention"),
     "pooling_mode 'attention' is not one of"),
    (lambda st: (edit_json(st / "sentence_bert_config.json", do_lower_case=True),
                 edit_json(st / "tokenizer_config.json", do_lower_case=False)),
     "do_lower_case over a tokenizer that keeps case is not supported"),
])
def test_sentence_transformers_modules_bertkit_cannot_follow_are_refused(tmp_path, tok, change, message):
    st_folder(tmp_path, tok, "mean", dense=[(8, torch.nn.Tanh(), False)])
    change(tmp_path / "st")
    with pytest.raises(BertkitError, match=message) as e:
        pipeline(tmp_path / "st")
    assert "\n" not in str(e.value)


# ---- tokenizer settings: one rule, transformers' AutoTokenizer's ------------------------------------------

TRICKY = ["Héllo WORLD café", "naïve Ünïcode ÀÉÎ résumé", "北京大学 is in 中国, 東京も", "tab\tnew\nline\x00ctrl\u200b\x7f",
          "emoji 😀👍🏽 ok", "Mixed-Case, punct!? (x) «quoted» — dash", "ﬁ ligature Ⅻ ½ ²", "İstanbul ǅ ß"]
TOKEN_WORDS = ("hello world cafe café héllo naive naïve unicode ünïcode aei àéî résumé resume is in ok mixed case "
               "punct tab new line ctrl emoji istanbul ligature quoted dash x Hello WORLD Héllo Mixed Case").split()


@pytest.fixture(scope="module")
def cased_tok() -> Tokenizer:
    """A cased, accent-keeping vocabulary with the accented and upper-case forms, so each setting changes ids."""
    return Tokenizer.train([" ".join(TOKEN_WORDS + TRICKY)] * 5, vocab_size=300, min_frequency=1, lowercase=False,
                           strip_accents=False, show_progress=False)


CONFLICTS = {  # tokenizer.json normalizer settings, tokenizer_config.json (None: no such file), vocab.txt only
    "json lower, config cased": ({"lowercase": True}, {"do_lower_case": False}, False),
    "json cased, config lower": ({"lowercase": False}, {"do_lower_case": True}, False),
    "json cased, config silent": ({"lowercase": False}, {}, False),
    "json cased, no config": ({"lowercase": False}, None, False),
    "json keeps accents, config strips": ({"strip_accents": None}, {"do_lower_case": False, "strip_accents": True},
                                          False),
    "json strips, config keeps": ({"strip_accents": True}, {"do_lower_case": False, "strip_accents": False}, False),
    "json chinese, config not": ({"handle_chinese_chars": True}, {"do_lower_case": False,
                                                                  "tokenize_chinese_chars": False}, False),
    "json no clean_text": ({"clean_text": False}, {"do_lower_case": False}, False),
    "PreTrainedTokenizerFast keeps the json": ({"lowercase": False}, {"do_lower_case": True,
                                               "tokenizer_class": "PreTrainedTokenizerFast"}, False),
    "vocab.txt, config cased": (None, {"do_lower_case": False}, True),
    "vocab.txt, config silent": (None, {}, True),
    "vocab.txt, strips without lower": (None, {"do_lower_case": False, "strip_accents": True}, True),
}


@pytest.mark.parametrize("case", list(CONFLICTS))
def test_tokenizer_settings_follow_autotokenizer(tmp_path, cased_tok, case):
    norm, config, vocab_only = CONFLICTS[case]
    hf_folder(tmp_path, "BertModel", vocab_size=cased_tok.vocab_size)  # config.json: model_type bert
    cased_tok.save(tmp_path)
    if norm is not None:
        tj = json.loads((tmp_path / "tokenizer.json").read_text())
        tj["normalizer"].update(norm)
        (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    tc = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
        tc.pop(key)
    if config is None:
        (tmp_path / "tokenizer_config.json").unlink()
    else:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tc | config))
    if vocab_only:
        (tmp_path / "tokenizer.json").unlink()
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = load_model(tmp_path).tokenizer
    assert [ours.encode(t).ids for t in TRICKY] == [theirs(t)["input_ids"] for t in TRICKY]
    pairs = ours.encode_batch(TRICKY[:4], TRICKY[4:])["input_ids"].tolist()
    assert pairs == theirs(TRICKY[:4], TRICKY[4:], padding=True)["input_ids"]


def test_a_tokenizer_bert_tokenizer_cannot_rebuild_is_saved_as_it_is(tmp_path):
    """clean_text off (or any normalizer BertTokenizer's settings cannot say) is saved for transformers to read
    tokenizer.json as it is, and bertkit reads it back the same way."""
    tok = Tokenizer.train([" ".join(TOKEN_WORDS)] * 5, vocab_size=200, min_frequency=1, clean_text=False,
                          show_progress=False)
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    again = Tokenizer.load(tmp_path)
    for t in TRICKY:
        assert again.encode(t).ids == tok.encode(t).ids == theirs(t)["input_ids"], t


def test_an_unknown_tokenizer_class_is_refused(tmp_path, cased_tok):
    cased_tok.save(tmp_path)
    tc = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tc | {"tokenizer_class": "BertJapaneseTokenizer"}))
    with pytest.raises(BertkitError, match="tokenizer_class 'BertJapaneseTokenizer' is not supported"):
        Tokenizer.load(tmp_path)


def test_convert_keeps_a_sentence_transformers_folder_whole(tmp_path, tok):
    """`convert` of a sentence-transformers encoder carries its modules: bertkit and sentence-transformers both
    embed the converted folder as they embedded the source."""
    from sentence_transformers import SentenceTransformer

    theirs = st_folder(tmp_path, tok, ("mean", "max"), dense=[(8, torch.nn.Tanh(), False)])
    expected = theirs.encode(ST_TEXTS, convert_to_tensor=True)
    assert main(["convert", str(tmp_path / "st"), str(tmp_path / "out")]) == 0
    torch.testing.assert_close(torch.from_numpy(pipeline(tmp_path / "out").encode(ST_TEXTS)), expected,
                               atol=1e-5, rtol=1e-4)
    again = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(ST_TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-4)
