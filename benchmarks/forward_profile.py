"""Where a BERT forward spends its time: matrix products against everything else, per operator, from torch's
profiler, for bertkit (fp32 / bf16) and transformers on the same padded batches of mixed lengths.

    python benchmarks/forward_profile.py --preset base --precisions bf16,fp32
    python benchmarks/forward_profile.py --preset base --precisions bf16 --top 15

The workload is inference_speed.py's "mixed" one (lengths uniform in [16, 256], batches of 32, random token ids,
seed 0). Each method runs the batches once to warm up, then --passes times under `torch.profiler` (CPU self time
per operator). "matmul" counts the operators that multiply matrices (mm, addmm, bmm, linear and their oneDNN/MKL
forms); the rest (attention's loop, softmax, layer norms, GELU, adds, copies, casts, gathers) is the share this
script exists to show. Also printed: real tokens/s outside the profiler (median of --passes) and, from the
benchmark header's matmul peak, the share of that ceiling the forward reaches (FLOPs from the shapes: every
linear layer, and attention's two products on real tokens only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import transformers
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_speed import workload  # noqa: E402  (the same batches as the speed benchmark)

from bertkit import BertConfig, build_model  # noqa: E402
from bertkit.convert import config_to_hf, state_to_hf  # noqa: E402
from bertkit.hardware import describe, summary, use_threads  # noqa: E402
from bertkit.model.precision import for_inference  # noqa: E402

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
              "aten::mkldnn_linear", "aten::_mkl_linear", "aten::mkldnn_matmul", "mkldnn::_linear_pointwise",
              "onednn::qlinear_pointwise", "quantized::linear_dynamic")
# composite operators whose self time is only their dispatch: listed, never counted as either side
COMPOSITE = ("aten::linear", "aten::matmul")


def flops(config: BertConfig, lengths: list[int]) -> float:
    """Multiply-adds x 2 of one forward over sequences of these lengths: the linear layers on every real token,
    attention's two products per sequence."""
    C, I, L = config.hidden_size, config.intermediate_size, config.num_layers
    tokens = sum(lengths)
    linear = 2 * tokens * (3 * C * C + C * C + 2 * C * I)
    attention = 2 * 2 * sum(n * n for n in lengths) * C
    return L * (linear + attention)


def split(prof) -> tuple[float, float, list[tuple[str, float]]]:
    """(matmul seconds, other seconds, [(operator, seconds)] of the other, largest first), from self CPU times."""
    matmul, other = 0.0, defaultdict(float)
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in MATMUL_OPS:
            matmul += seconds
        elif event.key not in COMPOSITE:
            other[event.key] += seconds
    ranked = sorted(other.items(), key=lambda kv: -kv[1])
    return matmul, sum(other.values()), ranked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--top", type=int, default=10, help="operators of the non-matmul share to list")
    ap.add_argument("--transformers", action="store_true", help="profile transformers' BertModel too")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    use_threads(args.threads)
    machine = describe(torch.device("cpu"))
    print(summary(machine), flush=True)

    torch.manual_seed(0)
    config = BertConfig.preset(args.preset, vocab_size=30522, unpad=True)
    ours = build_model(config, "encoder").eval()
    batches = workload("mixed", args.batches, args.batch_size, config.vocab_size, 128)
    lengths = [int(n) for _, m, _ in batches for n in m.sum(1)]
    real = sum(lengths)
    work = flops(config, lengths)
    methods = {}
    for precision in args.precisions.split(","):
        model = for_inference(ours, precision)
        methods[f"bertkit {precision}"] = (lambda m: lambda ids, mask, types: m(ids, mask, types).hidden)(model)
    if args.transformers:
        hf_config = transformers.BertConfig(**{k: v for k, v in config_to_hf(config, "encoder").items()
                                               if k != "architectures"})
        hf_config._attn_implementation = "sdpa"
        hf = transformers.BertModel(hf_config).eval()
        hf.load_state_dict(state_to_hf(ours.state_dict(), config, "encoder"), strict=False)
        for precision in args.precisions.split(","):
            model = hf if precision == "fp32" else __import__("copy").deepcopy(hf).to(torch.bfloat16)
            methods[f"transformers {precision}"] = (lambda m: lambda ids, mask, types: m(
                input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state)(model)
    print(f"preset {args.preset} ({config.num_layers}L/{config.hidden_size}H), {len(batches)} batches of "
          f"{args.batch_size}, {real:,} real tokens, {work / real / 1e6:.0f} MFLOP a token, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    for name, run in methods.items():
        with torch.inference_mode():
            for b in batches:
                run(*b)  # warm-up
            speeds = []
            for _ in range(args.passes):
                t = time.perf_counter()
                for b in batches:
                    run(*b)
                speeds.append(real / (time.perf_counter() - t))
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.passes):
                    for b in batches:
                        run(*b)
        matmul, other, ranked = split(prof)
        speed = statistics.median(speeds)
        precision = "bf16" if "bf16" in name else "fp32"
        peak = machine["peak_gflops"][precision] * 1e9
        print(f"{name}: {speed:,.0f} real tokens/s (min-max {min(speeds):,.0f}-{max(speeds):,.0f}), "
              f"{speed * work / real / peak:.0%} of the {precision} matmul peak; under the profiler: matmul "
              f"{matmul:.2f} s, everything else {other:.2f} s = {other / (matmul + other):.0%} of the forward")
        for op, seconds in ranked[:args.top]:
            print(f"    {op:<40} {seconds:6.3f} s  {seconds / (matmul + other):5.1%}")
        print(flush=True)


if __name__ == "__main__":
    main()
