"""bertkit.hardware: the one decision of torch's thread count (and `--threads`, which routes through it), the
/proc/cpuinfo parser, the matmul peak's arithmetic and the busy neighbour that benchmarks start and must clean up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit import hardware
from bertkit.cli import _verbs, build_parser, main
from bertkit.errors import BertkitError


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def three_cpus(monkeypatch):
    """This process may use CPUs 0, 3 and 5 only (a taskset or container limit); OMP_NUM_THREADS unset."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


# ---- the thread decision -------------------------------------------------------------------------------------------

def test_default_threads_follow_affinity_not_the_machine(three_cpus, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert hardware.available_cpus() == 3
    assert hardware.default_threads() == 3


@pytest.mark.parametrize("value, expected", [("1", 1), ("4", 4), ("4,2", 4), (" 2 ", 2), ("0", 3), ("-1", 3),
                                             ("many", 3), ("", 3)])
def test_default_threads_take_a_valid_omp_num_threads(three_cpus, monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert hardware.default_threads() == expected


def test_available_cpus_without_affinity_uses_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert hardware.available_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert hardware.available_cpus() == 1


def test_use_threads_sets_torch_and_returns_the_count(three_cpus):
    assert hardware.use_threads(1) == 1 and torch.get_num_threads() == 1
    assert hardware.use_threads(None) == 3 and torch.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_use_threads_refuses_a_non_positive_count(bad):
    before = torch.get_num_threads()
    with pytest.raises(BertkitError, match=r"^threads must be a positive integer, got "):
        hardware.use_threads(bad)
    assert torch.get_num_threads() == before


# ---- --threads on the command line ---------------------------------------------------------------------------------

MODEL_VERBS = {"pretrain", "finetune", "distill", "predict", "evaluate", "explain", "embed", "attack", "bias", "demo",
               "serve"}


def test_every_verb_that_runs_a_model_takes_threads():
    with_threads = {name for name, sub in _verbs(build_parser()).items()
                    if any("--threads" in a.option_strings for a in sub._actions)}
    assert with_threads == MODEL_VERBS


def test_threads_option_parses_to_an_int():
    args = build_parser().parse_args(["predict", "m", "--text", "x", "--threads", "3"])
    assert args.threads == 3
    assert build_parser().parse_args(["predict", "m", "--text", "x"]).threads is None


@pytest.mark.parametrize("bad, shown", [("0", "0"), ("-1", "-1"), ("1.5", "'1.5'"), ("two", "'two'")])
def test_threads_below_one_is_a_one_line_error(bad, shown, capsys):
    assert main(["finetune", "m", "--train", "t.csv", "--out", "o", "--threads", bad]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: finetune: argument --threads: must be a positive integer, got {shown}\n"


def test_main_applies_threads_before_the_verb_runs(tmp_path, capsys):
    # the verb fails (no such model), but torch's threads were set before it ran
    assert main(["predict", str(tmp_path / "missing"), "--text", "x", "--threads", "1"]) == 2
    assert torch.get_num_threads() == 1


def test_main_applies_the_affinity_default(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert main(["predict", str(tmp_path / "missing"), "--text", "x"]) == 2
    assert torch.get_num_threads() == 1


def test_threads_from_a_config_file_is_checked(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"threads": 0}))
    assert main(["evaluate", "m", "--input", "t.csv", "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"bertkit: error: {config}: threads must be a positive integer, got 0\n"


# ---- the CPU ---------------------------------------------------------------------------------------------------------

def _x86_cpuinfo() -> str:
    """Two cores with two hyperthreads each: processors 0 and 2 share core 0, 1 and 3 share core 1."""
    flags = "fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16"
    blocks = []
    for processor, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        blocks.append(f"processor\t: {processor}\nvendor_id\t: GenuineIntel\n"
                      "model name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 0\nsiblings\t: 4\n"
                      f"core id\t\t: {core}\ncpu cores\t: 2\nflags\t\t: {flags}\n")
    return "\n".join(blocks) + "\n"


def test_parse_cpuinfo_reads_model_flags_and_cores():
    info = hardware.parse_cpuinfo(_x86_cpuinfo())
    assert info == {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": hardware.ISA_FLAGS, "cpus": 4, "cores": 2}


def test_parse_cpuinfo_counts_cores_under_the_affinity():
    assert hardware.parse_cpuinfo(_x86_cpuinfo(), allowed={0, 2})["cores"] == 1  # two hyperthreads of one core
    assert hardware.parse_cpuinfo(_x86_cpuinfo(), allowed={0, 1})["cores"] == 2


def test_parse_cpuinfo_keeps_isa_order_and_only_the_listed_flags():
    text = "processor : 0\nmodel name : AMD EPYC 7B13\nflags : avx512_bf16 sse4_2 avx2 avx512f\n"
    assert hardware.parse_cpuinfo(text) == {"model": "AMD EPYC 7B13", "isa": ("avx2", "avx512f", "avx512_bf16"),
                                            "cpus": 1, "cores": None}


def test_parse_cpuinfo_arm_and_empty():
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\n\nprocessor\t: 1\nFeatures\t: fp asimd sve\n"
    assert hardware.parse_cpuinfo(arm) == {"model": "", "isa": (), "cpus": 2, "cores": None}
    assert hardware.parse_cpuinfo("") == {"model": "", "isa": (), "cpus": 0, "cores": None}


def test_cpu_without_proc_cpuinfo_is_graceful(tmp_path, three_cpus, monkeypatch):
    monkeypatch.setattr(hardware.platform, "processor", lambda: "arm")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert hardware.cpu(tmp_path / "no-cpuinfo") == hardware.Cpu("arm", (), cpus=8, available=3, cores=None)


def test_cpu_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(_x86_cpuinfo())
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 3}, raising=False)
    assert hardware.cpu(path) == hardware.Cpu("Intel(R) Xeon(R) Platinum 8480+", hardware.ISA_FLAGS, cpus=4,
                                              available=2, cores=1)


# ---- measuring -------------------------------------------------------------------------------------------------------

def test_matmul_peak_is_flops_over_the_median_time(monkeypatch):
    clock = iter(range(100))  # each reading 1 s after the last: the one timed product takes 1 s
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: float(next(clock)))
    assert hardware.matmul_peak(torch.float32, seconds=0.0, n=100) == pytest.approx(2 * 100 ** 3 / 1e9)


def test_matmul_peak_measures_a_plausible_rate():
    gflops = hardware.matmul_peak(torch.float32, seconds=0.05, n=128)
    assert 0.05 < gflops < 1e5


def test_summary_names_cpu_isa_cores_threads_and_peaks():
    machine = {"model": "AMD EPYC", "isa": ("avx2", "avx512f", "avx512_bf16", "avx512_vnni"), "cpus": 4,
               "available": 2, "cores": 2, "threads": 2, "torch": "2.13.0", "gpu": None,
               "peak_gflops": {"fp32": 310.4, "bf16": 1234.5}}
    assert hardware.summary(machine) == (
        "machine: AMD EPYC; avx2 avx512f avx512_bf16 avx512_vnni (no amx_bf16, amx_int8, amx_tile); 2 of 4 CPUs "
        "available, 2 physical cores; torch 2.13.0 with 2 threads\n"
        "matmul peak measured now (GFLOP/s): fp32 310, bf16 1,234")


# ---- the busy neighbour ----------------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for a reaper that may never come (a container's PID 1)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


@needs_proc
def test_busy_neighbour_burns_cpu_at_our_priority_and_is_killed_at_the_end():
    with hardware.busy_neighbour() as proc:
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        deadline = time.monotonic() + 30
        while _cpu_seconds(proc.pid) < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cpu_seconds(proc.pid) >= 0.05  # spinning, not sleeping
        assert proc.poll() is None
    assert proc.returncode == -signal.SIGKILL
    assert not Path(f"/proc/{proc.pid}").exists()  # killed and reaped


def test_busy_neighbour_is_killed_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with hardware.busy_neighbour() as proc:
            raise KeyboardInterrupt
    assert proc.returncode == -signal.SIGKILL


@needs_proc
def test_busy_neighbour_ends_when_its_benchmark_is_sigkilled():
    script = ("import os, signal, sys\nfrom bertkit.hardware import busy_neighbour\n"
              "with busy_neighbour() as p:\n    print(p.pid, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(hardware.__file__).parents[1])})
    assert parent.returncode == -signal.SIGKILL
    pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 30
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(pid)
