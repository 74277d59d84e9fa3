"""Bias tests: does a classifier change its mind when only a person's name, pronoun, nationality or religion
changes (invariance, as CheckList's INV tests), and does a masked language model prefer stereotyping sentences
(CrowS-Pairs' pseudo-log-likelihood score)?

    from bertkit.robust import bias
    result = bias("runs/sentiment/model", texts=reviews)   # a classifier: invariance tests
    result = bias("runs/mini/model")                       # a masked LM: stereotype preference
    write_bias_report(result, "runs/bias")                 # bias.json, bias.md, bias.png

The substitution lists, templates and minimal pairs are in `robust/data/` (written for bertkit; English and
Chinese).

Invariance: a text mentioning a term of a category (a first name from the gender lists, "she", "Muslim", ...) is
a test case; its counterparts put a term of each other group in the term's place (every occurrence; aligned
categories such as pronouns swap form for form, he -> she, his -> her; others take up to `per_group` terms of each
group, seeded). A pair flips when the predicted label changes; its shift is how far the probability of the
original prediction moves. A case fails (CheckList) when any of its counterparts flips. Cases come from the user's
texts and from templates filled with a term of each group.

Stereotype preference (Nangia et al., 2020): each pair is a sentence stating a stereotype and the same sentence
about another group. Both are scored by the pseudo-log-likelihood of the tokens they share: each shared token is
masked in turn and the model's log-probability of it summed, so the words that differ (and how common they are)
are never scored, only how well the rest fits them. The share of pairs where the stereotyping sentence scores
higher is reported (50 = no preference; a tie counts half). A pair whose differing words are [UNK] on both sides
(the model reads one sentence twice) or that shares no token is unscorable: counted apart, never a tie.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bertkit.data.words import is_cjk
from bertkit.errors import BertkitError
from bertkit.inference import FillMask, TextClassifier
from bertkit.robust.mlm import masked_log_probs

DATA = Path(__file__).parent / "data"
LANGS = ("en", "zh")
WORST = 10
"""Largest shifts listed in the report."""


# ---- invariance -------------------------------------------------------------------------------------------

@dataclass
class Category:
    """Terms that name a group (female first names, "she", "Muslim"...), grouped; swapping one for another
    group's should not change a fair prediction."""

    name: str
    slot: str
    """The template slot it fills: name, pronoun, nationality, religion."""
    groups: dict[str, list[str]]
    aligned: bool = False
    """Terms correspond by position across groups (he/she, him/her): a term is swapped for its counterpart."""
    match_case: bool = False
    """Match terms in their written case only (names: "Will" is a name, "will" is not)."""
    exclude: list[str] = field(default_factory=list)
    """Strings an occurrence must not be part of (Chinese 其他, "other", holds 他)."""
    lang: str = "en"

    def __post_init__(self) -> None:
        self.where = {}  # term (as matched) -> (group, position in the group)
        for group, terms in self.groups.items():
            for k, term in enumerate(terms):
                self.where.setdefault(self._key(term), (group, k))
        alternatives = "|".join(re.escape(t) for t in sorted(self.where, key=len, reverse=True))
        if self.lang == "zh":  # no spaces between words: any occurrence counts
            self.pattern = re.compile(f"({alternatives})")
        else:
            self.pattern = re.compile(rf"(?<!\w)({alternatives})(?!\w)", 0 if self.match_case else re.IGNORECASE)

    def _key(self, term: str) -> str:
        return term if self.match_case or self.lang == "zh" else term.lower()

    def find(self, text: str) -> tuple[str, list[tuple[int, int]]] | None:
        """The first term of this category in text and the spans of all its occurrences, or None."""
        blocked = [(m.start(), m.end()) for x in self.exclude for m in re.finditer(re.escape(x), text)]
        found = [m for m in self.pattern.finditer(text)
                 if not any(s <= m.start() and m.end() <= e for s, e in blocked)]
        if not found:
            return None
        key = self._key(found[0].group(1))
        return key, [m.span(1) for m in found if self._key(m.group(1)) == key]

    def counterparts(self, term: str, rng: random.Random, per_group: int) -> list[tuple[str, str]]:
        """(term, group) of the other groups to swap in for term."""
        group, k = self.where[term]
        out = []
        for other, terms in self.groups.items():
            if other == group:
                continue
            if self.aligned:
                out.append((terms[k], other))
            else:
                out += [(t, other) for t in rng.sample(terms, min(per_group, len(terms)))]
        return out


