"""Model-level comparison of MM-Rec against a GPT-style Transformer and an LSTM of the same size (issue 8).

    python bench/compare_models.py throughput --device cuda --sizes 1024,4096,16384 --tokens-per-step 65536
    python bench/compare_models.py generate --device cuda --contexts 1024,4096,16384,65536
    python bench/compare_models.py quality --device cuda --seeds 1,2
    python bench/compare_models.py SUBCOMMAND --quick      # tiny shapes on the CPU: checks the script, in seconds

Each writes a JSON (default bench/results/models/<subcommand>_<device>.json; --quick: runs/compare_quick/)
and prints a table; bench/plot_benchmarks.py turns the JSONs into docs/benchmarks.md.

throughput  training step (forward, backward, grad clip, AdamW: the trainer's step) per arch and sequence
            length T; batch = tokens-per-step / T rows, run as micro-batches of --micro-tokens tokens with
            gradient accumulation. Median of timed steps after warm-up (cuda-synchronised). Peak memory:
            torch.cuda.max_memory_allocated per row (CUDA; one process per arch), the process's peak RSS
            (CPU; one process per row). Out-of-memory is recorded as a row with status "oom".
generate    prefill a random context (in chunks of --prefill-chunk, through each model's state: MM-Rec's
            and the LSTM's constant-size state, the GPT's KV cache), then greedy-decode --new-tokens tokens
            one at a time; decode tokens/s, the bytes of the state / KV cache, and peak memory.
quality     the full three-stage pipeline (`python -m mmrec_model.train` via bench/train_baseline.py) per arch
            and seed at the `small` size with equal tokens, and the held-out losses of every stage.

Archs: mmrec (recurrence=nonlinear, the preset's default), mmrec-linear (recurrence=linear), gpt and lstm
(bench/baselines.py, matched() to the parameter count of the MM-Rec preset). quality also knows
mmrec-tbptt: MM-Rec pre-trained with its state carried across segments (the trainer's default for MM-Rec).
throughput also knows mmrec-fused / mmrec-linear-fused and mmrec-unfused / mmrec-linear-unfused: the same models
with the block's read on CUDA forced to the fused memory_read op or to mdi + the read in torch ops
(mmrec_model.model.CUDA_READ; mmrec and mmrec-linear keep its default).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_common import Budget, command_line, fmt, machine, write_json  # noqa: E402
from compare_quality import QUALITY_ARCHS, cmd_quality  # noqa: E402
MODEL_ARCHS = ("mmrec", "mmrec-linear", "gpt", "lstm")
READ_VARIANTS = ("mmrec-fused", "mmrec-linear-fused", "mmrec-unfused", "mmrec-linear-unfused")
THROUGHPUT_ARCHS = MODEL_ARCHS + READ_VARIANTS



def _ints(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _archs(allowed):
    def parse(text: str) -> List[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"archs must be from {allowed}, got {text!r}")
        return values
    return parse


# ------------------------------------------------------------------------------------------ models
def build_model(arch: str, preset: str, vocab_size: Optional[int] = None):
    """The model of `arch` at MM-Rec preset `preset` (baselines matched to the nonlinear MM-Rec's count)."""
    from mmrec_model import MMRecConfig, MMRecLM
    import baselines
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    if arch in ("mmrec", "mmrec-linear") + READ_VARIANTS:
        import mmrec_model.model as model_module
        for read in ("fused", "unfused"):                              # a worker process builds one arch
            if arch.endswith("-" + read):
                model_module.CUDA_READ = read
        recurrence = "linear" if arch.startswith("mmrec-linear") else "nonlinear"
        return MMRecLM(MMRecConfig.preset(preset, recurrence=recurrence, **overrides))
    if arch in baselines.MODELS:
        return baselines.MODELS[arch](baselines.matched(arch, preset, vocab_size))
    raise ValueError(f"unknown arch {arch!r}; choose from {MODEL_ARCHS}")


def describe(model, device) -> Dict[str, Any]:
    """Parameter count, shape, and the device a worker row ran on."""
    import torch
    cfg = model.config
    keep = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ffn", "hidden_size", "recurrence", "n_banks",
            "n_slots", "chunk_len", "positions", "mlp", "tie_embeddings")
    info = {"params": model.num_parameters(), **{k: getattr(cfg, k) for k in keep if hasattr(cfg, k)}}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return info


