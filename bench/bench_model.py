"""Model-level benchmarks of mmrec_model: training steps and generation. Prints a table; --json writes it.

    python bench/bench_model.py                      # every case, each in a fresh process (clean peak memory)
    python bench/bench_model.py --cases gen-small     # some cases
    python bench/bench_model.py --quick               # tiny shapes: checks the script runs, numbers mean nothing

Cases:
  train-small     full step (forward, backward, AdamW) of the `small` preset, B=1, T=256
  train-original  the same for a model the size of the original's CPU configuration: D=512, 16 layers,
                  vocabulary 100,277, untied LM head (~163M parameters), B=1, T=256
  gen-small       generation with `small`: decode tokens/s and memory after a 256-token prompt
  gen-small-16k   the same after a 16,384-token prompt (goal: within 10% of gen-small, flat memory)
Peak memory is the process's peak RSS on CPU (ru_maxrss) and torch.cuda.max_memory_allocated on CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = ("train-small", "train-original", "gen-small", "gen-small-16k")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib(device) -> float:
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(case: str, quick: bool, recurrence: str):
    from mmrec_model import MMRecConfig
    if quick:
        return MMRecConfig.preset("tiny", d_model=32, n_heads=2, n_read_heads=2, vocab_size=500,
                                  recurrence=recurrence)
    if case == "train-original":
        return MMRecConfig.preset("base", d_model=512, n_layers=16, n_heads=8, n_read_heads=8, vocab_size=100277,
                                  tie_embeddings=False, recurrence=recurrence)
    return MMRecConfig.preset("small", recurrence=recurrence)


def run_case(case: str, args) -> dict:
    import mmrec_ops
    import torch
    import torch.nn.functional as F
    from mmrec_model import MMRecLM
    from mmrec_model.training.optimizer import adamw
    from mmrec_model.training.runtime import keep_freed_memory

    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = device.type == "cpu" and args.keep_freed_memory and keep_freed_memory()   # as the trainer does on CPU
    config = _config(case, args.quick, args.recurrence)
    model = MMRecLM(config).to(device)
    V = config.vocab_size
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    row = dict(case=case, device=str(device), recurrence=config.recurrence, params=model.num_parameters(),
               d_model=config.d_model, n_layers=config.n_layers, vocab=V, bf16=args.bf16,
               backends={op: where[device.type] for op, where in mmrec_ops.available_backends().items()},
               threads=torch.get_num_threads(), keep_freed_memory=kept)

    if case.startswith("train"):
        B, T = 1, (32 if args.quick else 256)
        opt = adamw(model, 1e-4, 0.01)                                              # the trainer's optimizer
        batch = torch.randint(0, V, (B, T + 1), device=device)
        times = []
        for step in range(args.warmup + args.steps):
            _sync(device)
            start = time.perf_counter()
            with autocast:
                logits, _ = model(batch[:, :-1])
                loss = F.cross_entropy(logits.float().reshape(-1, V), batch[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        row.update(batch=B, seq=T, step_s=step_s, tokens_per_s=B * T / step_s, peak_mib=_peak_mib(device))
        return row

    model.eval()
    prompt_len = (64 if args.quick else 256) if case == "gen-small" else (512 if args.quick else 16384)
    new_tokens = 16 if args.quick else args.new_tokens
    prompt = torch.randint(0, V, (1, prompt_len), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad(), autocast:
        _sync(device)
        start = time.perf_counter()
        logits, state = model(prompt, last_only=True)
        _sync(device)
        prefill_s = time.perf_counter() - start
        rss_before = _rss_mib()
        token = torch.multinomial(torch.softmax(logits[:, -1].float(), -1), 1, generator=gen)
        times = []
        for _ in range(new_tokens):
            _sync(device)
            start = time.perf_counter()
            logits, state = model(token, state)
            token = torch.multinomial(torch.softmax(logits[:, -1].float(), -1), 1, generator=gen)
            _sync(device)
            times.append(time.perf_counter() - start)
        rss_after = _rss_mib()
    decode = times[min(4, len(times) - 1):]                                  # first calls warm the allocator
    token_s = statistics.median(decode)
    row.update(prompt=prompt_len, new_tokens=new_tokens, prefill_s=prefill_s,
               prefill_tokens_per_s=prompt_len / prefill_s, token_ms=1e3 * token_s, tokens_per_s=1 / token_s, rss_decode_start_mib=rss_before,
               rss_decode_end_mib=rss_after, peak_mib=_peak_mib(device))
    return row


def _table(rows) -> str:
    lines = [f"{'case':16} {'params':>12} {'rec':>9} {'tokens/s':>10} {'step s':>8} {'token ms':>9} "
             f"{'peak MiB':>9} {'decode RSS MiB':>16}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:16} error: {r['error']}")
            continue
        step = f"{r['step_s']:.3f}" if "step_s" in r else "-"
        tok = f"{r['token_ms']:.2f}" if "token_ms" in r else "-"
        rss = (f"{r['rss_decode_start_mib']:.0f} -> {r['rss_decode_end_mib']:.0f}"
               if "rss_decode_start_mib" in r else "-")
        lines.append(f"{r['case']:16} {r['params']:>12,} {r['recurrence']:>9} {r['tokens_per_s']:>10.1f} {step:>8} "
                     f"{tok:>9} {r['peak_mib']:>9.0f} {rss:>16}")
    gens = {r["case"]: r for r in rows if r["case"].startswith("gen") and "error" not in r}
    if {"gen-small", "gen-small-16k"} <= set(gens):
        ratio = gens["gen-small-16k"]["tokens_per_s"] / gens["gen-small"]["tokens_per_s"]
        lines.append(f"decode tokens/s at 16,384 / at 256 prompt tokens: {ratio:.3f} (goal: within 0.9 .. 1.1)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recurrence", choices=("nonlinear", "linear"), default="nonlinear")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, to check the script")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="CPU: the trainer's allocator setting (training/runtime.py keep_freed_memory; "
                             "--no-keep-freed-memory: glibc's default)")
    parser.add_argument("--json", help="write the rows (and the machine) to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_case(args.worker, args)))
        return
    rows = []
    passthrough = ["--device", args.device, "--recurrence", args.recurrence, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--new-tokens", str(args.new_tokens), "--threads", str(args.threads)]
    passthrough += ["--bf16"] * args.bf16 + ["--quick"] * args.quick
    passthrough += [] if args.keep_freed_memory else ["--no-keep-freed-memory"]
    for case in args.cases:
        proc = subprocess.run([sys.executable, __file__, "--worker", case, *passthrough], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            rows.append(dict(case=case, error=proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"))
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                           rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