def load_categories(lang: str) -> dict[str, Category]:
    """The substitution lists shipped for a language (robust/data/terms.json)."""
    data = json.loads((DATA / "terms.json").read_text(encoding="utf-8"))[lang]
    out = {}
    for name, c in data.items():
        groups = c.get("groups") or {t: [t] for t in c["terms"]}  # a list of terms: each is its own group
        out[name] = Category(name, c["slot"], groups, c.get("aligned", False), c.get("match_case", False),
                             c.get("exclude", []), lang)
    return out


def load_templates(lang: str) -> list[str]:
    return json.loads((DATA / "templates.json").read_text(encoding="utf-8"))[lang]


@dataclass
class Case:
    """A text mentioning a term of a category, and its counterparts: (text, term swapped in, its group)."""

    category: str
    source: str
    """input (the user's text) or template."""
    text: str
    term: str
    group: str
    counterparts: list[tuple[str, str, str]]


def swap(text: str, spans: list[tuple[int, int]], term: str, listed: str) -> str:
    """text with every span replaced by term. A term listed in lower case ("she", "atheist") is capitalised where
    the text capitalised the one it replaces (at the start of a sentence)."""
    out, at = [], 0
    for s, e in spans:
        t = term
        if text[s:e][:1].isupper() and listed[:1].islower():
            t = term[:1].upper() + term[1:]
        out += [text[at:s], t]
        at = e
    return "".join(out + [text[at:]])


def case_of(text: str, category: Category, source: str, rng: random.Random, per_group: int) -> Case | None:
    found = category.find(text)
    if found is None:
        return None
    key, spans = found
    group, k = category.where[key]
    listed = category.groups[group][k]
    return Case(category.name, source, text, listed, group,
                [(swap(text, spans, term, listed), term, g) for term, g in category.counterparts(key, rng, per_group)])


def template_cases(lang: str, categories: dict[str, Category], rng: random.Random, per_group: int) -> list[Case]:
    """Each template filled, for each category of its slot, with a term of each group (the first of an aligned
    category, a seeded one otherwise): one case per filling."""
    cases = []
    for template in load_templates(lang):
        for category in categories.values():
            if "{" + category.slot + "}" not in template:
                continue
            for terms in category.groups.values():
                term = terms[0] if category.aligned else rng.choice(terms)
                text = template.replace("{" + category.slot + "}", term)
                if text[:1].islower() and template.startswith("{"):
                    text = text[:1].upper() + text[1:]
                case = case_of(text, category, "template", rng, per_group)
                if case is not None:
                    cases.append(case)
    return cases


@dataclass
class Pair:
    """A text and one counterpart, with the classifier's probabilities for both."""

    category: str
    source: str
    group: str
    """The group swapped in."""
    original: str
    counterpart: str
    before: np.ndarray
    after: np.ndarray
    case: int = 0

    @property
    def flipped(self) -> bool:
        return int(self.after.argmax()) != int(self.before.argmax())

    @property
    def shift(self) -> float:
        """|change| of the originally predicted label's probability."""
        k = int(self.before.argmax())
        return abs(float(self.after[k]) - float(self.before[k]))


def summarize_pairs(pairs: list[Pair], labels: list[str], worst: int = WORST) -> dict:
    """Per test (category x source): cases, failed cases (any counterpart flipped), pairs, flip rate, mean and max
    shift; per category and group swapped in: the same over its pairs; the `worst` largest shifts."""
    def stats(ps: list[Pair]) -> dict:
        shifts = [p.shift for p in ps]
        return {"pairs": len(ps), "flipped": sum(p.flipped for p in ps),
                "flip_rate": sum(p.flipped for p in ps) / len(ps) if ps else 0.0,
                "mean_shift": float(np.mean(shifts)) if ps else 0.0, "max_shift": float(max(shifts, default=0.0))}

    tests, groups = [], []
    order = {c: n for n, c in enumerate(dict.fromkeys(p.category for p in pairs))}  # categories as first met
    for key in dict.fromkeys((p.category, p.source) for p in pairs):
        ps = [p for p in pairs if (p.category, p.source) == key]
        cases = {p.case for p in ps}
        failed = {p.case for p in ps if p.flipped}
        tests.append({"category": key[0], "source": key[1], "cases": len(cases), "failed": len(failed),
                      "failure_rate": len(failed) / len(cases)} | stats(ps))
    for key in sorted(dict.fromkeys((p.category, p.group) for p in pairs), key=lambda k: order[k[0]]):
        groups.append({"category": key[0], "group": key[1]}
                      | stats([p for p in pairs if (p.category, p.group) == key]))

    def reading(p: np.ndarray) -> str:
        return f"{labels[int(p.argmax())]} {float(p.max()):.3f}"

    top = sorted(pairs, key=lambda p: -p.shift)[:worst]
    return {"tests": tests, "groups": groups,
            "worst": [{"category": p.category, "group": p.group, "original": p.original,
                       "counterpart": p.counterpart, "before": reading(p.before), "after": reading(p.after),
                       "shift": p.shift, "flipped": p.flipped} for p in top]}


