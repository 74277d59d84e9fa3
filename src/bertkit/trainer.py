"""The one training loop: autocast, accumulation, clipping, schedule, evaluation and checkpoint cadence,
stop on steps / tokens / a wall-clock budget, a guard against non-finite losses, exact resume, DDP.

A task plugs in through a small object (see `Task`): it hands out the micro-batches of each optimiser step
and turns one micro-batch into a loss. Everything else is here, once. The model trained is usually the model
saved; a task may instead train a wrapper that names the model to save `saved_model` (distillation: a student
beside a frozen teacher), and then checkpoints hold that model plus the wrapper's other trainable weights.

Exact resume: a checkpoint holds the weights, the optimiser, the step/token/time counters, the global torch
RNG (dropout) and the task's own state (data position, masking RNG). Runs stopped by steps or tokens resume
to the same losses as an uninterrupted run; a wall-clock budget depends on the clock, so it cannot.

Distributed: launched by `torchrun`, the loop joins the process group (gloo on CPU, nccl on GPU), wraps the
model in DistributedDataParallel and skips the gradient all-reduce on every micro-step but the last.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from bertkit.checkpoint import WEIGHTS, load_model, load_state, write_model_files
from bertkit.folders import write_atomically
from bertkit.errors import BertkitError
from bertkit.hardware import adjust, join, rank, resolve_device, world
from bertkit.model.bert import choose_execution
from bertkit.options import at_least, between, check_fields
from bertkit.optim import SCHEDULES, lr_factor, make_optimizer
from bertkit.reporting import open_reporter, parse_report_to


@dataclass
class TrainConfig:
    lr: float = field(default=5e-4, metadata=at_least(0.0, open=True))
    """Peak learning rate."""
    weight_decay: float = field(default=0.01, metadata=at_least(0.0))
    """AdamW's decoupled weight decay (none on biases and LayerNorms)."""
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = field(default=1e-6, metadata=at_least(0.0, open=True))
    warmup: float = field(default=0.06, metadata=between(0.0, 1.0, high_open=True))
    """Fraction of the run spent warming up linearly from 0."""
    schedule: str = "linear"
    """Decay after warmup: linear, cosine (both to 0 at the end of the run) or constant."""
    max_grad_norm: float = field(default=1.0, metadata=at_least(0.0))
    """Clip the global gradient norm to this; 0 turns clipping off."""
    max_steps: int | None = field(default=None, metadata=at_least(1))
    """Stop after this many optimiser steps."""
    max_tokens: int | None = field(default=None, metadata=at_least(1))
    """Stop after this many real (non-padding) tokens, summed over all processes."""
    budget_minutes: float | None = field(default=None, metadata=at_least(0.0, open=True))
    """Stop after this much wall-clock training time; the schedule anneals over exactly this budget."""
    bf16: bool = False
    """bfloat16 autocast (CPU or GPU); weights and optimiser stay fp32."""
    compile: bool = False
    """torch.compile the model."""
    log_every: int = field(default=10, metadata=at_least(1))
    """Steps between lines of metrics.jsonl."""
    eval_every: int = field(default=200, metadata=at_least(1))
    """Steps between evaluations on held-out data (fine-tuning: every epoch unless given)."""
    save_every: int = field(default=200, metadata=at_least(1))
    """Steps between checkpoints (for --resume)."""
    keep_checkpoints: int = field(default=2, metadata=at_least(1))
    """Checkpoints kept on disk, newest first."""
    seed: int = field(default=0, metadata=at_least(0))
    best_metric: str | None = None
    """Evaluation metric that picks the model kept in the run folder's model/ (e.g. macro_f1, or loss); unset:
    the last model (fine-tuning and distillation pick by dev macro-F1, micro-F1 for multi-label, Pearson for
    regression, entity or SQuAD F1)."""
    patience: int = field(default=0, metadata=at_least(0))
    """Stop after this many evaluations without improving the best metric; 0 never stops early."""
    max_bad_steps: int = field(default=20, metadata=at_least(1))
    """Stop with an error after this many consecutive steps with a non-finite loss (each is skipped)."""
    report_to: str = "none"
    """Send metrics.jsonl's numbers to experiment logs too: tensorboard, wandb, both (tensorboard,wandb) or none."""

    def __post_init__(self) -> None:
        check_fields(self)
        if not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas) or len(self.betas) != 2:
            raise BertkitError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (self.max_steps or self.max_tokens or self.budget_minutes):
            raise BertkitError("give at least one stop condition: steps, tokens or a time budget")
        if self.schedule not in SCHEDULES:
            raise BertkitError(f"schedule must be one of {SCHEDULES}")
        if self.patience and not self.best_metric:
            raise BertkitError("early stopping (patience) needs a best_metric to watch")
        parse_report_to(self.report_to)  # an unknown name or a missing package fails before anything is written

    def better(self, new: float, old: float | None) -> bool:
        """Whether `new` improves on `old` for best_metric (losses and errors improve downwards)."""
        lower = any(w in self.best_metric for w in ("loss", "error", "perplexity", "mse", "mae", "ece"))
        return old is None or (new < old if lower else new > old)


