"""Inference speed: bertkit vs Hugging Face `transformers`, ONNX Runtime, OpenVINO and CTranslate2, same weights,
one process run.

    pip install -e ".[bench]"              # transformers, onnx, onnxruntime, openvino, nncf, ctranslate2
    python benchmarks/inference_speed.py --preset base
    python benchmarks/inference_speed.py --preset mini --batches 8

Workloads (random token ids, seed 0; lengths count [CLS] and [SEP]):
- fixed: every sequence --fixed-len tokens (128), no padding;
- mixed: lengths uniform in [16, 256], batches of --batch-size in random order, each padded to its longest,
  as a server batching requests as they come would have them.
Methods, each on the same padded batches (input_ids, attention_mask, token_type_ids):
- transformers BertModel, sdpa attention, fp32; and with bf16 weights;
- ONNX Runtime on transformers' model exported with torch.onnx and fused by onnxruntime.transformers (the
  fastest ONNX Runtime setup for BERT: fused Attention, SkipLayerNorm, BiasGelu); and that graph quantised
  to int8 (dynamic, QInt8 weights); and the same two from `bertkit export --onnx --int8` of bertkit's model;
- OpenVINO (optional: skipped with a note when not installed): transformers' model through
  `openvino.convert_model` (dynamic batch and length), compiled for the CPU with INFERENCE_PRECISION_HINT f32, and
  bf16 where the CPU plugin lists BF16 in its OPTIMIZATION_CAPABILITIES (the CPU's flags alone do not decide it);
  int8 weights from NNCF's `compress_weights` (weight-only int8, no calibration data: OpenVINO's full int8 needs
  a calibration set), labelled "(weights)". PERFORMANCE_HINT LATENCY (THROUGHPUT splits the threads into streams, and one
  synchronous batch then runs on one stream's share), INFERENCE_NUM_THREADS the benchmark's threads;
- CTranslate2 (optional likewise): transformers' model converted by its TransformersConverter, `Encoder` with
  float32 and int8 compute types, and bfloat16 where the CPU offers it; it takes each sequence's real tokens only;
- bertkit: every layer on real tokens only, attention per sequence; fp32, bf16 weights, int8 (dynamic);
  with --compile also fp32 and bf16 under torch.compile, padded to lengths in steps of 32 (ShapeStable).
Timing: the methods take turns, pass 1 of every method, then pass 2, ... (--passes, the starting method rotating
each pass), so a slow spell of a shared machine falls on all of them instead of on whichever ran then. Prints the
machine (CPU, ISA flags, matmul peak), real tokens/s per method as the median of the passes with their min-max,
each method's largest difference from transformers fp32 on real tokens (last hidden state), and the ratios the
speed issue sets targets on, and bertkit against the fastest peer of each precision (fp32: ONNX Runtime fused,
OpenVINO f32, CTranslate2 float32; bf16: transformers, OpenVINO, CTranslate2; int8: ONNX Runtime, OpenVINO,
CTranslate2): ratios of the medians, with the range of the per-pass ratios (pass i of one method
against pass i of the other, which ran moments apart). --busy-neighbour measures the same with a busy loop taking
one core (a normal-priority neighbour job).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

from bertkit import BertConfig, build_model
from bertkit.convert import config_to_hf, state_to_hf
from bertkit.hardware import busy_neighbour, describe, summary, use_threads
from bertkit.model.precision import for_inference


def workload(kind: str, n_batches: int, batch_size: int, vocab: int, fixed_len: int, seed: int = 0):
    """A list of padded batches (ids, mask, types), int64."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        if kind == "fixed":
            lengths = [fixed_len] * batch_size
        else:
            lengths = rng.integers(16, 257, batch_size).tolist()
        T = max(lengths)
        ids = torch.zeros(batch_size, T, dtype=torch.long)
        mask = torch.zeros(batch_size, T, dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, :n] = torch.from_numpy(rng.integers(5, vocab, n))
            ids[i, 0], ids[i, n - 1] = 2, 3
            mask[i, :n] = 1
        types = torch.zeros_like(ids)
        batches.append((ids, mask, types))
    return batches