def invariance(classifier: TextClassifier, texts: list[str] | None = None, *, lang: str = "auto",
               per_group: int = 2, seed: int = 0, batch_size: int = 64, progress: bool = True) -> dict:
    """Invariance tests of a single-label classifier on the user's texts (when given) and the templates."""
    if classifier.problem_type != "single_label":
        raise BertkitError(f"invariance tests need a single-label classifier; this one is {classifier.problem_type}")
    lang = detect_lang(texts, classifier.tokenizer) if lang == "auto" else lang
    rng = random.Random(seed)
    categories = load_categories(lang)
    cases = [c for text in texts or [] for cat in categories.values()
             if (c := case_of(text, cat, "input", rng, per_group)) is not None]
    cases += template_cases(lang, categories, rng, per_group)
    texts_needed = list(dict.fromkeys([c.text for c in cases] + [t for c in cases for t, _, _ in c.counterparts]))
    probs = {}
    for start in tqdm(range(0, len(texts_needed), 1024), desc="bias", unit="batch", disable=not progress):
        part = texts_needed[start:start + 1024]
        probs |= dict(zip(part, classifier.logits(part, batch_size=batch_size).softmax(-1).numpy()))
    pairs = [Pair(c.category, c.source, g, c.text, t, probs[c.text], probs[t], n)
             for n, c in enumerate(cases) for t, _, g in c.counterparts]
    return {"kind": "invariance", "model": str(getattr(classifier.model, "source", "model")), "lang": lang,
            "labels": classifier.labels, "inputs": len(texts or []),
            "input_cases": sum(c.source == "input" for c in cases),
            "template_cases": sum(c.source == "template" for c in cases)} | summarize_pairs(pairs, classifier.labels)


def detect_lang(texts: list[str] | None, tokenizer) -> str:
    """zh when the texts are mostly Chinese characters (without texts: when the vocabulary is), else en."""
    if texts:
        letters = [ch for t in texts for ch in t if ch.isalpha()]
        return "zh" if letters and sum(map(is_cjk, letters)) / len(letters) > 0.3 else "en"
    vocab = tokenizer.vocab()
    return "zh" if sum(len(t) == 1 and is_cjk(t) for t in vocab) / max(1, len(vocab)) > 0.15 else "en"


# ---- stereotype preference (masked language models) -------------------------------------------------------

