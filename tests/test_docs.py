"""Every `bertkit ...` command in README.md and docs/*.md parses as written: the verb exists and every option is one
that verb takes, with a valid value. A renamed verb or flag, a dropped choice or a typo in the docs fails here.

Commands are taken from fenced code blocks other than Python/JSON/TOML, a line at a time (continuations joined,
comments dropped, `a && b` split); they are parsed by the real parser, not run."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from bertkit.cli import build_parser
from bertkit.errors import BertkitError

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_SHELL = {"python", "py", "json", "toml", "text", "html", "js", "javascript", "yaml"}


def doc_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of each `bertkit ...` command in the page's shell blocks."""
    out, lang, inside, pending, start = [], "", False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence:
            inside, lang = not inside, fence.group(1).lower()
            continue
        if not inside or lang in NOT_SHELL:
            continue
        text = line.strip()
        if pending:
            pending += " " + text.removesuffix("\\")
            if not text.endswith("\\"):
                out.append((start, pending))
                pending = ""
            continue
        for part in re.split(r"&&| \| |; ", text):
            part = part.strip().removeprefix("$ ")
            if not re.match(r"(bertkit|python -m bertkit\.cli) ", part):
                continue
            if part.endswith("\\"):
                pending, start = part.removesuffix("\\"), number
            else:
                out.append((number, part))
    return out


COMMANDS = [(path, number, command) for path in PAGES for number, command in doc_commands(path)]


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 50  # the collector finds them (a broken collector would pass every case below)
    assert {p.name for p, _, _ in COMMANDS} >= {"README.md", "ecosystem.md"}


@pytest.mark.parametrize("path,number,command", COMMANDS,
                         ids=[f"{p.name}:{n}" for p, n, _ in COMMANDS])
def test_doc_command_parses(path, number, command):
    words = shlex.split(command, comments=True)
    words = words[1:] if words[0] == "bertkit" else words[3:]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(words)
    except BertkitError as e:  # bertkit's parser reports a bad option as a one-line error
        pytest.fail(f"{path.name}:{number}: {command}\n{e}")
    except SystemExit as e:
        if e.code:  # --help and --version exit 0
            pytest.fail(f"{path.name}:{number}: {command}\n{errors.getvalue().strip()}")


def test_a_wrong_flag_fails_the_check(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\nbertkit predict MODEL --text hi --no-such-flag\n```\n", encoding="utf-8")
    (number, command), = doc_commands(page)
    assert number == 4
    with pytest.raises((SystemExit, BertkitError)), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(shlex.split(command)[1:])
