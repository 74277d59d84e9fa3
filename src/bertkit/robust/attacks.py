"""Adversarial attacks on a single-label text classifier: how much noise or how few changed words flip it.

    from bertkit.robust import attack_file
    run = attack_file("runs/sentiment/model", "data/rt-polarity/test.csv", config=AttackConfig(limit=500))
    run.summary["deepwordbug"]["accuracy_under_attack"]
    run.save("runs/attack")      # attack.json, attack.md, adversarial.jsonl, attack.html

Recipes (TextAttack's names and rules where they have them):

- charnoise: natural noise, no search: each text with 1 and with 2 random typos (adjacent swap, dropped letter,
  neighbouring key), exactly that many edits away (`noise.py`).
- deepwordbug (Gao et al., 2018): words ranked by the model's own importance (the drop of the gold label's
  probability when the word is deleted, all words in one batch), then greedily, most important first: try one
  random swap, substitution, deletion and insertion of a letter in the word, keep the one that lowers the gold
  probability most, until the label flips or the query or word budget runs out.
- bae (Garg & Ramakrishnan, 2020, BAE-R): words ranked the same way; each replaced by a masked language model's
  top-k tokens for it, keeping whole words (no ##pieces, punctuation or stop-words) whose text stays similar to the
  original (cosine of mean-pooled hidden states of the classifier's own encoder >= a threshold); among the
  candidates that flip the label the most similar wins, else the one that lowers the gold probability most.

As TextAttack does, only texts the model gets right are attacked (the others are "skipped"), stop-words are never
changed (deepwordbug and bae), and the queries of an attack count every text the classifier was asked about,
the original included.

Each attack on one text is written as a generator that yields requests (texts to classify, texts to read with
their sentence vectors, words to fill in) and receives the answers, so it reads top to bottom; `run_searches`
keeps many of them going at once and answers all their requests of a kind in one batched call through the
inference layer's unpadded forward.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bertkit.data.words import is_cjk
from bertkit.encoding.inputs import encode_texts
from bertkit.errors import BertkitError
from bertkit.inference import FillMask, TextClassifier
from bertkit.inference.batches import forward, pool_windows
from bertkit.options import at_least, between, check_fields
from bertkit.robust.mlm import fill_candidates, load_masked_lm
from bertkit.data.noise import DEEPWORDBUG, edit, editable, noisy
from bertkit.data.pieces import Pieces

RECIPES = ("charnoise", "deepwordbug", "bae")
NOISE_EDITS = (1, 2)
"""charnoise runs once per number of edits: charnoise-1, charnoise-2."""
CONCURRENT = 64
"""Attacks kept going at once: their requests of one step make a forward pass's batches."""

STOPWORDS = frozenset("""
a an the and or but nor so yet if then than because as while of at by for with about against between into through
during before after above below to from up down in out on off over under again further once here there when where
why how all any both each few more most other some such only own same too very can will just should would could
may might must shall do does did doing done have has had having be is am are was were been being i me my myself we
our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it its itself they
them their theirs themselves what which who whom this that these those not no never s t don now
的 了 是 在 和 与 及 或 也 就 都 而 着 过 呢 吗 吧 啊 把 被 让 给 对 从 向 于 以 之 其 这 那 我 你 他 她 它 们 个 不 没 很 还 又 才 只
""".split())
"""Never changed by deepwordbug or bae (written for bertkit): English function words, negations, and Chinese
function characters. A negation is a stop-word so that an attack cannot "win" by reversing the meaning."""


@dataclass
class AttackConfig:
    recipe: str = "all"
    """charnoise, deepwordbug, bae, or all (a comma-separated list works too); bae needs a masked language model."""
    limit: int | None = field(default=None, metadata=at_least(1))
    """Attack a seeded sample of this many texts of the file (default: every text)."""
    max_queries: int = field(default=2000, metadata=at_least(1))
    """Most texts the classifier may be asked about for one attacked text, the original included; an attack that
    runs out fails."""
    max_perturbed: float = field(default=0.3, metadata=between(0.0, 1.0, low_open=True))
    """deepwordbug, bae: the largest share of a text's words an attack may change (one word at least)."""
    candidates: int = field(default=50, metadata=at_least(1))
    """bae: the masked language model's top-k tokens tried for each word, before the constraints (BAE's k)."""
    similarity: float = field(default=0.8, metadata=between(-1.0, 1.0))
    """bae: the least cosine similarity between the original and the attacked text's sentence vectors (mean-pooled
    hidden states of the classifier's encoder)."""
    batch_size: int = field(default=64, metadata=at_least(1))
    """Texts per forward pass."""
    seed: int = field(default=0, metadata=at_least(0))
    """Fixes the sample, the noise and deepwordbug's random edits: the same seed gives the same results."""

    def __post_init__(self) -> None:
        check_fields(self)
        self.recipes  # noqa: B018 - checks the names

    @property
    def recipes(self) -> list[str]:
        names = [r.strip() for r in self.recipe.split(",") if r.strip()]
        if names == ["all"]:
            return list(RECIPES)
        unknown = [r for r in names if r not in RECIPES]
        if unknown or not names:
            raise BertkitError(f"unknown recipe(s) {', '.join(unknown) or '(none given)'}; choose from "
                               f"{', '.join(RECIPES)} or all")
        return list(dict.fromkeys(names))


