"""`bertkit env`: the versions and the machine, for a bug report (`bertkit --version` is on the top parser)."""

from __future__ import annotations

import argparse
import json


def register(verbs) -> None:
    e = verbs.add_parser("env", help="versions, CPU and its flags, threads, GPU and Hugging Face settings, for a bug "
                         "report (a markdown list; tokens are shown as set or not, never their value)")
    e.add_argument("--json", action="store_true", help="as JSON, for machines")
    e.set_defaults(func=env)


def env(args: argparse.Namespace) -> None:
    from bertkit.env import environment, markdown
    described = environment()
    print(json.dumps(described, indent=2, ensure_ascii=False) if args.json else markdown(described))
