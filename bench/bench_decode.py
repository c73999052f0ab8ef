"""Decode speed against context and batch (issue 18): MM-Rec (both variants) through its one-token step
(decode.py; on CPU one C++ kernel call per token, on GPU a CUDA graph), the same step in torch ops
(`mmrec-nonlinear-torchops`, CPU: decode.py's path for other dtypes), MM-Rec through ``model(token[:, None], state)`` per token (the path
generation took before the step: custom ops per token), the project's GPT baseline (bench/baselines.py, KV cache, eager), and on
a GPU the Hugging Face GPT-2 `generate()` eager and with a static cache + torch.compile.

    python bench/bench_decode.py                                # CPU defaults (contexts 256, 1024, 4096)
    python bench/bench_decode.py --device cuda                   # contexts 1K-64K, batches 1, 8, 64
    python bench/bench_decode.py --quick                         # tiny shapes: the script runs, numbers mean nothing

Every row prefills `context` real tokens per row (in segments of --prefill-chunk, the state or cache carried),
then times `--tokens` greedy decode steps (sample + step, as generate runs them). ms/token is per step of the
whole batch; tokens/s = B / (s/step). "fwd share" is the cost per token of one B=1, 256-token forward pass of
the same model measured in the same run; "x fwd" = ms/token / fwd share (the overhead a decoded token pays).
"vs mmrec" = this row's tokens/s over MM-Rec nonlinear's at the same shape. Memory: the decode state's size
(MM-Rec buffers, KV caches) and the process peak (CPU: ru_maxrss; CUDA: max_memory_allocated).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("mmrec-nonlinear", "mmrec-linear", "mmrec-nonlinear-compiled", "mmrec-linear-compiled",
          "mmrec-nonlinear-torchops", "mmrec-nonlinear-forward", "gpt", "hf-gpt2", "hf-gpt2-static-compile")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _fwd_share_ms(model, V: int, device, repeat: int = 3) -> float:
    """ms per token of one B=1, T=256 forward pass (median of `repeat`)."""
    ids = torch.randint(0, V, (1, 256), device=device)
    with torch.no_grad():
        model(ids)
        times = sorted(_timed(lambda: model(ids), device) for _ in range(repeat))
    return 1e3 * times[len(times) // 2] / 256


# ------------------------------------------------------------------------------------------ MM-Rec
def bench_mmrec(recurrence: str, args, device, contexts, batches, forward: bool = False,
                compiled: bool = False, torch_ops: bool = False) -> List[Dict]:
    from mmrec_model import MMRecConfig, MMRecLM
    from mmrec_model.generate import prefill, sample

    torch.manual_seed(0)
    config = MMRecConfig.preset(args.preset, recurrence=recurrence, **(_quick() if args.quick else {}))
    model = MMRecLM(config).to(device=device, dtype=args.dtype).eval()
    share = _fwd_share_ms(model, config.vocab_size, device)
    rows = []
    for ctx in contexts:
        for B in batches:
            if not _feasible(args, ctx, B):
                continue
            ids = torch.randint(0, config.vocab_size, (B, ctx), device=device)
            with torch.no_grad():
                state = None
                for s in range(0, ctx - 1, args.prefill_chunk):                       # all but the last token
                    _, state = model(ids[:, s:min(s + args.prefill_chunk, ctx - 1)], state, last_only=True)
                ds, logits = prefill(model, list(ids[:, -1:]), state)                  # the last token per row
                if torch_ops:
                    from mmrec_model.decode import DecodeState
                    ops = DecodeState(model, B, kernel=False)
                    ops.load(ds.export())
                    ds = ops
            state_mib = sum(t.numel() * t.element_size() for t in ds.mem + ds.chunk_sum) / 2**20
            if forward:
                def loop(n):
                    nonlocal state
                    lg = logits
                    with torch.no_grad():
                        for _ in range(n):
                            token = sample(lg, 0.0, None, None, None)
                            out, state = model(token[:, None], state)
                            lg = out[:, -1]
                _, state = model(ids[:, -1:], state)
                loop(4)
                secs = _timed(lambda: loop(args.tokens), device)
            elif device.type == "cuda":
                from mmrec_model.decode_cuda import GraphDecoder
                dec = GraphDecoder(ds, logits, ids[:, -1], args.tokens + 8,
                                   lambda lg, g: sample(lg, 0.0, None, None, g), None, None, compiled=compiled)
                dec.run(8, lambda col: False, list, 8)                                  # warm replays
                secs = _timed(lambda: dec.run(args.tokens, lambda col: False, list, 8), device)
            else:
                from mmrec_model.decode import step

                def loop(n):
                    lg = logits
                    for _ in range(n):
                        token = sample(lg, 0.0, None, None, None)
                        lg = step(ds, token)
                with torch.no_grad():
                    loop(4)
                    secs = _timed(lambda: loop(args.tokens), device)
            name = (f"mmrec-{recurrence}" + ("-forward" if forward else "-torchops" if torch_ops else "")
                    + ("-compiled" if compiled else ""))
            rows.append(_row(name, ctx, B, secs, args.tokens, share, state_mib, device))
    return rows


def _quick() -> Dict:
    return dict(vocab_size=500, d_model=32, n_layers=2, n_heads=2, n_read_heads=2, n_slots=4, chunk_len=8)


def _feasible(args, ctx: int, B: int) -> bool:
    """Skips shapes over --max-prefill tokens (CPU: prefill costs ~0.2-1 ms per token and row on 2 cores; GPU: the
    peers' KV cache at 64K x 64 rows would need ~150 GB)."""
    if ctx * B > args.max_prefill:
        print(f"  skip context {ctx} x batch {B}: prefill of {ctx * B:,} tokens > --max-prefill {args.max_prefill:,}")
        return False
    return True


def _row(model: str, ctx: int, B: int, secs: float, n: int, share: Optional[float], state_mib: float, device) -> Dict:
    ms = 1e3 * secs / n
    return dict(model=model, context=ctx, batch=B, ms_per_token=ms, tokens_per_s=B * n / secs,
                fwd_share_ms=share, x_fwd=(ms / share if share else None), state_mib=state_mib,
                peak_mib=_peak_mib(device))


# ------------------------------------------------------------------------------------------ GPT baseline
def bench_gpt(args, device, contexts, batches) -> List[Dict]:
    from baselines import GPTLM

    from mmrec_model.generate import sample
    torch.manual_seed(0)
    overrides = _quick() if args.quick else {}
    overrides = {k: v for k, v in overrides.items() if k in ("vocab_size",)}
    model = GPTLM.from_preset(args.preset, **overrides).to(device=device, dtype=args.dtype).eval()
    V = model.config.vocab_size
    share = _fwd_share_ms(model, V, device)
    rows = []
    for ctx in contexts:
        for B in batches:
            if not _feasible(args, ctx, B):
                continue
            ids = torch.randint(0, V, (B, ctx), device=device)
            try:
                with torch.no_grad():
                    cache = model.init_state(B, device=device, capacity=ctx + args.tokens + 8)
                    for s in range(0, ctx, args.prefill_chunk):
                        logits, cache = model(ids[:, s:s + args.prefill_chunk], cache, last_only=True)

                    def loop(n):
                        nonlocal logits, cache
                        for _ in range(n):
                            token = sample(logits[:, -1], 0.0, None, None, None)
                            logits, cache = model(token[:, None], cache)
                    loop(4)
                    secs = _timed(lambda: loop(args.tokens), device)
                rows.append(_row("gpt", ctx, B, secs, args.tokens, share, cache.nbytes() / 2**20, device))
            except torch.OutOfMemoryError:
                print(f"  gpt context {ctx} batch {B}: out of memory")
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------ HF GPT-2
def bench_hf(compiled: bool, args, device, contexts, batches) -> List[Dict]:
    name = "hf-gpt2-static-compile" if compiled else "hf-gpt2"
    if device.type != "cuda":
        print(f"  {name}: skipped on CPU (the peer is measured on the GPU run only)")
        return []
    try:
        from transformers import GPT2Config, GPT2LMHeadModel, StoppingCriteria, StoppingCriteriaList
    except ImportError as e:
        print(f"  {name}: skipped, transformers is not importable ({e})")
        return []
    rows = []
    for ctx in contexts:
        torch.manual_seed(0)
        cfg = GPT2Config(n_positions=ctx + args.tokens + 16)                          # GPT-2 small, random weights
        model = GPT2LMHeadModel(cfg).to(device=device, dtype=args.dtype).eval()
        if compiled:     # transformers compiles the forward itself for a static cache (generation_config.compile_config)
            model.generation_config.cache_implementation = "static"
        for B in batches:
            if not _feasible(args, ctx, B):
                continue
            ids = torch.randint(0, cfg.vocab_size, (B, ctx), device=device)
            mask = torch.ones_like(ids)

            class StopAt(StoppingCriteria):
                """Ends generation at `length` tokens: every call asks for the same max_new_tokens, so the static
                cache (sized prompt + max_new_tokens) and its compiled graph are the same (a new size recompiles)."""
                def __init__(self, length: int):
                    self.length = length

                def __call__(self, input_ids, scores, **kwargs):
                    return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool,
                                      device=input_ids.device)

            def gen(n):
                return model.generate(ids, attention_mask=mask, max_new_tokens=args.tokens + 1,
                                      min_new_tokens=args.tokens + 1, do_sample=False, pad_token_id=0,
                                      stopping_criteria=StoppingCriteriaList([StopAt(ctx + n)]))
            try:
                with torch.no_grad():
                    for _ in range(2):
                        gen(args.tokens + 1)                                            # warm (compiles)
                    t1 = _timed(lambda: gen(1), device)                                 # prefill + 1 token
                    tn = _timed(lambda: gen(args.tokens + 1), device)
                secs = max(tn - t1, 1e-9)
                kv = 2 * cfg.n_layer * B * (ctx + args.tokens) * cfg.n_embd * torch.finfo(args.dtype).bits // 8
                rows.append(_row(name, ctx, B, secs, args.tokens, None, kv / 2**20, device))
            except torch.OutOfMemoryError:
                print(f"  {name} context {ctx} batch {B}: out of memory")
                torch.cuda.empty_cache()
        del model
    return rows