@dataclass
class Target:
    """One labelled text and what the model said of it before any attack."""

    index: int
    """Its row in the input (0-based)."""
    pieces: Pieces
    gold: int
    before: np.ndarray
    """(L,) probabilities."""

    @property
    def correct(self) -> bool:
        return int(self.before.argmax()) == self.gold

    @property
    def words(self) -> int:
        """Words of letters or digits (punctuation is not a word here)."""
        return sum(any(c.isalnum() for c in w) for w in self.pieces.words)


@dataclass
class Outcome:
    """One attack on one text. result: successful (the label flipped), failed, or skipped (misclassified
    already, never attacked)."""

    recipe: str
    target: Target
    result: str
    perturbed: Pieces | None = None
    after: np.ndarray | None = None
    queries: int = 0

    @property
    def changed(self) -> list[int]:
        return self.target.pieces.changed(self.perturbed) if self.perturbed else []


# ---- the searches ---------------------------------------------------------------------------------------

Request = tuple[str, list]
"""("classify", texts) -> (n, L) probabilities; ("read", texts) -> ((n, L) probabilities, (n, C) unit sentence
vectors); ("fill", [(text, start, end)]) -> the masked language model's top tokens for each span."""
Search = Generator[Request, object, Outcome]


@dataclass
class Budget:
    """Queries left to one attack."""

    left: int
    used: int = 1  # the original text, classified before any attack

    def take(self, items: list) -> list:
        items = items[:max(0, self.left)]
        self.left -= len(items)
        self.used += len(items)
        return items


def attackable(t: Target) -> list[int]:
    """Indices of the words an attack may change: letters only, not stop-words."""
    return [i for i, w in enumerate(t.pieces.words) if editable(w) and w.lower() not in STOPWORDS]


def most_changed(t: Target, cfg: AttackConfig) -> int:
    return max(1, math.floor(cfg.max_perturbed * t.words))


def rank_words(t: Target, words: list[int], budget: Budget) -> Generator[Request, object, list[int]]:
    """words, most important first: by how much deleting each lowers the gold label's probability (a word whose
    deletion would leave no text counts as most important; words the budget left unasked come last)."""
    texts = {i: t.pieces.without(i) for i in words}
    asked = budget.take([i for i in words if texts[i].strip()])
    drop = {i: t.before[t.gold] for i in words if not texts[i].strip()}
    if asked:
        probs = yield "classify", [texts[i] for i in asked]
        drop |= {i: t.before[t.gold] - p[t.gold] for i, p in zip(asked, probs)}
    return sorted(words, key=lambda i: (-drop.get(i, -np.inf), i))


def charnoise(t: Target, edits: int, rng: random.Random) -> Search:
    """Natural noise: `edits` random typos, one query."""
    perturbed = noisy(t.pieces, edits, rng)
    probs = yield "classify", [perturbed.text]
    return _outcome(f"charnoise-{edits}", t, perturbed, probs[0], 2)