def interleaved(methods: dict, batches, passes: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """({method: real tokens/s of each pass}, {method: largest difference from the first method's outputs on real
    tokens, first pass}). Within a pass every method runs once over all batches; the first method of a pass
    rotates, so none always follows the same one. Each method first warms up on one batch (a compiled one on every
    batch: each new shape compiles)."""
    tokens = sum(int(m.sum()) for _, m, _ in batches)
    sync = torch.cuda.synchronize if batches[0][0].is_cuda else (lambda: None)
    for name, run in methods.items():
        for b in batches if "compiled" in name else batches[:1]:
            run(*b)  # warm-up (allocations, oneDNN primitives, CUDA kernels, compilation)
    names = list(methods)
    speeds, diffs, reference = {name: [] for name in names}, {}, None
    for p in range(passes):
        for name in names[p % len(names):] + names[:p % len(names)]:
            sync()
            t = time.perf_counter()
            outs = [methods[name](*b) for b in batches]
            sync()
            speeds[name].append(tokens / (time.perf_counter() - t))
            if p == 0:  # outputs are kept only long enough to compare them
                reference = reference or outs
                diffs[name] = max(float((o.float()[m.bool()] - r[m.bool()]).abs().max())
                                  for o, r, (_, m, _) in zip(outs, reference, batches))
        print(f"  pass {p + 1}/{passes} done", file=sys.stderr, flush=True)
    return speeds, diffs


class _LastHidden(torch.nn.Module):
    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


def export_hf_onnx(hf_model, workdir: Path, config: BertConfig) -> tuple[Path, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    import onnx
    raw, fused, int8 = workdir / "hf.onnx", workdir / "hf.fused.onnx", workdir / "hf.int8.onnx"
    ids, mask, types = workload("mixed", 1, 2, config.vocab_size, 8)[0]
    axes = {n: {0: "b", 1: "t"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_LastHidden(hf_model), (ids, mask, types), str(raw), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=axes)
    optimize_model(str(raw), model_type="bert", num_heads=config.num_heads,
                   hidden_size=config.hidden_size).save_model_to_file(str(fused))
    quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fused, int8


def _missing(method: str, library: str) -> None:
    print(f"note: {method} skipped: {library} is not installed (pip install -e \".[bench]\")", file=sys.stderr)


def openvino_methods(hf_model, example, threads: int) -> dict:
    """OpenVINO methods on transformers' model converted with `openvino.convert_model` (dynamic batch and length).
    f32 and, where the CPU plugin lists BF16 among its capabilities, bf16 (`INFERENCE_PRECISION_HINT`); int8 as
    NNCF's weight compression (int8 weights, no calibration data; the plugin may quantise activations on the fly)
    with the f32 hint elsewhere, as ONNX Runtime's int8 keeps fp32 outside the matmuls. PERFORMANCE_HINT LATENCY:
    one stream with every thread, as one synchronous batch at a time needs; THROUGHPUT splits the threads into
    streams and a single request then runs on one stream's share. `hf_model` is traced: pass a copy."""
    try:
        import openvino as ov
    except ImportError:
        _missing("OpenVINO", "openvino")
        return {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        graph = ov.convert_model(_LastHidden(hf_model), example_input=example)
    core = ov.Core()
    graphs = {"OpenVINO f32": (graph, "f32")}
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        graphs["OpenVINO bf16"] = (graph, "bf16")
    else:
        print("note: OpenVINO bf16 skipped: the CPU plugin does not offer BF16 on this CPU", file=sys.stderr)
    try:
        import nncf
        nncf.set_log_level(logging.ERROR)
        with contextlib.redirect_stdout(sys.stderr):  # its progress bar
            graphs["OpenVINO int8 (weights)"] = (nncf.compress_weights(graph.clone()), "f32")
    except ImportError:
        _missing("OpenVINO int8 (weights)", "nncf")

    def run(compiled):
        return lambda ids, mask, types: torch.from_numpy(compiled([ids.numpy(), mask.numpy(), types.numpy()])[0])

    return {name: run(core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                                    "INFERENCE_NUM_THREADS": threads}))
            for name, (g, precision) in graphs.items()}


def ctranslate2_methods(hf_model, workdir: Path, threads: int) -> dict:
    """CTranslate2 methods: transformers' model saved with `save_pretrained`, converted by its TransformersConverter
    with each quantisation, run by `ctranslate2.Encoder` on the real tokens of each sequence (its input is unpadded
    token lists; its output is padded to the longest, as the batch is). float32, int8 and, where
    `get_supported_compute_types("cpu")` lists it, bfloat16."""
    try:
        import ctranslate2
    except ImportError:
        _missing("CTranslate2", "ctranslate2")
        return {}

    class Vocabulary:  # the converter reads the tokenizer only for the vocabulary and unk token: ids are what we pass
        unk_token = "[UNK]"

        def get_vocab(self):
            return {f"[{i}]": i for i in range(hf_model.config.vocab_size)}

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_model(self, *args, **kwargs):  # transformers 5 dropped this attribute the converter asserts on
            model = super().load_model(*args, **kwargs)
            model.config.position_embedding_type = "absolute"
            return model

        def load_tokenizer(self, *args, **kwargs):
            return Vocabulary()

    hf_model.save_pretrained(workdir / "hf")
    supported = ctranslate2.get_supported_compute_types("cpu")
    compute_types = [t for t in ("float32", "int8", "bfloat16") if t in supported]
    if "bfloat16" not in compute_types:
        print("note: CTranslate2 bf16 skipped: not among its compute types on this CPU", file=sys.stderr)

    def run(encoder):
        def forward(ids, mask, types):
            lengths = mask.sum(1).tolist()
            out = encoder.forward_batch([row[:n].tolist() for row, n in zip(ids, lengths)],
                                        token_type_ids=[row[:n].tolist() for row, n in zip(types, lengths)])
            return torch.as_tensor(np.array(out.last_hidden_state))
        return forward

    methods = {}
    for compute_type in compute_types:
        out = Converter(str(workdir / "hf")).convert(str(workdir / f"ct2-{compute_type}"), quantization=compute_type)
        name = "CTranslate2 " + {"bfloat16": "bf16"}.get(compute_type, compute_type)
        methods[name] = run(ctranslate2.Encoder(out, device="cpu", compute_type=compute_type, intra_threads=threads))
    return methods


# the peers a user could run instead, per precision: bertkit is compared with the fastest of each that ran
BEST_PEER = {"bertkit fp32": ("ONNX Runtime fp32 (fused)", "OpenVINO f32", "CTranslate2 float32"),
             "bertkit bf16": ("transformers bf16", "OpenVINO bf16", "CTranslate2 bf16"),
             "bertkit int8": ("ONNX Runtime int8", "OpenVINO int8 (weights)", "CTranslate2 int8")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4, help="batches per workload")
    ap.add_argument("--passes", "--repeats", dest="passes", type=int, default=5,
                    help="timed passes over each workload, the methods taking turns (median and min-max reported)")
    ap.add_argument("--fixed-len", type=int, default=128)
    ap.add_argument("--workloads", default="mixed,fixed")
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out, each by its name or the start "
                    "of it: 'ONNX Runtime' leaves out all four ONNX Runtime methods, 'bertkit fp32' the compiled one too")
    ap.add_argument("--compile", action="store_true",
                    help="also time bertkit fp32/bf16 under torch.compile (bertkit.model.compiled.ShapeStable)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (transformers and bertkit in fp32 and bf16 only)")
    ap.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: bertkit's, the CPUs this "
                    "process may use)")
    ap.add_argument("--busy-neighbour", action="store_true", help="time everything with a busy loop in another "
                    "process taking one core, as a neighbour's job would")
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # save_pretrained / from_pretrained for CTranslate2
    use_threads(args.threads)
    machine = describe(device)
    print(summary(machine), flush=True)

    torch.manual_seed(0)
    config = BertConfig.preset(args.preset, vocab_size=30522, unpad=True)
    ours = build_model(config, "encoder").eval()
    hf_config = transformers.BertConfig(**{k: v for k, v in config_to_hf(config, "encoder").items()
                                           if k != "architectures"})
    hf_config._attn_implementation = "sdpa"
    hf = transformers.BertModel(hf_config, add_pooling_layer=True).eval()
    result = hf.load_state_dict(state_to_hf(ours.state_dict(), config, "encoder"), strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result

    def copy_of(model):
        twin = transformers.BertModel(hf_config, add_pooling_layer=True).eval()
        twin.load_state_dict(model.state_dict())
        return twin

    skip = set(filter(None, args.skip.split(",")))
    if cpu and not {"avx512_bf16", "amx_bf16"} & set(machine["isa"]):
        # no bf16 instructions: torch emulates bf16 matmuls at a fraction of fp32's speed; nobody would run it
        skip |= {"transformers bf16", "bertkit bf16", "bertkit bf16 compiled"}
        print(f"note: bf16 methods skipped: this CPU has no bf16 instructions (bf16 matmul peak "
              f"{machine['peak_gflops']['bf16']:.1f} GFLOP/s)", file=sys.stderr)
    if cpu:
        import onnxruntime as ort
        workdir = Path(tempfile.mkdtemp(prefix="bertkit-infer-bench-"))
        # Export a copy with eager attention: ONNX Runtime's attention fusion matches that graph, and tracing leaves
        # a transformers model unfit for further use (its later outputs change), so the timed one is not traced.
        hf_config_eager = copy.deepcopy(hf_config)
        hf_config_eager._attn_implementation = "eager"
        to_export = transformers.BertModel(hf_config_eager, add_pooling_layer=True).eval()
        to_export.load_state_dict(hf.state_dict())
        fused, int8 = export_hf_onnx(to_export, workdir, config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # bertkit's own `bertkit export --onnx --int8` of the same weights
        from bertkit import save_model
        from bertkit.export import export_onnx
        save_model(workdir / "bertkit", ours)
        ours_onnx = export_onnx(workdir / "bertkit", workdir / "bertkit-onnx", int8=True)
        paths = (fused, int8, ours_onnx / "model.onnx", ours_onnx / "model.int8.onnx")
        sessions = {p: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths}
        peers = {}
        if "OpenVINO" not in skip:  # converted from a fresh copy: conversion traces it
            peers |= openvino_methods(copy_of(hf), workload("mixed", 1, 2, config.vocab_size, 8)[0],
                                      torch.get_num_threads())
        if "CTranslate2" not in skip:
            peers |= ctranslate2_methods(hf, workdir, torch.get_num_threads())
    hf_bf16 = copy_of(hf)
    hf, hf_bf16, ours = hf.to(device), hf_bf16.to(device, torch.bfloat16), ours.to(device)
    ours_bf16 = for_inference(ours, "bf16")

    def run_hf(model):
        return lambda ids, mask, types: model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    def run_ort(session):
        return lambda ids, mask, types: torch.from_numpy(session.run(None, {
            "input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})[0])

    def run_ours(model):
        return lambda ids, mask, types: model(ids, mask, types).hidden

    methods = {"transformers fp32": run_hf(hf), "transformers bf16": run_hf(hf_bf16)}
    if cpu:
        methods |= {"ONNX Runtime fp32 (fused)": run_ort(sessions[fused]), "ONNX Runtime int8": run_ort(sessions[int8]),
                    "ONNX Runtime fp32, bertkit export": run_ort(sessions[paths[2]]),
                    "ONNX Runtime int8, bertkit export": run_ort(sessions[paths[3]])} | peers
    methods |= {"bertkit fp32": run_ours(ours), "bertkit bf16": run_ours(ours_bf16)}
    if cpu:
        methods["bertkit int8"] = run_ours(for_inference(ours, "int8"))
    if args.compile:  # compiled at first use of each shape: warm-up passes in `timed` absorb it
        methods["bertkit fp32 compiled"] = run_ours(for_inference(ours, "fp32", compile=True, batch_size=args.batch_size))
        methods["bertkit bf16 compiled"] = run_ours(for_inference(ours, "bf16", compile=True, batch_size=args.batch_size))
    where = torch.cuda.get_device_name(device) if not cpu else f"{torch.get_num_threads()} threads"
    methods = {name: run for name, run in methods.items() if not any(name.startswith(s) for s in skip)}
    neighbour = " with a busy neighbour" if args.busy_neighbour else ""
    print(f"preset {args.preset} ({config.num_layers}L/{config.hidden_size}H), batch {args.batch_size}, "
          f"{args.batches} batches a workload, {args.passes} interleaved passes, {where}{neighbour}, torch "
          f"{torch.__version__}, transformers {transformers.__version__}"
          + (f", onnxruntime {ort.__version__}" if cpu else "")
          + "".join(f", {m} {sys.modules[m].__version__}" for m in ("openvino", "ctranslate2") if m in sys.modules),
          flush=True)
    table = {}
    with busy_neighbour() if args.busy_neighbour else contextlib.nullcontext():
        for kind in args.workloads.split(","):
            batches = [tuple(t.to(device) for t in b)
                       for b in workload(kind, args.batches, args.batch_size, config.vocab_size, args.fixed_len)]
            real = sum(int(m.sum()) for _, m, _ in batches)
            padded = sum(m.numel() for _, m, _ in batches)
            with torch.inference_mode():
                speeds, diffs = interleaved(methods, batches, args.passes)
            print(f"\n{kind}: {real:,} real tokens, {1 - real / padded:.1%} of the padded batch is padding")
            print("| method | real tokens/s (median) | min-max of passes | max abs diff vs transformers fp32 "
                  "(real tokens) |")
            print("|---|---|---|---|")
            for name, speed in speeds.items():
                table[kind, name] = speed
                print(f"| {name} | {statistics.median(speed):,.0f} | {min(speed):,.0f}-{max(speed):,.0f} | "
                      f"{diffs[name]:.1e} |", flush=True)
    print("\nratios (mixed lengths) of the medians, and the range of the per-pass ratios:")
    pairs = [(ours_name, theirs, theirs) for ours_name, theirs in [
        ("bertkit fp32", "transformers fp32"), ("bertkit bf16", "transformers bf16"),
        ("bertkit int8", "ONNX Runtime int8"), ("bertkit fp32", "ONNX Runtime fp32 (fused)")]]
    for ours_name, candidates in BEST_PEER.items():  # bertkit against the fastest peer of its precision (median)
        if present := [p for p in candidates if ("mixed", p) in table]:
            best = max(present, key=lambda p: statistics.median(table["mixed", p]))
            pairs.append((ours_name, best, f"fastest {ours_name.split()[1]} peer ({best})"))
    for ours_name, theirs, label in pairs:
        if ("mixed", ours_name) in table and ("mixed", theirs) in table:
            a, b = table["mixed", ours_name], table["mixed", theirs]
            paired = [x / y for x, y in zip(a, b)]
            print(f"  {ours_name} / {label}: {statistics.median(a) / statistics.median(b):.2f}x "
                  f"(per pass {min(paired):.2f}-{max(paired):.2f}x)")

if __name__ == "__main__":
    main()
