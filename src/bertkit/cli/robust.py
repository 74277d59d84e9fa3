"""Robustness verbs: `attack` (adversarial attacks on a classifier) and `bias` (invariance tests of a classifier,
stereotype preference of a masked language model)."""

from __future__ import annotations

import argparse

from bertkit.cli.common import LABEL_COLUMN_HELP, TEXT_COLUMN_HELP, add_overwrite, add_quiet, add_threads
from bertkit.cli.options import add_fields, given
from bertkit.folders import claim, mark
from bertkit.options import NON_NEGATIVE_INT, POSITIVE_INT

ATTACK_FIELDS = ["recipe", "limit", "max_queries", "max_perturbed", "candidates", "similarity", "batch_size", "seed"]


def register(verbs) -> None:
    from bertkit.robust.attacks import AttackConfig
    at = verbs.add_parser("attack", help="adversarial attacks on a classifier: charnoise, deepwordbug, bae "
                          "(TextAttack-style table, adversarial examples, HTML)")
    at.add_argument("model", help="a single-label sequence-classification model directory")
    at.add_argument("--input", required=True, help="labelled CSV/TSV/JSON lines; only texts the model gets right "
                    "are attacked")
    at.add_argument("--out", required=True, help="directory: attack.json, attack.md, adversarial.jsonl, attack.html")
    at.add_argument("--mlm", metavar="MODEL_DIR", help="bae: a masked language model of the same vocabulary "
                    "(default: the model folder's own MLM head, if it has one)")
    add_fields(at, AttackConfig, ATTACK_FIELDS)
    at.add_argument("--text-column", default="text", help=TEXT_COLUMN_HELP)
    at.add_argument("--label-column", default="label", help=LABEL_COLUMN_HELP)
    add_quiet(at)
    add_overwrite(at)
    add_threads(at)
    at.set_defaults(func=attack)

    bi = verbs.add_parser("bias", help="bias tests: invariance of a classifier to names, pronouns, nationalities, "
                          "religions; stereotype preference of a masked language model")
    bi.add_argument("model", help="a single-label classifier or a masked language model directory")
    bi.add_argument("--input", help="classifier: texts (CSV/TSV/JSON lines) whose terms are swapped, besides the "
                    "templates; masked LM: JSON lines of sentence pairs {stereo, anti, category} instead of the "
                    "shipped ones")
    bi.add_argument("--out", required=True, help="directory: bias.json, bias.md, bias.png")
    bi.add_argument("--lang", default="auto", choices=["auto", "en", "zh"],
                    help="which lists, templates and pairs (auto: from the input's text, else the vocabulary)")
    bi.add_argument("--per-group", type=POSITIVE_INT, default=2,
                    help="classifier: terms of each other group swapped in per case (default 2)")
    bi.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="texts per forward pass (default 64)")
    bi.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="fixes which terms are swapped in (default 0)")
    bi.add_argument("--text-column", default="text", help=TEXT_COLUMN_HELP)
    add_quiet(bi)
    add_overwrite(bi)
    add_threads(bi)
    bi.set_defaults(func=bias)


def attack(args: argparse.Namespace) -> None:
    from bertkit.robust.attacks import AttackConfig, attack_file
    out = claim(args.out, "attack", overwrite=args.overwrite, inputs=[args.model, *filter(None, [args.mlm])])
    cfg = AttackConfig(**given(args, AttackConfig, ATTACK_FIELDS))
    run = attack_file(args.model, args.input, text_column=args.text_column, label_column=args.label_column,
                      mlm=args.mlm, config=cfg, progress=not args.quiet)
    run.save(out)
    mark(out, "attack")
    for note in run.notes:
        print(f"note: {note}")
    from bertkit.robust.report import attack_tables
    print(attack_tables(run.summary).split("\n\n")[0])
    print(f"wrote {out / 'attack.md'}, attack.json, adversarial.jsonl, attack.html")


def bias(args: argparse.Namespace) -> None:
    from bertkit.robust.bias import bias as run_bias
    from bertkit.robust.report import crows_tables, invariance_tables, write_bias_report
    out = claim(args.out, "bias", overwrite=args.overwrite, inputs=[args.model])
    result = run_bias(args.model, input_file=args.input, lang=args.lang, per_group=args.per_group, seed=args.seed,
                      batch_size=args.batch_size, text_column=args.text_column, progress=not args.quiet)
    write_bias_report(result, out)
    mark(out, "bias")
    tables = crows_tables(result) if result["kind"] == "crows" else invariance_tables(result)
    print(tables.split("\n## ")[0].strip())
    print(f"wrote {out / 'bias.md'}, bias.json, bias.png")