@dataclass
class Step:
    """What one optimiser step consumes on this process."""

    micro: list[dict[str, torch.Tensor]]
    tokens: int  # real tokens in the whole step, all processes together
    state: dict = field(default_factory=dict)  # the task's state *after* this step (for checkpoints)


class Task(Protocol):
    def steps(self, state: dict | None, rank: int, world: int) -> Iterator[Step]:
        """Steps from `state` (None: the beginning). Micro-batches are this rank's share of a global batch."""

    def loss(self, model: nn.Module, micro: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch, already scaled so that the sum over the step's micro-batches and the
        mean over processes is the mean over the global batch; and stats to log (summed over micro-batches)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on held-out data."""


@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed runs
    best: float | None = None  # best value of best_metric so far
    bad_evals: int = 0  # evaluations since it last improved


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when launched by torchrun. The device is the process's
    (--device; auto: under torchrun, cuda:LOCAL_RANK when there are GPUs)."""
    device = resolve_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    join("nccl" if device.type == "cuda" else "gloo")
    return rank(), world(), device


def _libc():
    """glibc, or None elsewhere."""
    global _glibc
    if _glibc is None:
        try:
            _glibc = ctypes.CDLL("libc.so.6")
            _glibc.malloc_trim, _glibc.mallopt  # noqa: B018 (both must exist)
        except (OSError, AttributeError):
            _glibc = False
    return _glibc or None


_glibc = None


def _reuse_freed_memory() -> None:
    """Keep freed blocks in the heap for the next step (glibc only; process-wide from then on). glibc hands every
    block over 32 MB straight back to the OS, so a tensor of that size made each step (the word-embedding gradient:
    47 MB for 30k x 384) is page-faulted in again every step: a quarter of a MiniLM fine-tuning step in bf16 on 2
    cores, measured. `_release_freed_memory` still returns what is free, every 50 steps."""
    libc = _libc()
    if libc:
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)  # big blocks come from the heap, so a freed one is reused
        libc.mallopt(m_trim_threshold, 1 << 30)  # and freeing one does not shrink the heap at once


def _release_freed_memory() -> None:
    """Hand memory that was freed back to the OS (glibc only). Batches of varying shape fragment the heap, and
    without this the resident size of a long CPU run creeps up by tens of MB a step."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def _saved(model: nn.Module) -> nn.Module:
    """The model a run writes (checkpoints, best/, model/): the model trained, or the one a training wrapper names
    `saved_model`."""
    return getattr(model, "saved_model", model)


def _extra_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a training wrapper trains besides its saved model (distillation's projections), by name; kept in
    train_state.pt so that a resumed run has them. Frozen weights (a teacher's) are not kept."""
    inner = {id(p) for p in _saved(model).parameters()}
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad and id(p) not in inner}


def checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*"))


