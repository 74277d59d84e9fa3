"""`bertkit env`: what a bug report needs, as `transformers env` gives it, in a second and with nothing downloaded.

Versions (bertkit, Python, torch and how it was built, the optional libraries), the machine (CPU model and the
instruction sets that decide which kernels run, the CPUs this process may use, torch's threads and the environment
variables that change them), the GPU, and the Hugging Face settings. The CPU part is bertkit.hardware's, the same
description benchmarks print. A token is reported as set or not, never its value: the output is meant to be pasted
into a public issue.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

LIBRARIES = ("numpy", "tokenizers", "safetensors", "huggingface_hub", "transformers", "sentence-transformers",
             "fastapi", "uvicorn", "onnx", "onnxruntime", "datasets", "pyarrow", "tensorboard", "wandb", "jieba")
"""The libraries bertkit uses when they are installed (its extras and the reference libraries of its tests)."""
ALTERNATIVES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}
"""Distributions that install the same module under another name."""
THREAD_VARIABLES = ("OMP_", "MKL_", "KMP_", "ONEDNN_", "DNNL_", "TORCH_", "CUDA_VISIBLE_DEVICES",
                    "TOKENIZERS_PARALLELISM")
"""Environment variables (by prefix) that change threads, kernels or the devices seen; their values are shown."""


def version() -> str:
    """bertkit's version: the one in bertkit/__init__.py, which the package's metadata also takes (pyproject)."""
    from bertkit import __version__
    return __version__


def library_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    for dist in ALTERNATIVES.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict:
    """Everything `bertkit env` reports, as a JSON-ready dict."""
    import torch

    from bertkit.hardware import ISA_FLAGS, cgroup_cpus, cpu, default_threads
    c = cpu()
    build = ("CUDA " + torch.version.cuda if torch.version.cuda else
             "ROCm " + torch.version.hip if getattr(torch.version, "hip", None) else "CPU only")
    return {
        "bertkit": version(),
        "python": f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, "build": build,
                  "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available()},
        "cpu": {"model": c.model, "flags": list(c.isa), "lacks": [f for f in ISA_FLAGS if f not in c.isa],
                "logical": c.cpus, "os_cpu_count": os.cpu_count(), "available": c.available,
                "physical_cores": c.cores, "cgroup_quota": cgroup_cpus()},
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "bertkit_default": default_threads()},
        "variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_VARIABLES)},
        "gpu": _gpus(torch),
        "libraries": {name: library_version(name) for name in LIBRARIES},
        "hugging_face": _hugging_face(),
    }


def _gpus(torch) -> list[dict]:
    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append({"device": f"cuda:{i}", "name": props.name,
                        "memory_gib": round(props.total_memory / 2 ** 30, 1),
                        "capability": f"{props.major}.{props.minor}"})
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append({"device": "mps", "name": "Apple Metal (MPS)", "memory_gib": None, "capability": None})
    return out


def _hugging_face() -> dict:
    """The cache and the switches huggingface_hub reads; whether a token is there, never the token."""
    from huggingface_hub import constants
    return {"cache": constants.HF_HUB_CACHE,
            "offline": constants.is_offline_mode(),
            "HF_TOKEN": "set" if os.environ.get("HF_TOKEN") else "not set",
            "saved_token": "yes" if os.path.isfile(constants.HF_TOKEN_PATH) else "no"}


def markdown(env: dict) -> str:
    """A markdown list of `environment()`, ready to paste into an issue."""
    t, c, th, hf = env["torch"], env["cpu"], env["threads"], env["hugging_face"]
    gpus = "; ".join(f"{g['device']} {g['name']}" + (f", {g['memory_gib']} GiB" if g["memory_gib"] else "")
                     + (f", compute capability {g['capability']}" if g["capability"] else "") for g in env["gpu"])
    quota = f", cgroup quota {c['cgroup_quota']:g} CPUs" if c["cgroup_quota"] else ", no cgroup CPU quota"
    lines = [
        f"bertkit: {env['bertkit']}",
        f"Python: {env['python']}",
        f"Platform: {env['platform']}",
        f"torch: {t['version']} ({t['build']}; oneDNN {'yes' if t['mkldnn'] else 'no'}, "
        f"MKL {'yes' if t['mkl'] else 'no'})",
        f"CPU: {c['model']}",
        f"CPU flags: {' '.join(c['flags']) or 'none of ' + ', '.join(c['lacks'])}"
        + (f" (lacks {' '.join(c['lacks'])})" if c["flags"] and c["lacks"] else ""),
        f"CPUs: {c['available']} available of {c['logical']} logical (os.cpu_count {c['os_cpu_count']}), "
        f"{c['physical_cores'] or 'unknown'} physical cores{quota}",
        f"torch threads: {th['torch']} intra-op, {th['torch_interop']} inter-op; bertkit's default "
        f"{th['bertkit_default']}",
        "Thread variables: " + (", ".join(f"{k}={v}" for k, v in env["variables"].items()) or "none set"),
        f"GPU: {gpus or 'none'}",
        "Libraries: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in env["libraries"].items()),
        f"Hugging Face: cache {hf['cache']}; HF_HUB_OFFLINE {'set' if hf['offline'] else 'not set'}; "
        f"HF_TOKEN {hf['HF_TOKEN']}; saved token {hf['saved_token']}",
    ]
    return "\n".join(f"- {line}" for line in lines)