def deepwordbug(t: Target, cfg: AttackConfig, rng: random.Random) -> Search:
    budget = Budget(cfg.max_queries - 1)
    order = yield from rank_words(t, attackable(t), budget)
    alphabet = "".join(ch for w in t.pieces.words if editable(w) for ch in w)
    current, after = t.pieces, t.before
    for i in order:
        if len(t.pieces.changed(current)) >= most_changed(t, cfg):
            break
        word = current.words[i]
        tries = dict.fromkeys(new for kind in DEEPWORDBUG
                              if (new := edit(word, kind, rng, alphabet)) is not None and new != word)
        candidates = budget.take([current.replace(i, new) for new in tries])
        if not candidates:
            if budget.left <= 0:
                break
            continue
        probs = yield "classify", [c.text for c in candidates]
        best = min(range(len(candidates)), key=lambda j: (int(probs[j].argmax()) == t.gold, probs[j][t.gold]))
        if probs[best][t.gold] < after[t.gold] or int(probs[best].argmax()) != t.gold:
            current, after = candidates[best], probs[best]
            if int(after.argmax()) != t.gold:
                break
    return _outcome("deepwordbug", t, current, after, budget.used)


def bae(t: Target, cfg: AttackConfig) -> Search:
    budget = Budget(cfg.max_queries - 1)
    order = yield from rank_words(t, attackable(t), budget)
    _, origin = yield "read", [t.pieces.text]  # the original's sentence vector (its prediction is known)
    current, after = t.pieces, t.before
    for i in order:
        if len(t.pieces.changed(current)) >= most_changed(t, cfg) or budget.left <= 0:
            break
        word = current.words[i]
        start, end = current.span(i)
        tokens = (yield "fill", [(current.text, start, end)])[0]
        options = list(dict.fromkeys(match_case(c, word) for c in tokens if replaces(c, word)))
        if not options:
            continue
        candidates = [current.replace(i, w) for w in options]
        probs, vectors = yield "read", [c.text for c in candidates]
        similar = vectors @ origin[0]
        # The constraint comes first: only the candidates it keeps are looked at, and counted as queries.
        kept = budget.take([j for j in range(len(candidates)) if similar[j] >= cfg.similarity])
        if not kept:
            continue
        flipped = [j for j in kept if int(probs[j].argmax()) != t.gold]
        if flipped:  # BAE: of the texts that flip the label, the one most like the original
            j = max(flipped, key=lambda j: similar[j])
            return _outcome("bae", t, candidates[j], probs[j], budget.used)
        j = min(kept, key=lambda j: probs[j][t.gold])
        if probs[j][t.gold] < after[t.gold]:
            current, after = candidates[j], probs[j]
    return _outcome("bae", t, current, after, budget.used)


def replaces(token: str | None, word: str) -> bool:
    """Whether a masked-LM token may stand in for word: a whole word (no ##piece), letters only, not a stop-word,
    not the word itself, and of the same script (a Chinese character for a Chinese character)."""
    return (token is not None and not token.startswith("##") and token.isalpha()
            and token.lower() not in STOPWORDS and token.lower() != word.lower()
            and is_cjk(token[0]) == is_cjk(word[0]))


def match_case(token: str, word: str) -> str:
    """token written in the case of word (an uncased model's fillers are lower case)."""
    if len(word) > 1 and word.isupper():
        return token.upper()
    return token[:1].upper() + token[1:] if word[:1].isupper() else token


def _outcome(recipe: str, t: Target, perturbed: Pieces, after: np.ndarray, queries: int) -> Outcome:
    result = "successful" if int(after.argmax()) != t.gold else "failed"
    return Outcome(recipe, t, result, perturbed, np.asarray(after), queries)


# ---- running them -----------------------------------------------------------------------------------------

class Oracle:
    """Answers the searches' requests in batches, through the inference layer's length-sorted, unpadded forward:
    the victim's probabilities; its probabilities and sentence vectors from one encoder pass ("read": BAE's
    constraint and its queries at the cost of one); a masked language model's fillers."""

    def __init__(self, victim: TextClassifier, mlm: FillMask | None, cfg: AttackConfig):
        self.victim, self.mlm, self.cfg = victim, mlm, cfg
        self.both = ProbsAndVector(victim.model)

    def classify(self, texts: list[str]) -> np.ndarray:
        return self.victim.logits(texts, batch_size=self.cfg.batch_size).softmax(-1).numpy()

    def read(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, L) probabilities and (n, C) unit sentence vectors (mean of the last hidden states); a text read as
        windows gets its windows' pooled logits and mean vector."""
        v, r = self.victim, self.victim.reading
        items = encode_texts(v.tokenizer, texts, None, r.max_length, r.window_stride)
        outputs = forward(self.both, items, v.tokenizer.pad_id, self.cfg.batch_size)
        L = len(v.labels)
        _, logits = pool_windows(items, [o[:L] for o in outputs], r.window_pool)
        _, vectors = pool_windows(items, [o[L:] for o in outputs], "mean")
        return (torch.stack(logits).softmax(-1).numpy(),
                torch.nn.functional.normalize(torch.stack(vectors), dim=-1).numpy())

    def fill(self, spans: list[tuple[str, int, int]]) -> list[list[str]]:
        return fill_candidates(self.mlm, spans, self.cfg.candidates, self.cfg.batch_size)


