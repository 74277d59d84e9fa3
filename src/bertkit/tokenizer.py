"""WordPiece tokenization on top of Hugging Face's `tokenizers` library.

Train a vocabulary (English, Chinese or both), encode single texts and pairs with segment ids, offsets
and word ids, truncate and pad batches, and save/load in the two formats every BERT tool reads:
`tokenizer.json` and `vocab.txt` (+ `tokenizer_config.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding as _Encoding
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertkit.config import read_json
from bertkit.errors import BertkitError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TRUNCATION = ("longest_first", "only_first", "only_second")
PADDING = ("longest", "max_length")


@dataclass
class Encoding:
    """One encoded text or pair. Lists are aligned: one entry per token, [CLS]/[SEP] included."""

    ids: list[int]
    type_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    """(start, end) character span in its own text; (0, 0) for special tokens."""
    word_ids: list[int | None]
    """Index of the word (pre-tokenizer piece) the token came from, within its own text; None for specials."""
    sequence_ids: list[int | None]
    """0 for the first text, 1 for the pair, None for special tokens."""
    attention_mask: list[int]
    truncated: bool = False
    """The input was longer than max_length: tokens past it are not here (encode_windows reads them as the next
    windows; everything else drops them)."""
    unread_words: int = 0
    """Words (of either text) of which not one token is here because of truncation: what a reader never saw."""

    @classmethod
    def _from(cls, e: _Encoding) -> Encoding:
        unread = 0
        if e.overflowing:  # only when truncation cut something; a text read whole costs nothing here
            read = {(s, w) for s, w in zip(e.sequence_ids, e.word_ids) if w is not None}
            unread = len({(s, w) for o in e.overflowing for s, w in zip(o.sequence_ids, o.word_ids)
                          if w is not None} - read)
        return cls(e.ids, e.type_ids, e.tokens, e.offsets, e.word_ids, e.sequence_ids, e.attention_mask,
                   bool(e.overflowing), unread)


class Batch(dict):
    """An encoded batch: a dict of tensors `input_ids`, `token_type_ids`, `attention_mask` (B, T), so
    `model(**batch)` works, plus `.encodings` (one `Encoding` per row, for offsets and word ids)."""

    def __init__(self, tensors: dict[str, torch.Tensor], raw: list[_Encoding]):
        super().__init__(tensors)
        self._raw = raw

    @property
    def encodings(self) -> list[Encoding]:
        return [Encoding._from(e) for e in self._raw]


class Tokenizer:
    """A BERT WordPiece tokenizer. Build one with `Tokenizer.train(...)` or `Tokenizer.load(path)`."""

    def __init__(self, backend: _Backend, model_max_length: int = 512):
        model = json.loads(backend.to_str())["model"]
        if model.get("type") != "WordPiece":
            raise BertkitError(f"not a WordPiece tokenizer (model type {model.get('type')!r})")
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.model_max_length = model_max_length
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise BertkitError(f"tokenizer vocabulary lacks the special token(s) {' '.join(missing)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            backend.token_to_id(t) for t in SPECIAL_TOKENS)
        if backend.post_processor is None:
            # The known pitfall: a WordPiece tokenizer trained with `tokenizers` adds no [CLS]/[SEP] until told to.
            backend.post_processor = _bert_template(self.cls_id, self.sep_id)

    # ---- building -------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | None = None,
        vocab_size: int = 30522,
        *,
        files: Sequence[str | Path] | None = None,
        min_frequency: int = 2,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        chinese_chars: bool = True,
        clean_text: bool = True,
        limit_alphabet: int = 1000,
        show_progress: bool = True,
    ) -> Tokenizer:
        """Learn a WordPiece vocabulary.

        Give either texts (an iterable of strings) or files (paths of UTF-8 text files). strip_accents None follows lowercase, as BERT's uncased models do. chinese_chars puts spaces
        around every CJK character, so each becomes its own token (how Google's Chinese BERT works).
        limit_alphabet caps the single characters kept; raise it for Chinese, whose alphabet runs to thousands.
        """
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise BertkitError(f"vocab_size {vocab_size} is too small")
        backend = _Backend(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=clean_text, handle_chinese_chars=chinese_chars, strip_accents=strip_accents,
            lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            limit_alphabet=limit_alphabet, continuing_subword_prefix="##", show_progress=show_progress)
        if (texts is None) == (files is None):
            raise BertkitError("give either texts or files to train a tokenizer on, not both or neither")
        if files is not None:
            paths = [str(p) for p in files]
            for p in paths:
                if not Path(p).is_file():
                    raise BertkitError(f"{p}: file not found")
            try:
                backend.train(paths, trainer)
            except Exception as e:  # noqa: BLE001 - the Rust side raises a bare Exception without the file's name
                if "UTF-8" not in str(e):
                    raise
                raise BertkitError(f"{_first_non_utf8(paths)}: not UTF-8 text") from None
        else:
            backend.train_from_iterator(_strings(texts), trainer)
        if backend.get_vocab_size() <= len(SPECIAL_TOKENS):
            source = f" ({', '.join(map(str, files))})" if files is not None else ""
            raise BertkitError(f"no vocabulary was learned: the training text{source} is empty")
        return cls(backend)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """From a directory (bertkit or any Hugging Face BERT folder), a tokenizer.json or a vocab.txt, read by
        transformers' AutoTokenizer's rule (see follows_tokenizer_config): tokenizer_config.json's settings
        (do_lower_case, strip_accents, tokenize_chinese_chars) win over tokenizer.json's normalizer when
        transformers would build a BertTokenizer. In a directory tokenizer.json wins over vocab.txt."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        config_file = folder / "tokenizer_config.json"
        config = read_json(config_file) if config_file.is_file() else {}
        max_len = config.get("model_max_length", 512)
        max_len = max_len if isinstance(max_len, int) and 0 < max_len < 1_000_000 else 512
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                path = path / "tokenizer.json"
            elif (path / "vocab.txt").is_file():
                path = path / "vocab.txt"
            else:
                raise BertkitError(f"{path}: no tokenizer.json or vocab.txt in this directory")
        if not path.is_file():
            raise BertkitError(f"{path}: file not found")
        if path.suffix == ".json":
            try:
                backend = _Backend.from_file(str(path))
            except Exception as e:  # the Rust side raises plain Exception with a parse message
                raise BertkitError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
            if follows_tokenizer_config(folder, config):
                model = json.loads(backend.to_str())["model"]
                vocab = model.get("vocab")
                if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
                    raise BertkitError(f"{path}: not a WordPiece tokenizer")
                backend = _bert_backend(vocab, config, path)
            return cls(backend, max_len)
        return cls(_from_vocab(path, config), max_len)

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._backend.save(str(folder / "tokenizer.json"))
        vocab = self._backend.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise BertkitError("vocabulary ids are not contiguous; cannot write vocab.txt")
        (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
        norm = self.normalizer_settings()
        settings = {"do_lower_case": norm["lowercase"], "strip_accents": norm["strip_accents"],
                    "tokenize_chinese_chars": norm["handle_chinese_chars"]}
        specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
        (folder / "tokenizer_config.json").write_text(json.dumps({
            # BertTokenizer when it rebuilds this very tokenizer from these settings; else tokenizer.json as saved
            "tokenizer_class": "BertTokenizer" if self._is_bert_tokenizer(settings) else AS_SAVED[0],
            **settings,
            "clean_up_tokenization_spaces": True,
            "model_max_length": self.model_max_length,
            **specials,
        }, indent=2) + "\n", encoding="utf-8")
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")

    def _is_bert_tokenizer(self, settings: dict) -> bool:
        """Whether transformers' BertTokenizer, given these tokenizer_config settings, builds this tokenizer."""
        ours = json.loads(self._backend.to_str())
        if ours["model"].get("type") != "WordPiece":
            return False
        theirs = json.loads(_bert_backend(ours["model"]["vocab"], settings, Path("tokenizer.json")).to_str())
        return all(ours.get(k) == theirs.get(k) for k in ("normalizer", "pre_tokenizer", "model"))

    # ---- facts ----------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> list[int]:
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]

    def vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def normalizer_settings(self) -> dict:
        """lowercase, strip_accents, handle_chinese_chars, clean_text of the BertNormalizer (defaults if absent)."""
        norm = json.loads(self._backend.to_str()).get("normalizer") or {}
        if norm.get("type") == "Sequence":  # a BertNormalizer inside a Sequence
            norm = next((n for n in norm.get("normalizers", []) if n.get("type") == "BertNormalizer"), {})
        return {"lowercase": norm.get("lowercase", False), "strip_accents": norm.get("strip_accents"),
                "handle_chinese_chars": norm.get("handle_chinese_chars", False),
                "clean_text": norm.get("clean_text", False)}

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._backend.id_to_token(i)

    # ---- encoding -------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of a text, without [CLS]/[SEP], never truncated."""
        self._configure(None, None, None, None)  # every call sets what it needs: no state left by the last one
        return self._backend.encode(text, add_special_tokens=False).tokens

    def ids_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, in parallel: no [CLS]/[SEP], no truncation, no padding."""
        self._configure(None, None, None, None)
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str, pair: str | None = None, *, max_length: int | None = None,
               truncation: str | None = "longest_first", add_special_tokens: bool = True) -> Encoding:
        """One text, or a pair (segment ids 0 then 1). Truncated to max_length (default model_max_length)."""
        self._configure(max_length, truncation, None, None)
        try:
            e = self._backend.encode(_check_text(text), _check_text(pair) if pair is not None else None,
                                     add_special_tokens=add_special_tokens)
        except Exception as err:  # noqa: BLE001 - the Rust side raises plain Exception
            raise BertkitError(f"cannot encode: {str(err).splitlines()[0]}") from None
        return Encoding._from(e)

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                     max_length: int | None = None, truncation: str | None = "longest_first",
                     padding: str | None = "longest", pad_to_multiple_of: int | None = None) -> Batch:
        """A batch, tokenized in parallel, padded to the longest row ("longest") or to max_length."""
        if pairs is not None and len(pairs) != len(texts):
            raise BertkitError(f"{len(texts)} texts but {len(pairs)} pairs")
        if padding is None:
            raise BertkitError("encode_batch pads; use encode() per text for unpadded lists")
        self._configure(max_length, truncation, padding, pad_to_multiple_of)
        inputs = [_check_text(t) for t in texts]
        if pairs is not None:
            inputs = list(zip(inputs, (_check_text(p) for p in pairs)))
        try:
            raw = self._backend.encode_batch(inputs, add_special_tokens=True)
        except Exception as err:  # noqa: BLE001
            raise BertkitError(f"cannot encode: {str(err).splitlines()[0]}") from None
        if raw:
            tensors = {k: torch.from_numpy(np.array([getattr(e, attr) for e in raw], dtype=np.int64))
                       for k, attr in (("input_ids", "ids"), ("token_type_ids", "type_ids"),
                                       ("attention_mask", "attention_mask"))}
        else:
            tensors = {k: torch.zeros(0, 0, dtype=torch.long)
                       for k in ("input_ids", "token_type_ids", "attention_mask")}
        batch = Batch(tensors, raw)
        return batch

    def encode_all(self, texts: Sequence[str] | Sequence[list[str]], pairs: Sequence[str] | None = None, *,
                   max_length: int | None = None, truncation: str | None = "longest_first",
                   pretokenized: bool = False) -> list[Encoding]:
        """Many texts (or pairs) in parallel, unpadded, each as an `Encoding`. pretokenized: each text is a list of
        words (NER input), and word_ids index into it."""
        if pairs is not None and len(pairs) != len(texts):
            raise BertkitError(f"{len(texts)} texts but {len(pairs)} pairs")
        self._configure(max_length, truncation, None, None)
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        try:
            raw = self._backend.encode_batch(inputs, is_pretokenized=pretokenized, add_special_tokens=True)
        except Exception as err:  # noqa: BLE001
            raise BertkitError(f"cannot encode: {str(err).splitlines()[0]}") from None
        return [Encoding._from(e) for e in raw]

    def encode_windows(self, first: str, second: str | None = None, *, max_length: int,
                       stride: int) -> list[Encoding]:
        """Every window of a long text: [CLS] window [SEP] when second is None (long documents), else
        [CLS] first [SEP] window of second [SEP] (question answering). Consecutive windows share `stride`
        tokens; offsets index into the windowed text."""
        room = max_length - len(self.tokenize(first)) - 3 if second is not None else max_length
        if room <= stride:  # the Rust side panics (not an Exception) when a window has no room past its stride
            raise BertkitError(f"the first text leaves {max(room, 0)} of max_length {max_length} tokens to the "
                               f"second, not more than the stride {stride}; no room for windows")
        if not 0 <= stride < max_length - 3:
            raise BertkitError(f"stride {stride} must be in [0, max_length - 3)")
        self._backend.enable_truncation(max_length, strategy="only_second" if second is not None else "longest_first",
                                        stride=stride)
        self._backend.no_padding()
        try:
            e = self._backend.encode(_check_text(first), _check_text(second) if second is not None else None,
                                     add_special_tokens=True)
        except Exception as err:  # noqa: BLE001
            raise BertkitError(f"cannot encode: {str(err).splitlines()[0]}") from None
        return [Encoding._from(x) for x in [e, *e.overflowing]]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _configure(self, max_length, truncation, padding, pad_to_multiple_of) -> None:
        limit = max_length or self.model_max_length
        if truncation:
            if truncation not in TRUNCATION:
                raise BertkitError(f"truncation must be one of {TRUNCATION} or None, got {truncation!r}")
            if limit < 3:
                raise BertkitError(f"max_length {limit} leaves no room for [CLS] and [SEP]")
            self._backend.enable_truncation(limit, strategy=truncation)
        else:
            self._backend.no_truncation()
        if padding:
            if padding not in PADDING:
                raise BertkitError(f"padding must be one of {PADDING} or None, got {padding!r}")
            self._backend.enable_padding(pad_id=self.pad_id, pad_token=PAD, pad_type_id=0,
                                         length=limit if padding == "max_length" else None,
                                         pad_to_multiple_of=pad_to_multiple_of)
        else:
            self._backend.no_padding()


def _bert_template(cls_id: int, sep_id: int) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )


BERT_TOKENIZERS = ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer", "DistilBertTokenizerFast")
"""tokenizer_class values for which transformers builds its BertTokenizer from the vocabulary and
tokenizer_config.json's settings, whatever tokenizer.json's normalizer says."""
AS_SAVED = ("PreTrainedTokenizerFast", "TokenizersBackend")
"""tokenizer_class values for which transformers reads tokenizer.json as it is."""


def follows_tokenizer_config(folder: Path, config: dict) -> bool:
    """Whether a folder's tokenizer is built from its vocabulary and tokenizer_config.json (True) or read from
    tokenizer.json as it is (False): transformers 5's AutoTokenizer rule. tokenizer_class BertTokenizer (or none,
    in a model folder whose config.json says model_type bert) builds a BertTokenizer, whose normalizer comes from
    do_lower_case (default true), strip_accents (default: follows lower-casing), tokenize_chinese_chars (default
    true), clean_text always; PreTrainedTokenizerFast keeps tokenizer.json. Another class is refused by name."""
    name = config.get("tokenizer_class")
    if name is None:
        model_config = folder / "config.json"
        try:
            return read_json(model_config).get("model_type") == "bert" if model_config.is_file() else False
        except BertkitError:
            return False
    if name in BERT_TOKENIZERS:
        return True
    if name in AS_SAVED:
        return False
    raise BertkitError(f"{folder / 'tokenizer_config.json'}: tokenizer_class {name!r} is not supported (bertkit "
                       f"reads {', '.join(BERT_TOKENIZERS[:2] + AS_SAVED[:1])})")


def _from_vocab(path: Path, config: dict) -> _Backend:
    """A tokenizer from a bare vocab.txt, built the way `transformers`' BertTokenizer builds it."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise BertkitError(f"{path}: not a UTF-8 vocab.txt") from None
    if lines and lines[-1] == "":
        lines.pop()
    # Line number = id, a later duplicate winning, exactly as transformers' load_vocab reads it.
    return _bert_backend({token.rstrip("\r"): i for i, token in enumerate(lines)}, config, path)