# ------------------------------------------------------------------------------------------ table
def table(rows: List[Dict]) -> str:
    ref = {(r["context"], r["batch"]): r["tokens_per_s"] for r in rows if r["model"] == "mmrec-nonlinear"}
    head = (f"{'context':>8} {'batch':>5} {'model':24} {'ms/token':>9} {'tokens/s':>10} {'fwd share':>9} "
            f"{'x fwd':>6} {'vs mmrec':>8} {'state MiB':>10} {'peak MiB':>9}")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["context"], r["batch"], MODELS.index(r["model"]))):
        vs = r["tokens_per_s"] / ref[(r["context"], r["batch"])] if (r["context"], r["batch"]) in ref else None
        share = f"{r['fwd_share_ms']:.3f}" if r["fwd_share_ms"] else "-"
        x_fwd = f"{r['x_fwd']:.1f}" if r["x_fwd"] else "-"
        vs = f"{vs:.2f}" if vs else "-"
        lines.append(f"{r['context']:>8} {r['batch']:>5} {r['model']:24} {r['ms_per_token']:>9.3f} "
                     f"{r['tokens_per_s']:>10.0f} {share:>9} {x_fwd:>6} {vs:>8} {r['state_mib']:>10.2f} "
                     f"{r['peak_mib']:>9.0f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--preset", default="small")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--contexts", default=None, help="comma list; default cpu 256,1024,4096, cuda 1K..64K")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--tokens", type=int, default=None, help="decode steps timed (default cpu 128, cuda 512)")
    p.add_argument("--prefill-chunk", type=int, default=4096)
    p.add_argument("--max-prefill", type=int, default=None,
                   help="skip shapes with context x batch above this (default cpu 70,000, cuda unlimited)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_decode: --device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    contexts = [int(c) for c in (args.contexts or ("1024,4096,16384,65536" if cuda else "256,1024,4096")).split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    args.tokens = args.tokens or (512 if cuda else 128)
    args.max_prefill = args.max_prefill or (1 << 62 if cuda else 70_000)
    if args.quick:
        contexts, batches, args.tokens = [16, 64], [1, 4], 16
    models = args.models.split(",")
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"bench_decode: unknown models {sorted(unknown)}; choose from {MODELS}")

    load_before = os.getloadavg()
    env = dict(device=str(torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()),
               cpus=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__, preset=args.preset,
               dtype=str(args.dtype), tokens=args.tokens, load_before=load_before)
    print(f"bench_decode: {env}")
    rows: List[Dict] = []
    errors: Dict[str, str] = {}
    env["load_after"] = load_before
    for name in models:
        print(f"- {name}", flush=True)
        if name.endswith("-compiled") and not cuda:
            print("  (skipped: the compiled step is captured in a CUDA graph, GPU only)")
            continue
        try:                                  # a failing model is reported and the others still run
            if name.startswith("mmrec-"):
                new = bench_mmrec(name.split("-")[1], args, device, contexts, batches, name.endswith("-forward"),
                                  name.endswith("-compiled"), name.endswith("-torchops"))
            elif name == "gpt":
                new = bench_gpt(args, device, contexts, batches)
            else:
                new = bench_hf(name.endswith("compile"), args, device, contexts, batches)
        except Exception as e:  # noqa: BLE001
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            print(f"  {name} failed: {errors[name]}", flush=True)
            new = []
        for r in new:
            print(f"  {r['context']:>6} x B={r['batch']:<3} {r['ms_per_token']:8.3f} ms/token {r['tokens_per_s']:10.0f} "
                  f"tokens/s", flush=True)
        rows += new
        env["load_after"] = os.getloadavg()
        if args.json:                         # rewritten after every model: a run cut short keeps its rows
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(dict(env=env, command=" ".join(sys.argv), rows=rows, errors=errors),
                                                  indent=1) + "\n")
    print(table(rows))
    print(f"load average (1, 5, 15 min) before {load_before}, after {env['load_after']}")


if __name__ == "__main__":
    main()