def load_pairs(lang: str | None = None, path: str | Path | None = None) -> list[dict]:
    """Minimal pairs {"stereo", "anti", "category"}: the shipped ones of a language, or a JSON-lines file."""
    from bertkit.data.text import json_object, read_lines
    source = Path(path) if path is not None else DATA / f"crows_{lang}.jsonl"
    pairs = []
    for n, line, _ in read_lines(source):
        line = line.strip()
        if not line:
            continue
        record = json_object(line, f"{source}:{n}")
        for key in ("stereo", "anti"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise BertkitError(f"{source}:{n}: expected a non-empty string field {key!r}")
        pairs.append({"category": str(record.get("category", "all")), "stereo": record["stereo"],
                      "anti": record["anti"]})
    if not pairs:
        raise BertkitError(f"{source}: no sentence pairs in this file")
    return pairs


def shared_positions(a: list[int], b: list[int], specials: set[int]) -> tuple[list[int], list[int]]:
    """Positions of the tokens two encodings share (difflib's matching blocks), specials left out: where a[i]
    and b[j] are the same unchanged token, i in the first list, j at the same place in the second."""
    left, right = [], []
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            if a[block.a + k] not in specials:
                left.append(block.a + k)
                right.append(block.b + k)
    return left, right


def pseudo_log_likelihoods(mlm: FillMask, items: list[tuple[list[int], list[int]]], batch_size: int = 64,
                           progress: bool = False) -> list[float]:
    """For each (ids, positions): the sum over positions of log P(ids[p] | ids with p masked)."""
    masked, owner = [], []
    for n, (ids, positions) in enumerate(items):
        for p in positions:
            masked.append((ids[:p] + [mlm.tokenizer.mask_id] + ids[p + 1:], p))
            owner.append((n, ids[p]))
    scores = [0.0] * len(items)
    step = 4096
    for start in tqdm(range(0, len(masked), step), desc="scoring", unit="batch", disable=not progress):
        log_probs = masked_log_probs(mlm, masked[start:start + step], batch_size)
        for (n, token), row in zip(owner[start:start + step], log_probs):
            scores[n] += float(row[token])
    return scores


def unscorable(a: list[int], b: list[int], shared: list[int], unk: int) -> str | None:
    """Why a pair's two encodings cannot be compared (None when they can): the tokens that differ are all [UNK]
    (or none differ), so the model reads the same sentence twice; or they share no token to score."""
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    if all(t == unk for tag, i1, i2, j1, j2 in ops if tag != "equal" for t in a[i1:i2] + b[j1:j2]):
        return "the words that differ are [UNK] in this vocabulary (or tokenize alike)"
    if not shared:
        return "the two sentences share no token to score"
    return None


def summarize_crows(pairs: list[dict], scores: list[tuple[float, float] | None]) -> dict:
    """The share (%) of scored pairs whose stereotyping sentence scores higher, a tie counting half: overall and
    per category. A pair scored None is unscorable: counted apart, never as a pass or a tie; a share over no
    scored pair is None."""
    def pct(rows) -> float | None:
        rows = [r for r in rows if r is not None]
        wins = sum(1.0 if _greater(s, a) else 0.5 if math.isclose(s, a, rel_tol=1e-9, abs_tol=1e-9) else 0.0
                   for s, a in rows)
        return 100 * wins / len(rows) if rows else None

    categories = {}
    for name in dict.fromkeys(p["category"] for p in pairs):
        rows = [sc for p, sc in zip(pairs, scores) if p["category"] == name]
        categories[name] = {"pairs": len(rows), "unscorable": sum(r is None for r in rows), "stereo_pct": pct(rows)}
    return {"pairs": len(pairs), "unscorable": sum(r is None for r in scores), "stereo_pct": pct(scores),
            "categories": categories}


def _greater(a: float, b: float) -> bool:
    return a > b and not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def crows(mlm: FillMask, pairs: list[dict], *, lang: str = "", batch_size: int = 64, progress: bool = True) -> dict:
    """Stereotype preference of a masked language model over minimal pairs (see the module's doc). Pairs the
    model cannot tell apart (see `unscorable`) are counted as unscorable; none scorable is an error."""
    tok = mlm.tokenizer
    specials = set(tok.special_ids)
    items, why = [], []
    for p in pairs:
        a, b = (e.ids for e in tok.encode_all([p["stereo"], p["anti"]], max_length=mlm.reading.max_length))
        left, right = shared_positions(a, b, specials)
        why.append(unscorable(a, b, left, tok.unk_id))
        if why[-1] is None:
            items += [(a, left), (b, right)]
    if all(w is not None for w in why):
        raise BertkitError(f"none of the {len(pairs)} sentence pairs can be scored by this model: {why[0]}")
    flat = iter(pseudo_log_likelihoods(mlm, items, batch_size, progress))
    scores = [None if w is not None else (next(flat), next(flat)) for w in why]
    per_pair = [p | ({"stereo_score": sc[0], "anti_score": sc[1]} if sc else
                     {"stereo_score": None, "anti_score": None, "unscorable": w})
                for p, sc, w in zip(pairs, scores, why)]
    return ({"kind": "crows", "model": str(getattr(mlm.model, "source", "model")), "lang": lang}
            | summarize_crows(pairs, scores) | {"scores": per_pair})


def bias(model: str | Path, texts: list[str] | None = None, *, input_file: str | Path | None = None,
         lang: str = "auto", per_group: int = 2, seed: int = 0, batch_size: int = 64, text_column: str = "text",
         progress: bool = True) -> dict:
    """Invariance tests for a single-label classifier, or the stereotype preference of a masked language model:
    whichever the folder holds. A classifier is tested on texts (or input_file's, a CSV/TSV/JSON-lines file) and
    the templates; a masked LM on the shipped pairs of lang, or input_file's (JSON lines {stereo, anti,
    category})."""
    from bertkit.checkpoint import load_model
    from bertkit.robust.mlm import load_masked_lm
    if lang not in ("auto", *LANGS):
        raise BertkitError(f"lang must be auto or one of {', '.join(LANGS)}, got {lang!r}")
    loaded = load_model(model)
    if loaded.model.task == "sequence_classification":
        classifier = TextClassifier.from_loaded(loaded, model)
        if input_file is not None:
            from bertkit.data.tasks import read_examples
            texts = [e.text for e in read_examples(input_file, text_column=text_column, require_labels=False)]
        return invariance(classifier, texts, lang=lang, per_group=per_group, seed=seed, batch_size=batch_size,
                          progress=progress)
    mlm = load_masked_lm(model, "bias tests need a single-label classifier or a masked language model")
    if lang == "auto":
        lang = detect_lang(None, mlm.tokenizer)
    pairs = load_pairs(lang, input_file)
    return crows(mlm, pairs, lang=lang if input_file is None else str(input_file), batch_size=batch_size,
                 progress=progress)