class ProbsAndVector(nn.Module):
    """A sequence classifier whose output is its logits (B, L) and, beside them, the mean of its last hidden
    states (B, C): both from one pass of the encoder (every token of the last layer computed, not [CLS] only)."""

    task = "sequence_classification"

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.source = getattr(classifier, "source", "the model")  # named by errors about what it computes

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        c = self.classifier
        out = c.bert(input_ids, attention_mask, token_type_ids)
        logits = c.classifier(c.dropout(out.pooled))  # (B, L), as BertForSequenceClassification computes them
        m = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1)
        mean = (out.hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
        return torch.cat([logits, mean.to(logits.dtype)], dim=-1)  # (B, L + C)


def run_searches(searches: Iterable[Search], oracle: Oracle, total: int, desc: str = "attack",
                 progress: bool = True) -> list[Outcome]:
    """Run the searches, CONCURRENT at a time; each round, every request of a kind goes to the oracle in one
    call. Outcomes come back in the searches' order."""
    pending = enumerate(searches)
    active: dict[int, tuple[Search, Request]] = {}
    done: dict[int, Outcome] = {}
    bar = tqdm(total=total, desc=desc, unit="text", disable=not progress, dynamic_ncols=True)

    def advance(i: int, search: Search, answer) -> None:
        try:
            active[i] = (search, search.send(answer))
        except StopIteration as stop:
            done[i] = stop.value
            active.pop(i, None)
            bar.update(1)

    while True:
        while len(active) < CONCURRENT:
            nxt = next(pending, None)
            if nxt is None:
                break
            advance(nxt[0], nxt[1], None)
        if not active:
            break
        asked = list(active.items())
        for kind in ("classify", "read", "fill"):
            mine = [(i, s, payload) for i, (s, (k, payload)) in asked if k == kind]
            if not mine:
                continue
            answers = getattr(oracle, kind)([p for _, _, payload in mine for p in payload])
            at = 0
            for i, search, payload in mine:
                part = slice(at, at + len(payload))
                advance(i, search, tuple(a[part] for a in answers) if isinstance(answers, tuple) else answers[part])
                at += len(payload)
    bar.close()
    return [done[i] for i in sorted(done)]


def summarize(outcomes: list[Outcome]) -> dict:
    """TextAttack's summary of one recipe: counts, original accuracy ((total - skipped) / total), accuracy under
    attack (failed / total), attack success rate (successful / attacked), the perturbed-word share of the
    successful attacks (%), words per input, and queries per attacked text."""
    n = len(outcomes)
    won = [o for o in outcomes if o.result == "successful"]
    lost = [o for o in outcomes if o.result == "failed"]
    attacked = won + lost
    return {"examples": n, "successful": len(won), "failed": len(lost), "skipped": n - len(attacked),
            "clean_accuracy": len(attacked) / n if n else 0.0,
            "accuracy_under_attack": len(lost) / n if n else 0.0,
            "success_rate": len(won) / len(attacked) if attacked else 0.0,
            "perturbed_word_pct": float(np.mean([100 * len(o.changed) / max(1, o.target.words) for o in won]))
            if won else 0.0,
            "words_per_input": float(np.mean([o.target.words for o in outcomes])) if n else 0.0,
            "avg_queries": float(np.mean([o.queries for o in attacked])) if attacked else 0.0}


@dataclass
class AttackRun:
    """Everything `attack` found: per recipe the outcomes, its summary and its wall time."""

    model: str
    labels: list[str]
    config: AttackConfig
    outcomes: dict[str, list[Outcome]]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, dict]:
        return {name: summarize(out) | {"seconds": round(self.seconds.get(name, 0.0), 2)}
                for name, out in self.outcomes.items()}

    def save(self, out: str | Path) -> Path:
        """attack.json, attack.md (TextAttack's table per recipe), adversarial.jsonl, attack.html."""
        from bertkit.robust.report import write_attack_report
        return write_attack_report(self, Path(out))