def train(model: nn.Module, task: Task, config: TrainConfig, run_dir: str | Path, *, tokenizer=None,
          labels: list[str] | None = None, reading: dict | None = None, resume: bool = False,
          progress_bar: bool = True) -> dict:
    """Train `model` on `task` until a stop condition; write checkpoints, metrics.jsonl and the final model
    (the best one when config.best_metric is set) into run_dir/model, a model directory saved with labels and
    reading (checkpoint.save_model). Returns the last evaluation metrics."""
    run_dir = Path(run_dir)
    rank, world, device = _distributed()
    main = rank == 0
    if device.type == "cpu":
        _reuse_freed_memory()
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, config.betas, config.eps)
    prog = Progress()
    task_state = None
    metrics_file = run_dir / "metrics.jsonl"

    if resume:
        ckpts = checkpoints(run_dir)
        if not ckpts:
            raise BertkitError(f"{run_dir}: nothing to resume (no checkpoints/step_*)")
        prog, task_state = _load_checkpoint(ckpts[-1], model, optimizer)
        if main and metrics_file.is_file():  # forget what was logged after the checkpoint
            keep = [line for line in metrics_file.read_text().splitlines() if json.loads(line)["step"] <= prog.step]
            metrics_file.write_text("".join(line + "\n" for line in keep))
    elif main:
        if checkpoints(run_dir):
            raise BertkitError(f"{run_dir} already holds checkpoints; pass --resume to continue or choose "
                               "another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text("")
    if main:  # the options in force (a forced resume may have changed some)
        (run_dir / "train_config.json").write_text(json.dumps({**asdict(config), "device": str(device),
                                                               "processes": world}, indent=2) + "\n")
    reporter = open_reporter(config.report_to, run_dir, step=prog.step, resume=resume, main=main)

    core = model
    if config.compile:
        model = torch.compile(model)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)

    def progress_of(p: Progress) -> float:
        parts = []
        if config.max_steps:
            parts.append(p.step / config.max_steps)
        if config.max_tokens:
            parts.append(p.tokens / config.max_tokens)
        if config.budget_minutes:
            parts.append(p.elapsed / (60 * config.budget_minutes))
        return max(parts)

    def log(record: dict) -> None:
        if main:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            reporter.log(record)

    def save(final: bool = False) -> None:
        if main:
            _save_checkpoint(run_dir, core, tokenizer, labels, reading, optimizer, prog, task_state,
                             config.keep_checkpoints)
        if world > 1:
            dist.barrier()

    last_eval: dict = {}
    bad_steps = 0
    window_tokens, window_start = 0, time.perf_counter()
    total = config.max_steps if config.max_steps and not (config.max_tokens or config.budget_minutes) else None
    bar = tqdm(total=total, initial=prog.step, desc="train", unit="step", disable=not (main and progress_bar),
               dynamic_ncols=True)
    choose_execution(core, training=True, autocast_bf16=config.bf16, traced=config.compile)
    model.train()
    steps = task.steps(task_state, rank, world)
    t_last = time.perf_counter()
    last_step_s = 0.0
    while progress_of(prog) < 1.0:
        step = next(steps)
        # Progress at the end of this step (its duration guessed from the last one), so a budgeted run's final
        # step already uses the annealed learning rate.
        p_next = progress_of(Progress(prog.step + 1, prog.tokens + step.tokens, prog.elapsed + last_step_s))
        lr = config.lr * lr_factor(p_next, config.warmup, config.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        stats: dict[str, float] = {}
        loss_sum = 0.0
        adjust()  # threads follow the CPUs other processes leave free (bertkit.hardware.Adaptive)
        for i, micro in enumerate(step.micro):
            micro = {k: v.to(device, non_blocking=True) for k, v in micro.items()}
            sync = world == 1 or i == len(step.micro) - 1
            with contextlib.nullcontext() if sync else model.no_sync():  # all-reduce on the last micro-step only
                with autocast:
                    loss, micro_stats = task.loss(model, micro)
                loss.backward()
            loss_sum += float(loss.detach())
            for k, v in micro_stats.items():
                stats[k] = stats.get(k, 0.0) + v
        if world > 1:
            packed = torch.tensor([loss_sum, *stats.values()], dtype=torch.float64)
            dist.all_reduce(packed)
            loss_sum = float(packed[0]) / world
            stats = {k: float(v) / world for k, v in zip(stats, packed[1:])}
        if not math.isfinite(loss_sum):
            optimizer.zero_grad(set_to_none=True)
            bad_steps += 1
            log({"step": prog.step, "skipped": "non-finite loss"})
            if bad_steps >= config.max_bad_steps:
                raise BertkitError(f"the loss was not finite for {bad_steps} steps in a row (last at step "
                                   f"{prog.step}); lower the learning rate or check the data")
            continue
        bad_steps = 0
        grad_norm = None
        if config.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(core.parameters(), config.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        elapsed_step = now - t_last
        t_last = now
        if world > 1 and config.budget_minutes:  # every process must stop at the same step
            t = torch.tensor([elapsed_step], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed_step = float(t)
        prog = replace(prog, step=prog.step + 1, tokens=prog.tokens + step.tokens, elapsed=prog.elapsed + elapsed_step)
        last_step_s = elapsed_step
        task_state = step.state
        window_tokens += step.tokens
        if prog.step % 50 == 0 and device.type == "cpu":
            _release_freed_memory()
        bar.update(1)
        done = progress_of(prog) >= 1.0
        if prog.step % config.log_every == 0 or done:
            tok_s = window_tokens / max(now - window_start, 1e-9)
            window_tokens, window_start = 0, now
            record = {"step": prog.step, "tokens": prog.tokens, "elapsed": prog.elapsed, "lr": lr,
                      "loss": loss_sum, **stats, "tokens_per_s": round(tok_s, 1)}
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            log(record)
            eta = (1 - progress_of(prog)) * prog.elapsed / max(progress_of(prog), 1e-9)
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_s:,.0f}", eta=f"{eta / 60:.1f}m", refresh=False)
        if prog.step % config.eval_every == 0 or done:
            choose_execution(core.eval(), autocast_bf16=config.bf16)
            with torch.no_grad(), autocast:
                last_eval = task.evaluate(core)
            choose_execution(core, training=True, autocast_bf16=config.bf16, traced=config.compile)
            model.train()
            log({"step": prog.step, "tokens": prog.tokens, "elapsed": prog.elapsed,
                 **{f"eval_{k}": v for k, v in last_eval.items()}})
            if config.best_metric:
                if config.best_metric not in last_eval:
                    raise BertkitError(f"best_metric {config.best_metric!r} is not among the evaluation metrics "
                                       f"({', '.join(last_eval)})")
                value = float(last_eval[config.best_metric])
                if config.better(value, prog.best):
                    prog = replace(prog, best=value, bad_evals=0)
                    if main:
                        write_atomically(run_dir / "best",
                                         lambda tmp: write_model_files(tmp, _saved(core), tokenizer, labels, reading))
                else:
                    prog = replace(prog, bad_evals=prog.bad_evals + 1)
                    if config.patience and prog.bad_evals >= config.patience:
                        log({"step": prog.step, "early_stop": f"{config.best_metric} did not improve on "
                                                              f"{prog.best:.4f} for {prog.bad_evals} evaluations"})
                        done = True
            t_last = time.perf_counter()  # evaluation time does not count against the budget
        if prog.step % config.save_every == 0 or done:
            save()
            t_last = time.perf_counter()
        if done:
            break
    bar.close()
    reporter.close()
    if main:
        if config.best_metric and (run_dir / "best").is_dir():
            write_atomically(run_dir / "model", lambda tmp: shutil.copytree(run_dir / "best", tmp, dirs_exist_ok=True))
        else:
            write_atomically(run_dir / "model",
                             lambda tmp: write_model_files(tmp, _saved(core), tokenizer, labels, reading))
    if world > 1:
        dist.barrier()
    return last_eval


def _save_checkpoint(run_dir: Path, model: nn.Module, tokenizer, labels, reading, optimizer, prog: Progress,
                     task_state, keep: int) -> None:
    target = run_dir / "checkpoints" / f"step_{prog.step:08d}"

    def write(tmp: Path) -> None:
        write_model_files(tmp, _saved(model), tokenizer, labels, reading)
        torch.save({"optimizer": optimizer.state_dict(), "progress": asdict(prog), "task": task_state,
                    "extra_weights": _extra_weights(model),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   tmp / "train_state.pt")

    write_atomically(target, write)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model: nn.Module, optimizer) -> tuple[Progress, dict]:
    saved, target = load_model(folder).model, _saved(model)
    if saved.config != target.config or saved.task != target.task:
        raise BertkitError(f"{folder}: this checkpoint is of another model config "
                           f"({saved.task}, {saved.config.to_dict()}) than the run asks for; resume with "
                           "the same options, or start a new --out")
    load_state(target, saved.state_dict(), folder / WEIGHTS)
    try:
        state = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise BertkitError(f"{folder / 'train_state.pt'}: unreadable ({type(e).__name__})") from None
    extra, expected = state.get("extra_weights", {}), _extra_weights(model)
    if set(extra) != set(expected) or any(extra[k].shape != v.shape for k, v in expected.items()):
        raise BertkitError(f"{folder}: this checkpoint has other trained weights beside the model "
                           f"({', '.join(extra) or 'none'}) than the run asks for; resume with the same options, or "
                           "start a new --out")
    with torch.no_grad():
        for name, value in expected.items():
            value.copy_(extra[name])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**state["progress"]), state["task"]