def state_nbytes(state) -> int:
    """Bytes of a model state's tensors: MMRecState, KVCache (its allocated capacity), LSTMState; None: 0."""
    if state is None:
        return 0
    if hasattr(state, "nbytes"):
        return int(state.nbytes())
    return sum(t.numel() * t.element_size() for layer in state.layers
               for t in (layer.h, layer.m, layer.slots, layer.chunk_sum))


def state_storage_nbytes(state) -> int:
    """Bytes of the storages a state keeps alive: more than state_nbytes where its tensors are views into
    bigger buffers (as MMRecLM's returned state did before it held copies of the last step)."""
    if state is None:
        return 0
    tensors = state.k + state.v if hasattr(state, "k") else [state.h, state.c] if hasattr(state, "c") else \
        [t for layer in state.layers for t in (layer.h, layer.m, layer.slots, layer.chunk_sum)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _malloc_trim() -> bool:
    """glibc's malloc_trim(0): returns freed heap memory to the OS (False where there is no glibc)."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _is_oom(e: BaseException) -> bool:
    import torch
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _free(device) -> None:
    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ throughput
def throughput_rows(arch: str, sizes: List[int], a: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Training-step rows of one arch, yielded one by one (run inside a worker process)."""
    import torch
    import torch.nn.functional as F
    from mmrec_model.training.optimizer import adamw, own_gradients

    device = torch.device(a["device"])
    torch.manual_seed(0)
    model = build_model(arch, a["preset"], a["vocab"]).to(device).train()
    info = describe(model, device)
    V = model.config.vocab_size
    optimizer = adamw(model, 1e-4, 0.1, (0.9, 0.95))                   # the trainer's optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    bf16 = a["dtype"] == "bf16"
    mode = a.get("compile_mode") or None
    step_model = torch.compile(model, mode=mode) if a.get("compile") else model    # as the trainer's --compile on
    graphs = a.get("compile") and mode == "reduce-overhead" and device.type == "cuda"

    def train_step(data, batch: int, micro: int, T: int) -> float:
        """One optimizer step over `data` [batch, T + 1]; its seconds. Its tensors die with this frame (OOM)."""
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, batch, micro):
            x, y = data[i:i + micro, :-1], data[i:i + micro, 1:]
            if graphs:                                                  # as the trainer: a graph step per micro-batch
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, _ = step_model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
            (loss / (batch * T)).backward()
            del logits, loss
            if graphs and i == 0 and micro < batch:
                own_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    for T in sizes:
        batch = max(1, a["tokens_per_step"] // T)
        micro = max(1, min(batch, a["micro_tokens"] // T))
        while batch % micro:
            micro -= 1
        row = dict(arch=arch, T=T, batch=batch, micro_batch=micro, tokens_per_step=batch * T,
                   compiled=bool(a.get("compile")), compile_mode=(mode or "default") if a.get("compile") else None,
                   **info)
        times: List[float] = []
        data = None
        try:
            data = torch.randint(0, V, (batch, T + 1), device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            base_rss = _rss_mib()
            step = 0
            while True:
                dt = train_step(data, batch, micro, T)
                step += 1
                # a slow first eager step is warm-up enough; compiled: the first steps compile (static, then dynamic)
                warm = a["warmup"] if dt < 5.0 or a.get("compile") else 1
                if step > warm:
                    times.append(dt)
                # the row's time is its timed steps (compiling is not)
                if len(times) >= a["steps"] or (len(times) >= 2 and sum(times) > a["row_seconds"]):
                    break
            step_s = statistics.median(times)
            row.update(status="ok", step_s=step_s, tokens_per_s=batch * T / step_s, timed_steps=len(times),
                       step_times=times)
            if device.type == "cuda":
                row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                row["peak_kib_per_token"] = row["peak_mib"] * 1024 / (micro * T)   # per token of a micro-batch
            else:
                row.update(peak_mib=_maxrss_mib(), rss_before_mib=base_rss)
            if hasattr(model, "lstm_dtype"):
                row["lstm_dtype"] = model.lstm_dtype
            if a.get("profile"):
                row["profile"] = profile_step(lambda: train_step(data, batch, micro, T), a["profile"], device)
        except Exception as e:  # noqa: BLE001 -- every failure becomes a row, the run goes on
            row.update(status="oom" if _is_oom(e) else "error", error=f"{type(e).__name__}: {str(e)[:300]}")
            e = None
            optimizer.zero_grad(set_to_none=True)
        del data
        _free(device)
        yield row


def profile_step(step, top: int, device) -> Dict[str, Any]:
    """One more step under torch.profiler: on CUDA its kernels by summed device time, on the CPU its operators by
    self CPU time; the `top` heaviest with their calls, and the sum over all of them."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        step()
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    us = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    kernels = sorted((e for e in prof.key_averages() if e.device_type == kind), key=us, reverse=True)
    return {"total_us": sum(us(e) for e in kernels),
            "kernels": [dict(name=e.key[:160], us=us(e), calls=e.count) for e in kernels[:top]]}


# ------------------------------------------------------------------------------------------ generation
def generate_rows(arch: str, contexts: List[int], a: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Prefill + decode rows of one arch, yielded one by one (inside a worker process)."""
    import torch

    device = torch.device(a["device"])
    dtype = torch.bfloat16 if a["dtype"] == "bf16" else torch.float32
    torch.manual_seed(0)
    model = build_model(arch, a["preset"], a["vocab"]).to(device=device, dtype=dtype).eval()
    info = describe(model, device)
    weights_mib = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()) / 2**20
    V, B = model.config.vocab_size, a["batch"]
    warm, new = a["warmup_tokens"], a["new_tokens"]
    lstm_dtype = _lstm_dtype_for_generation(model, device) if arch == "lstm" else None
    with torch.no_grad():                    # warm-up outside the timings: first calls of every kernel
        state = model.init_state(B, device=device, dtype=dtype, capacity=80) if arch == "gpt" else None
        logits, state = model(torch.randint(0, V, (B, 64), device=device), state, last_only=True)
        for _ in range(4):
            logits, state = model(logits[:, -1].argmax(-1, keepdim=True), state)
        _sync(device)
    for ctx in contexts:
        row = dict(arch=arch, context=ctx, batch=B, new_tokens=new, dtype=a["dtype"], weights_mib=weights_mib,
                   prefill_chunk=a["prefill_chunk"], **info)
        if lstm_dtype is not None:
            row["lstm_dtype"] = lstm_dtype
        state = None
        try:
            _free(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rss0 = _rss_mib()
            prompt = torch.randint(0, V, (B, ctx), device=device)
            with torch.no_grad():
                if arch == "gpt":                                        # the whole KV cache, allocated once
                    state = model.init_state(B, device=device, dtype=dtype, capacity=ctx + warm + new)
                _sync(device)
                t0 = time.perf_counter()
                for s in range(0, ctx, a["prefill_chunk"]):
                    logits, state = model(prompt[:, s:s + a["prefill_chunk"]], state, last_only=True)
                _sync(device)
                prefill_s = time.perf_counter() - t0
                row.update(prefill_s=prefill_s, prefill_tokens_per_s=B * ctx / prefill_s,
                           state_mib=state_nbytes(state) / 2**20,
                           state_storage_after_prefill_mib=state_storage_nbytes(state) / 2**20)
                if device.type == "cuda":
                    row["prefill_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                    row["after_prefill_mib"] = torch.cuda.memory_allocated(device) / 2**20
                else:
                    row["rss_after_prefill_mib"] = _rss_mib()
                del prompt
                token = logits[:, -1].argmax(-1, keepdim=True)          # [B, 1]
                for _ in range(warm):                                    # (also drops prefill-sized buffers)
                    logits, state = model(token, state)
                    token = logits[:, -1].argmax(-1, keepdim=True)
                _sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    row["decode_start_mib"] = torch.cuda.memory_allocated(device) / 2**20
                steps = []
                for _ in range(new):                 # synchronised per step, as a sampler that checks eos is
                    t0 = time.perf_counter()
                    logits, state = model(token, state)
                    token = logits[:, -1].argmax(-1, keepdim=True)
                    _sync(device)
                    steps.append(time.perf_counter() - t0)
            step_s = statistics.median(steps)        # robust to another process taking the CPU for a moment
            row.update(status="ok", decode_s=sum(steps), token_ms=1e3 * step_s, decode_tokens_per_s=B / step_s,
                       decode_tokens_per_s_mean=B * new / sum(steps),
                       state_after_decode_mib=state_nbytes(state) / 2**20)
            if device.type == "cuda":
                row["decode_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            else:
                row.update(rss_before_mib=rss0, rss_after_decode_mib=_rss_mib(), peak_mib=_maxrss_mib())
                if _malloc_trim():              # freed prefill buffers back to the OS: RSS = what decoding holds
                    row["rss_after_decode_trimmed_mib"] = _rss_mib()
        except Exception as e:  # noqa: BLE001
            row.update(status="oom" if _is_oom(e) else "error", error=f"{type(e).__name__}: {str(e)[:300]}")
        state = logits = token = prompt = None
        _free(device)
        yield row


def _lstm_dtype_for_generation(model, device) -> str:
    """Runs the LSTM in the model's dtype if this cuDNN can (bf16 needs cuDNN >= 9.13), else in float32."""
    import torch
    try:
        with torch.no_grad():
            model(torch.zeros(1, 2, dtype=torch.long, device=device))
    except RuntimeError as e:
        print(f"# lstm: {str(e).splitlines()[0]}; the LSTM layers run in float32", file=sys.stderr)
        model.lstm.float()
        with torch.no_grad():
            model(torch.zeros(1, 2, dtype=torch.long, device=device))
    return model.lstm_dtype


# ------------------------------------------------------------------------------------------ workers
def _worker(kind: str, arch: str, points: List[int], a: Dict[str, Any], timeout: float) -> List[Dict[str, Any]]:
    """Runs rows in a fresh process (clean peak memory, and a crash or hang costs only these rows)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", kind, arch, ",".join(map(str, points)),
           json.dumps(a)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    key = "T" if kind == "throughput" else "context"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        sys.stderr.write(tail)
        done = [json.loads(line[2:]) for line in tail.splitlines() if line.startswith("@ ")]
        seen = {r[key] for r in done}
        return done + [dict(arch=arch, **{key: p}, status="timeout", error=f"worker passed {timeout:.0f} s")
                       for p in points if p not in seen]
    sys.stderr.write("\n".join(line for line in proc.stderr.splitlines() if not line.startswith("@ ")) + "\n")
    rows = [json.loads(line[2:]) for line in proc.stderr.splitlines() if line.startswith("@ ")]
    seen = {r[key] for r in rows}
    why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    return rows + [dict(arch=arch, **{key: p}, status="error", error=f"worker exit {proc.returncode}: {why}")
                   for p in points if p not in seen]


def _worker_main(argv: List[str]) -> int:
    kind, arch, points, a = argv[0], argv[1], _ints(argv[2]), json.loads(argv[3])
    import torch
    if a.get("threads"):
        torch.set_num_threads(a["threads"])
    fn = throughput_rows if kind == "throughput" else generate_rows
    for row in fn(arch, points, a):          # each row streamed as soon as it is done
        print(f"# {_row_line(kind, row)}", file=sys.stderr)
        print("@ " + json.dumps(row), file=sys.stderr, flush=True)
    return 0


# ------------------------------------------------------------------------------------------ tables
def _row_line(kind: str, r: Dict[str, Any]) -> str:
    if kind == "throughput":
        head = f"{r['arch']:<13} T={r['T']:<6} B={r.get('batch', '-')!s:<4} micro={r.get('micro_batch', '-')!s:<4}"
        if r.get("status") != "ok":
            return f"{head} {r.get('status', '?').upper()}: {r.get('error', '')}"
        how = ("compiled" + ("/" + r["compile_mode"] if r.get("compile_mode", "default") != "default" else "")
               if r.get("compiled") else "eager")
        return (f"{head} {how:<8} {r['params']:>12,} params "
                f"{r['tokens_per_s']:>12,.0f} tok/s  step {r['step_s']:.3f} s  peak {r['peak_mib']:,.0f} MiB")
    head = f"{r['arch']:<13} ctx={r['context']:<6} B={r.get('batch', '-')!s:<3}"
    if r.get("status") != "ok":
        return f"{head} {r.get('status', '?').upper()}: {r.get('error', '')}"
    peak = r.get("decode_peak_mib", r.get("peak_mib"))
    return (f"{head} decode {r['decode_tokens_per_s']:>10,.1f} tok/s ({r['token_ms']:.2f} ms/step)  "
            f"state {r['state_mib']:>9,.2f} MiB  peak {fmt(peak)} MiB  prefill {r['prefill_tokens_per_s']:>10,.0f} tok/s")


def print_table(kind: str, rows: List[Dict[str, Any]]) -> None:
    print()
    for r in rows:
        print(_row_line(kind, r))
        prof = r.get("profile")
        if prof:
            print(f"    kernels (cuda) or operators (cpu) of one step: {prof['total_us'] / 1e3:,.1f} ms")
            for k in prof["kernels"]:
                print(f"    {k['us'] / 1e3:9.2f} ms {100 * k['us'] / prof['total_us']:5.1f} % {k['calls']:6d}x  {k['name']}")


# ------------------------------------------------------------------------------------------ subcommands
def cmd_throughput(args) -> Path:
    if args.quick:
        args.device, args.preset, args.sizes, args.tokens_per_step = "cpu", "tiny", [16, 32], 64
        args.micro_tokens, args.steps, args.warmup, args.dtype = 32, 2, 1, "fp32"
    preset = args.preset or ("base" if args.device == "cuda" else "small")
    compiled = args.compile == "on" or (args.compile == "auto" and args.device == "cuda")
    a = dict(device=args.device, preset=preset, vocab=args.vocab, dtype=args.dtype, compile=compiled,
             tokens_per_step=args.tokens_per_step,
             micro_tokens=args.micro_tokens or args.tokens_per_step, steps=args.steps, warmup=args.warmup,
             row_seconds=args.row_seconds, threads=args.threads, profile=args.profile,
             compile_mode=None if args.compile_mode == "default" else args.compile_mode,
             row_clock="timed steps")           # row_seconds counts the timed steps (earlier JSONs: from warm-up)
    payload = {"kind": "throughput", "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine(args.device, gpu=False), "settings": a, "quick": args.quick, "rows": []}
    rows, clock = payload["rows"], Budget(args.budget_s)
    # the device's default (cuda compiled, cpu eager, as the trainer's --compile auto) -> throughput_<device>.json
    other = "" if compiled == (args.device == "cuda") else ("_compiled" if compiled else "_eager")
    name = f"throughput_{args.device}{other}.json"
    for arch in args.archs:
        # CPU: one process per row, for a clean peak RSS each; CUDA: one per arch (peak stats reset per row)
        groups = [[T] for T in args.sizes] if args.device == "cpu" and not args.quick else [args.sizes]
        for points in groups:
            rows += _worker("throughput", arch, points, a, clock.timeout(args.worker_timeout))
            write_json(payload, args.out, name, args.quick, quiet=True)
    print_table("throughput", rows)
    payload["machine"] = machine(args.device)
    return write_json(payload, args.out, name, args.quick)


def cmd_generate(args) -> Path:
    if args.quick:
        args.device, args.preset, args.contexts, args.new_tokens = "cpu", "tiny", [16, 64], 4
        args.prefill_chunk, args.warmup_tokens, args.batches = 32, 1, [1]
    preset = args.preset or ("base" if args.device == "cuda" else "small")
    payload = {"kind": "generate", "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine(args.device, gpu=False), "settings": [], "quick": args.quick, "rows": []}
    rows, clock = payload["rows"], Budget(args.budget_s)
    for batch in args.batches:
        a = dict(device=args.device, preset=preset, vocab=args.vocab, dtype=args.dtype, batch=batch,
                 new_tokens=args.new_tokens, warmup_tokens=args.warmup_tokens, prefill_chunk=args.prefill_chunk,
                 threads=args.threads)
        payload["settings"].append(a)
        for arch in args.archs:
            groups = [[c] for c in args.contexts] if args.device == "cpu" and not args.quick else [args.contexts]
            for points in groups:
                rows += _worker("generate", arch, points, a, clock.timeout(args.worker_timeout))
                write_json(payload, args.out, f"generate_{args.device}.json", args.quick, quiet=True)
    print_table("generate", rows)
    payload["machine"] = machine(args.device)
    return write_json(payload, args.out, f"generate_{args.device}.json", args.quick)


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/compare_models.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q, archs_allowed, archs_default):
        q.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
        q.add_argument("--preset", default=None, choices=("tiny", "small", "base"),
                       help="MM-Rec preset the models are sized to (default: base on cuda, small on cpu)")
        q.add_argument("--archs", type=_archs(archs_allowed), default=list(archs_default))
        q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
        q.add_argument("--quick", action="store_true", help="tiny shapes on the CPU, in seconds")
        q.add_argument("--out", default=None, help="JSON path")
        q.add_argument("--budget-s", type=float, default=None,
                       help="wall-clock budget: worker timeouts are cut so that the subcommand ends in time")

    t = sub.add_parser("throughput", help="training tokens/s and peak memory")
    common(t, THROUGHPUT_ARCHS, MODEL_ARCHS)
    t.add_argument("--sizes", type=_ints, default=[1024, 4096, 16384], help="sequence lengths T")
    t.add_argument("--tokens-per-step", type=int, default=65536, help="tokens per optimizer step (batch = this / T)")
    t.add_argument("--micro-tokens", type=int, default=16384,
                   help="tokens per forward/backward (gradient accumulation above); 0 = the whole step at once")
    t.add_argument("--vocab", type=int, default=None, help="vocabulary (default: the preset's)")
    t.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="bf16: autocast, as the trainer on GPU (default: bf16 on cuda, fp32 on cpu)")
    t.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the model as the trainer does (auto: on for cuda, off for cpu)")
    t.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                   default="reduce-overhead", help="torch.compile's mode for every arch (reduce-overhead: CUDA "
                   "graphs, the trainer's default on CUDA; no effect on the CPU)")
    t.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--row-seconds", type=float, default=30.0,
                   help="stop timing a row after this many seconds of timed steps (min 2 steps; warm-up not counted)")
    t.add_argument("--worker-timeout", type=float, default=300.0)
    t.add_argument("--profile", type=int, default=0, metavar="K",
                   help="profile one more step per row and keep its K heaviest CUDA kernels (cpu: operators by "
                        "self time); 0 = off")

    g = sub.add_parser("generate", help="decode tokens/s and memory against context length")
    common(g, MODEL_ARCHS, MODEL_ARCHS)
    g.add_argument("--contexts", type=_ints, default=[1024, 4096, 16384, 65536])
    g.add_argument("--batches", type=_ints, default=[1], help="batch sizes (rows decoded together)")
    g.add_argument("--new-tokens", type=int, default=64, help="timed decode steps")
    g.add_argument("--warmup-tokens", type=int, default=8, help="decode steps before timing")
    g.add_argument("--prefill-chunk", type=int, default=16384, help="tokens per prefill call")
    g.add_argument("--vocab", type=int, default=None)
    g.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="weights and state dtype (default: bf16 on cuda, fp32 on cpu)")
    g.add_argument("--worker-timeout", type=float, default=300.0)

    q = sub.add_parser("quality", help="three-stage pipeline per arch and seed; held-out losses")
    common(q, QUALITY_ARCHS, ("mmrec", "gpt", "lstm"))
    q.add_argument("--seeds", type=_ints, default=None, help="trainer seeds (default 1,2)")
    q.add_argument("--jobs", type=int, default=1, help="pipelines run at once (quality only; not a speed measure)")
    q.add_argument("--run-timeout", type=float, default=600.0, help="seconds per pipeline run")
    q.add_argument("--runs-dir", default=None, help="where the runs go (default runs/quality_<device>)")
    q.add_argument("--data-dir", default=None, help="trainer --data-dir (default: the bundled data)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        return _worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.cmd in ("throughput", "generate"):
        if args.dtype is None:
            args.dtype = "bf16" if args.device == "cuda" and not args.quick else "fp32"
        (cmd_throughput if args.cmd == "throughput" else cmd_generate)(args)
    else:
        args.seeds_given = args.seeds is not None
        args.seeds = args.seeds or [1, 2]
        args.preset = args.preset or "small"
        cmd_quality(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