def _bert_backend(vocab: dict[str, int], config: dict, path: Path) -> _Backend:
    """What transformers' BertTokenizer builds from a vocabulary and tokenizer_config.json's settings."""
    if not vocab:
        raise BertkitError(f"{path}: the vocabulary is empty")
    if UNK not in vocab:
        raise BertkitError(f"{path}: the vocabulary has no {UNK} token")
    settings = {key: config.get(key, default) for key, default in
                (("do_lower_case", True), ("strip_accents", None), ("tokenize_chinese_chars", True))}
    for key, value in settings.items():
        if not (isinstance(value, bool) or (value is None and key == "strip_accents")):
            raise BertkitError(f"{path.parent / 'tokenizer_config.json'}: {key} must be true or false, got {value!r}")
    backend = _Backend(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"], lowercase=settings["do_lower_case"])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    if CLS in vocab and SEP in vocab:
        backend.post_processor = _bert_template(vocab[CLS], vocab[SEP])
    # Registered as special tokens, a literal "[SEP]" in a text stays one token, as in transformers.
    backend.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
    return backend


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise BertkitError(f"expected a string to encode, got {type(text).__name__}")
    return text


def _strings(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        yield _check_text(t)


def _first_non_utf8(paths: Sequence[str]) -> str:
    """The first of the files that does not decode as UTF-8 (read in blocks, so any size)."""
    import codecs
    for p in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return p
    return ", ".join(paths)
