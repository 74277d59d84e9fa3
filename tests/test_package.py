"""What a user expects of a package: `bertkit --version` (one version, written once), `bertkit env` for a bug report
(and never a token's value), the licence as an SPDX expression in the built metadata, the `test` extra built from
the others."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bertkit
from bertkit import hardware
from bertkit.cli import main
from bertkit.env import LIBRARIES, environment, markdown

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_secret123"


def test_version_is_the_installed_metadata_and_the_module(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"bertkit {importlib.metadata.version('bertkit')}\n"
    assert bertkit.__version__ == importlib.metadata.version("bertkit")


def test_pyproject_takes_the_version_from_the_module():
    """One place holds the version: pyproject names no version of its own and reads bertkit.__version__."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bertkit.__version__"}


def test_env_prints_every_section_and_only_whether_a_token_is_set(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "HF_TOKEN set" in out
    lines = out.splitlines()
    assert all(line.startswith("- ") for line in lines)  # a markdown list, ready to paste
    heads = [line[2:].split(":", 1)[0] for line in lines]
    assert heads == ["bertkit", "Python", "Platform", "torch", "CPU", "CPU flags", "CPUs", "torch threads",
                     "Thread variables", "GPU", "Libraries", "Hugging Face"]
    assert f"- bertkit: {bertkit.__version__}\n" in out and f"- torch: {torch.__version__} (" in out
    assert "OMP_NUM_THREADS=3" in out
    assert f"- CPU: {hardware.cpu().model}\n" in out
    libraries = out.split("- Libraries: ")[1].splitlines()[0]
    for name in LIBRARIES:
        assert re.search(rf"(^|, ){re.escape(name)} ", libraries), name
    monkeypatch.delenv("HF_TOKEN")
    assert main(["env"]) == 0
    assert "HF_TOKEN not set" in capsys.readouterr().out


def test_env_json_parses_and_says_what_is_installed(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    monkeypatch.setenv("UNRELATED_SETTING", "x")
    assert main(["env", "--json"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    env = json.loads(out)
    assert env["bertkit"] == bertkit.__version__
    assert env["torch"]["version"] == torch.__version__
    cuda, hip = torch.version.cuda, getattr(torch.version, "hip", None)
    assert env["torch"]["build"] == (f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU only")
    assert env["libraries"]["tokenizers"] == importlib.metadata.version("tokenizers")
    assert env["hugging_face"]["HF_TOKEN"] == "set"
    assert env["variables"]["MKL_NUM_THREADS"] == "2" and "UNRELATED_SETTING" not in env["variables"]
    assert env["cpu"]["available"] == hardware.available_cpus() and env["threads"]["torch"] == torch.get_num_threads()
    assert len(env["gpu"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_env_names_a_missing_library_not_installed(monkeypatch):
    monkeypatch.setattr("bertkit.env.LIBRARIES", ("tokenizers", "surely-not-a-bertkit-dependency"))
    env = environment()
    assert env["libraries"] == {"tokenizers": importlib.metadata.version("tokenizers"),
                                "surely-not-a-bertkit-dependency": None}
    assert "surely-not-a-bertkit-dependency not installed" in markdown(env)


def test_env_reads_the_cgroup_quota(tmp_path):
    """A container's CPU quota (cgroup v2 cpu.max, v1 cfs quota/period): torch does not see it, env reports it."""
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert hardware.cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert hardware.cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert hardware.cgroup_cpus(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert hardware.cgroup_cpus(tmp_path) is None
    assert hardware.cgroup_cpus(tmp_path / "absent") is None


def test_env_in_a_fresh_process_touches_no_network(tmp_path):
    """As a user runs it, online (HF_HUB_OFFLINE unset) behind a proxy that refuses every connection: a request
    would fail the command, and none is made."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_TOKEN": SECRET, "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    r = subprocess.run([sys.executable, "-m", "bertkit.cli", "env"], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr and "HF_HUB_OFFLINE not set" in r.stdout


def test_license_and_its_metadata(tmp_path):
    """LICENSE is the Apache License 2.0 word for word (with its appendix), and the built metadata says so as an
    SPDX expression. The metadata comes from setuptools' PEP 517 hook, as pip builds it, without a network."""
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "APPENDIX: How to apply the Apache License to your work." in text
    import hashlib
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"
    project = tmp_path / "project"  # a copy: setuptools writes its egg-info beside the sources
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, project / name)
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=project, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    meta = (tmp_path / r.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0\n" in meta and "License-File: LICENSE\n" in meta
    assert f"Version: {bertkit.__version__}\n" in meta
    assert "Classifier: Topic :: Scientific/Engineering :: Artificial Intelligence\n" in meta
    extra = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and 'extra == "test"' in line]
    assert any(line.startswith("Requires-Dist: bertkit[onnx,serve,zh]") for line in extra), extra
    assert any(line.startswith("Requires-Dist: pytest") for line in extra)


def test_env_describes_each_gpu(monkeypatch):
    """The GPU line as a CUDA machine gives it (stood in for here: the test machine has none; torch's own calls
    are the ones replaced)."""
    from types import SimpleNamespace
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2 ** 30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    env = environment()
    assert [g["device"] for g in env["gpu"]] == ["cuda:0", "cuda:1"] and env["gpu"][0]["memory_gib"] == 80.0
    assert ("- GPU: cuda:0 NVIDIA H100 80GB HBM3, 80.0 GiB, compute capability 9.0; cuda:1 NVIDIA H100 80GB HBM3, "
            "80.0 GiB, compute capability 9.0\n") in markdown(env) + "\n"