def attack(model: str | Path | TextClassifier, texts: list[str], labels: list[str], *,
           mlm: str | Path | FillMask | None = None, config: AttackConfig | None = None,
           progress: bool = True) -> AttackRun:
    """Attack a single-label classifier on labelled texts with each recipe of config (see the module's doc).
    mlm: a masked language model of the same vocabulary for bae; default the classifier folder's own MLM head,
    if it has one."""
    cfg = config or AttackConfig()
    victim = _victim(model)
    masked_lm = _masked_lm(victim, model, mlm) if "bae" in cfg.recipes else None
    if len(texts) != len(labels) or not texts:
        raise BertkitError(f"give one label per text (got {len(texts)} texts and {len(labels)} labels)")
    unknown = sorted(set(labels) - set(victim.labels))
    if unknown:
        raise BertkitError(f"label {unknown[0]!r} is not one of the model's ({', '.join(victim.labels)})")
    oracle = Oracle(victim, masked_lm, cfg)
    before = oracle.classify(texts)
    targets = [Target(i, Pieces.split(victim.tokenizer, text), victim.labels.index(y), p)
               for i, (text, y, p) in enumerate(zip(texts, labels, before))]
    correct = [t for t in targets if t.correct]
    runs: dict[str, list[Outcome]] = {}
    seconds: dict[str, float] = {}
    for recipe in cfg.recipes:
        names = [f"charnoise-{k}" for k in NOISE_EDITS] if recipe == "charnoise" else [recipe]
        for name in names:
            start = time.perf_counter()
            searches = (_search(name, t, cfg) for t in correct)
            found = {o.target.index: o for o in run_searches(searches, oracle, len(correct), name, progress)}
            runs[name] = [found.get(t.index) or Outcome(name, t, "skipped") for t in targets]
            seconds[name] = time.perf_counter() - start
    return AttackRun(str(getattr(victim.model, "source", model)), victim.labels, cfg, runs, seconds,
                     list(victim.notes))


def _victim(model: str | Path | TextClassifier) -> TextClassifier:
    victim = model if isinstance(model, TextClassifier) else TextClassifier.load(model)
    if victim.problem_type != "single_label":
        raise BertkitError(f"attacks need a single-label classifier; {getattr(victim.model, 'source', model)} is "
                           f"{victim.problem_type}")
    return victim


def _search(name: str, t: Target, cfg: AttackConfig) -> Search:
    rng = random.Random(f"{cfg.seed}:{name}:{t.index}")  # per text, so a sample's texts are attacked alike
    if name.startswith("charnoise-"):
        return charnoise(t, int(name.split("-")[1]), rng)
    if name == "deepwordbug":
        return deepwordbug(t, cfg, rng)
    return bae(t, cfg)


def _masked_lm(victim: TextClassifier, model, mlm) -> FillMask:
    need = "bae needs a masked language model of the classifier's vocabulary: give --mlm MODEL_DIR"
    if isinstance(mlm, FillMask):
        masked_lm = mlm
    elif mlm is not None:
        masked_lm = load_masked_lm(mlm, need)
    elif isinstance(model, (str, Path)):
        masked_lm = load_masked_lm(model, need)
    else:
        raise BertkitError(need)
    if masked_lm.tokenizer.vocab() != victim.tokenizer.vocab():
        raise BertkitError(f"{mlm}: its vocabulary differs from the classifier's; bae needs a masked language "
                           "model of the same vocabulary")
    return masked_lm


def attack_file(model: str | Path | TextClassifier, path: str | Path, *, text_column: str = "text",
                label_column: str = "label", mlm=None, config: AttackConfig | None = None,
                progress: bool = True) -> AttackRun:
    """`attack` on a labelled CSV/TSV/JSON-lines file (a seeded sample of config.limit rows when set)."""
    from bertkit.data.tasks import read_examples
    cfg = config or AttackConfig()
    victim = _victim(model)  # a bad model fails before the data is read
    examples = read_examples(path, text_column=text_column, label_column=label_column)
    if cfg.limit and len(examples) > cfg.limit:
        examples = [examples[i] for i in sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.limit))]
    unknown = [e for e in examples if e.label not in victim.labels]
    if unknown:
        raise BertkitError(f"{path}:{unknown[0].line}: label {unknown[0].label!r} is not one the model knows "
                           f"({', '.join(victim.labels)})")
    source = mlm if mlm is not None else model
    return attack(victim, [e.text for e in examples], [e.label for e in examples],
                  mlm=_masked_lm(victim, source, mlm) if "bae" in cfg.recipes else None, config=cfg,
                  progress=progress)
