"""Robustness on rt-polarity: clean accuracy and accuracy under each attack, for all-MiniLM-L6-v2 fine-tuned plainly,
with FGM or PGD adversarial training, and with typo augmentation.

    bertkit data get rt-polarity                                            # data/rt-polarity/{train,dev,test}.csv
    python benchmarks/robustness_rt.py --data data/rt-polarity              # fine-tunes the four models, then attacks
    python benchmarks/robustness_rt.py --data data/rt-polarity --model plain=runs/rt/model   # attack existing models
    python benchmarks/robustness_rt.py --data data/rt-polarity --mlm DIR    # bae too: a masked LM of MiniLM's vocabulary

Each model is fine-tuned like the README's run (lr 5e-5, batch 32, 3 epochs, max length 128, best dev epoch, seed 0;
`--bf16` for bf16 autocast), once plainly and once each with `--adversarial fgm`, `--adversarial pgd` and
`--augment-noise 0.5`, into --work; a model already there is reused. Every model is then attacked on the same
seeded sample of --n test reviews (500) with charnoise (1 and 2 typos), deepwordbug and, given --mlm (an uncased
BERT masked LM: all-MiniLM-L6-v2 has no MLM head), bae. Prints one Markdown table: clean accuracy, accuracy under
each attack, the charnoise accuracy drop (clean - 2 typos), fine-tuning and attack wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {"plain": {}, "fgm": {"adversarial": "fgm"}, "pgd": {"adversarial": "pgd"},
            "noise": {"augment_noise": 0.5}}
"""FinetuneConfig options of each model."""


def fine_tuned(name: str, base: Path, data: Path, work: Path, args) -> tuple[Path, float]:
    """A model fine-tuned with VARIANTS[name] (reused when --work already holds it), and the seconds it took."""
    from bertkit.finetune import FinetuneConfig, finetune
    from bertkit.inference import Reading
    out = work / name
    if (out / "timing.json").is_file():  # written last, once the model is there
        return out / "model", json.loads((out / "timing.json").read_text())["seconds"]
    cfg = FinetuneConfig(reading=Reading(max_length=128), batch_size=32, epochs=args.epochs, seed=0,
                         **VARIANTS[name])
    t0 = time.perf_counter()
    finetune(base, out, cfg, {"lr": 5e-5, "best_metric": "accuracy", "bf16": args.bf16}, data / "train.csv",
             data / "dev.csv", data / "test.csv", progress=True)
    seconds = time.perf_counter() - t0
    (out / "timing.json").write_text(json.dumps({"seconds": seconds}) + "\n")
    return out / "model", seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="train.csv, dev.csv, test.csv (text,label)")
    ap.add_argument("--base", type=Path, help="the model to fine-tune (default: all-MiniLM-L6-v2 from the catalog)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                    help="attack this fine-tuned model instead of training NAME (repeatable)")
    ap.add_argument("--only", default=",".join(VARIANTS), help="variants to run (default: all four)")
    ap.add_argument("--mlm", type=Path, help="a masked LM of the same vocabulary, for bae")
    ap.add_argument("--n", type=int, default=500, help="test reviews attacked (a seeded sample)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("runs/robustness-rt"), help="fine-tuned models and attacks")
    args = ap.parse_args()
    import torch

    from bertkit import hardware
    from bertkit.robust import AttackConfig, attack_file
    print(hardware.summary(hardware.describe("cuda" if torch.cuda.is_available() else "cpu")), flush=True)
    given = dict(m.split("=", 1) for m in args.model)
    names = [n for n in args.only.split(",") if n in VARIANTS or n in given] + [n for n in given if n not in VARIANTS]
    recipe = "charnoise,deepwordbug" + (",bae" if args.mlm else "")
    rows = {}
    for name in names:
        if name in given:
            model, train_s = Path(given[name]), float("nan")
        else:
            from bertkit.data.catalog import minilm_l6
            model, train_s = fine_tuned(name, args.base or minilm_l6(), args.data, args.work, args)
        t0 = time.perf_counter()
        run = attack_file(model, args.data / "test.csv", mlm=args.mlm,
                          config=AttackConfig(recipe=recipe, limit=args.n, seed=0), progress=True)
        run.save(args.work / f"attack-{name}")
        rows[name] = (run.summary, train_s, time.perf_counter() - t0)
    threads = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} threads"
    attacks = [a for a in ("charnoise-1", "charnoise-2", "deepwordbug", "bae") if args.mlm or a != "bae"]
    base = args.base.name if args.base else "all-MiniLM-L6-v2"
    print(f"{args.data.name} test, {args.n} reviews (seeded sample), {base}, {threads}; accuracy under attack")
    print("| model | clean | " + " | ".join(attacks) + " | charnoise drop (2 typos) | fine-tune (s) | attacks (s) |")
    print("|---|---|" + "---|" * len(attacks) + "---|---|---|")
    for name, (summary, train_s, attack_s) in rows.items():
        clean = summary["charnoise-1"]["clean_accuracy"]
        cells = " | ".join(f"{summary[a]['accuracy_under_attack']:.1%}" for a in attacks)
        drop = clean - summary["charnoise-2"]["accuracy_under_attack"]
        print(f"| {name} | {clean:.1%} | {cells} | {100 * drop:.1f} points | {train_s:.0f} | {attack_s:.0f} |")


if __name__ == "__main__":
    main()
