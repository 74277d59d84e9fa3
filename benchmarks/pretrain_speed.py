"""Pre-training speed: bertkit vs Hugging Face `transformers` BertForPreTraining, same data, same weights, one run.

    python benchmarks/pretrain_speed.py --preset mini            # fp32
    python benchmarks/pretrain_speed.py --preset mini --bf16     # bf16 autocast for both
    python benchmarks/pretrain_speed.py --preset mini --busy-neighbour   # with a busy loop taking one core

Both models start from the same weights and take the same masked batches (MLM + NSP, seq 128, batch 32 by
default) with the same AdamW; their steps alternate, so both see the same machine state. bertkit decodes
only masked positions and runs every layer but attention on real tokens only (unpadded); transformers
decodes every position of the padded batch. Prints the machine (CPU, ISA flags, matmul peak measured at the
start), tokens/s (real tokens, median over the timed steps, with their min-max), the largest loss difference
between the two runs (the losses must match: nothing is traded for speed), matmul FLOP utilisation against the
peak, and as its last line the speed ratio.

--busy-neighbour runs the steps beside a pure-Python busy loop in another process at this one's priority (a
neighbour's job taking one core), killed when they end.

Threads: each library gets what its own training loop would use. bertkit's steps run with the adaptive count its
commands use (bertkit.hardware.Adaptive: the CPUs other processes leave free, re-checked before each step);
transformers' steps with torch's default, every CPU. --threads N pins both to N.

Data: --data PREPARED (from `bertkit prepare`), or by default Wikipedia lead paragraphs from the catalog,
tokenised with the 30,522-token uncased BERT vocabulary of all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch.utils.flop_counter import FlopCounterMode

from bertkit import BertConfig, Tokenizer, build_model
from bertkit.convert import TASK_TO_ARCH, config_to_hf, state_to_hf
from bertkit.data.corpus import Corpus, prepare
from bertkit.hardware import adjust, available_cpus, busy_neighbour, describe, summary, use_threads
from bertkit.optim import make_optimizer
from bertkit.pretrain import PretrainConfig, PretrainTask


def default_corpus(workdir: Path) -> Path:
    from bertkit.data.catalog import minilm_l6, wiki_topics
    from bertkit.data.text import split_sentences
    text = workdir / "wiki.txt"
    docs = ["\n".join(split_sentences(t)) for t, _ in wiki_topics()["train"]]
    text.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return prepare([text], Tokenizer.load(minilm_l6()), workdir / "prepared", heldout_percent=1, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--data", help="a prepared corpus (default: Wikipedia leads from the catalog)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per library")
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--padded", action="store_true", help="bertkit keeps padding tokens (no unpadding)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, help="torch threads (default: bertkit's, the CPUs this process may use)")
    ap.add_argument("--busy-neighbour", action="store_true", help="time the steps beside a busy loop in another "
                    "process taking one core, as a neighbour's job would")
    args = ap.parse_args()
    device = torch.device(args.device)
    transformers.logging.set_verbosity_error()
    theirs_threads = args.threads or available_cpus()  # torch's default: every CPU the process may use
    use_threads(args.threads, adapt=True)
    machine = describe(device)
    print(summary(machine), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bertkit-bench-"))
    data = Path(args.data) if args.data else default_corpus(workdir)
    corpus = Corpus(data)
    # No dropout, so the two runs can be compared loss for loss (Cramming pre-trains without it too).
    config = BertConfig.preset(args.preset, vocab_size=corpus.tokenizer.vocab_size, hidden_dropout=0.0,
                               attention_dropout=0.0, unpad=not args.padded)
    # eval_instances: the fewest the config allows (0 is refused since ranges were declared); nothing evaluates here
    task = PretrainTask(corpus, PretrainConfig(max_len=args.max_len, batch_size=args.batch_size, eval_instances=1))
    steps = task.steps(None, 0, 1)
    batches = [{k: v.to(device) for k, v in next(steps).micro[0].items()}
               for _ in range(args.warmup_steps + args.steps)]

    torch.manual_seed(0)
    ours = build_model(config, "pretraining").to(device).train()
    hf_config = transformers.BertConfig(**{k: v for k, v in config_to_hf(config, "pretraining").items()
                                           if k != "architectures"})
    hf_config._attn_implementation = "sdpa"
    theirs = getattr(transformers, TASK_TO_ARCH["pretraining"])(hf_config).to(device).train()
    theirs.load_state_dict(state_to_hf(ours.state_dict(), config, "pretraining"))
    opt_ours = make_optimizer(ours, 1e-4)
    opt_theirs = make_optimizer(theirs, 1e-4)  # the same (fused) AdamW for both
    if args.compile:
        ours = torch.compile(ours, dynamic=True)
        theirs = torch.compile(theirs, dynamic=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    used_threads = []

    def step_ours(b):
        used_threads.append(adjust())  # as bertkit's training loop does before each step
        with autocast:
            loss, _ = task.loss(ours, b)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return float(loss.detach())

    def step_theirs(b):
        torch.set_num_threads(theirs_threads)
        labels = b["labels"]
        with autocast:
            out = theirs(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                         token_type_ids=b["token_type_ids"])
            # transformers' own loss (mean over masked tokens + NSP mean), on the full-vocabulary logits
            mlm = F.cross_entropy(out.prediction_logits.float().view(-1, config.vocab_size), labels.view(-1))
            nsp = F.cross_entropy(out.seq_relationship_logits.float(), b["next_sentence_label"])
            loss = mlm + nsp
        loss.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)
        return float(loss.detach())

    times = {"bertkit": [], "transformers": []}
    losses = {"bertkit": [], "transformers": []}
    tokens = []
    with busy_neighbour() if args.busy_neighbour else contextlib.nullcontext():  # warm-up steps beside it too
        for i, b in enumerate(batches):
            for name, fn in (("bertkit", step_ours), ("transformers", step_theirs)):
                sync()
                t = time.perf_counter()
                loss = fn(b)  # float(loss) waits for the device
                dt = time.perf_counter() - t
                losses[name].append(loss)
                if i >= args.warmup_steps:
                    times[name].append(dt)
            if i >= args.warmup_steps:
                tokens.append(int(b["attention_mask"].sum()))

    flops = {}
    for name, fn in (("bertkit", step_ours), ("transformers", step_theirs)):
        with FlopCounterMode(display=False) as counter:
            fn(batches[-1])
        flops[name] = counter.get_total_flops()
    peak = machine["peak_gflops"]["bf16" if args.bf16 else "fp32"] * 1e9

    per_step = {k: [n / t for n, t in zip(tokens, v)] for k, v in times.items()}
    tok_s = {k: statistics.median(v) for k, v in per_step.items()}
    step_s = {k: statistics.median(v) for k, v in times.items()}
    diff = max(abs(a - b) for a, b in zip(losses["bertkit"], losses["transformers"]))
    prec = ("bf16 autocast" if args.bf16 else "fp32") + (", torch.compile" if args.compile else "")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"threads: bertkit {min(used_threads)}-{max(used_threads)} ({'pinned' if args.threads else 'adaptive'}),"
             f" transformers {theirs_threads}")
    neighbour = ", with a busy neighbour" if args.busy_neighbour else ""
    print(f"preset {args.preset} ({config.num_layers}L/{config.hidden_size}H, vocab {config.vocab_size}), seq "
          f"{args.max_len}, batch {args.batch_size}, {prec}, {where}{neighbour}, "
          f"{args.steps} timed steps after {args.warmup_steps}, the libraries alternating")
    print("| library | tokens/s (median) | min-max of steps | step (s) | GFLOP per step | utilisation of peak |")
    print("|---|---|---|---|---|---|")
    for k in times:
        print(f"| {k} | {tok_s[k]:,.0f} | {min(per_step[k]):,.0f}-{max(per_step[k]):,.0f} | {step_s[k]:.3f} | "
              f"{flops[k] / 1e9:.1f} | {flops[k] / step_s[k] / peak:.0%} |")
    print(f"losses: bertkit {losses['bertkit'][0]:.4f} -> {losses['bertkit'][-1]:.4f}, transformers "
          f"{losses['transformers'][0]:.4f} -> {losses['transformers'][-1]:.4f}; max |difference| {diff:.2e}")
    print(f"bertkit / transformers tokens/s: {tok_s['bertkit'] / tok_s['transformers']:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
