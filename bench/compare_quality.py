"""bench/compare_models.py quality: the three-stage pipeline (`python -m mmrec_model.train` via
bench/train_baseline.py) per arch and seed at the `small` size with equal tokens, and the held-out losses of every
stage; quality_summary gives bench/plot_benchmarks.py its table."""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from compare_common import HERE, QUICK_RESULTS, ROOT, Budget, command_line, fmt, machine, write_json

QUALITY_ARCHS = ("mmrec", "mmrec-linear", "mmrec-tbptt", "gpt", "lstm")
STAGES = ("pretrain", "instruct", "chat")

# The quality runs: the settings of bench/results/gpu_train/README.md (the `small` preset on the H100),
# with TBPTT off (every arch sees the same random 512-token windows) and the held-out sets read in full
# (pre-training: 64 windows of 512 tokens per set; instruct/chat: every held-out example).
QUALITY_SETS = ["vocab_size=8192", "stages.pretrain.max_steps=400", "stages.pretrain.batch_size=32",
                "stages.pretrain.seq_len=512", "stages.pretrain.eval_every=100", "stages.pretrain.eval_windows=64",
                "stages.instruct.max_steps=150", "stages.instruct.eval_windows=1000",
                "stages.chat.max_steps=100", "stages.chat.eval_windows=1000"]
QUALITY_SETS_QUICK = ["vocab_size=512", "tokenizer_max_chars=60000", "stages.pretrain.max_steps=3",
                      "stages.pretrain.batch_size=4", "stages.pretrain.seq_len=32", "stages.pretrain.eval_every=0",
                      "stages.pretrain.eval_windows=4", "stages.pretrain.sample_tokens=4",
                      "stages.instruct.max_steps=2", "stages.instruct.batch_size=4", "stages.instruct.seq_len=48",
                      "stages.instruct.eval_every=0", "stages.instruct.eval_windows=4",
                      "stages.instruct.sample_tokens=4", "stages.chat.max_steps=2", "stages.chat.batch_size=4",
                      "stages.chat.seq_len=64", "stages.chat.eval_every=0", "stages.chat.eval_windows=4",
                      "stages.chat.sample_tokens=4"]


def _run_params(run_dir: Path, arch: str) -> Optional[int]:
    """Parameter count of a run's pre-trained model, from its config.json (built on the meta device)."""
    import torch
    final = run_dir / "pretrain" / "final" / "config.json"
    if not final.is_file():
        return None
    if arch.startswith("mmrec"):
        from mmrec_model import MMRecConfig, MMRecLM
        with torch.device("meta"):
            return MMRecLM(MMRecConfig.load(str(final))).num_parameters()
    import baselines
    return baselines.CONFIGS[arch].load(str(final)).num_parameters()


def collect_run(run_dir: Path, arch: str, seed: int) -> Dict[str, Any]:
    """Held-out results of one finished (or failed) pipeline run, from its stage outputs and metrics.jsonl."""
    out: Dict[str, Any] = {"arch": arch, "seed": seed, "run_dir": str(run_dir), "stages": {}}
    for stage in STAGES:
        meta = run_dir / stage / "final" / "meta.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            out["stages"][stage] = {k: m.get(k) for k in ("steps", "tokens", "time_s", "loss_first", "loss_last",
                                                          "held_out")}
    curves: Dict[str, Dict[str, List]] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("kind") == "eval":
                curves.setdefault(r["stage"], {}).setdefault(r["set"], []).append([r["step"], r["loss"]])
    out["eval_curves"] = curves
    out["params"] = _run_params(run_dir, arch)
    return out


def quality_commands(args, runs_dir: Path) -> List[Dict[str, Any]]:
    sets = QUALITY_SETS_QUICK if args.quick else QUALITY_SETS
    jobs = []
    for seed in args.seeds:
        for arch in args.archs:
            base_arch = "mmrec" if arch.startswith("mmrec") else arch
            extra = []
            if arch.startswith("mmrec"):
                extra += ["--set", f"stages.pretrain.tbptt={'true' if arch == 'mmrec-tbptt' else 'false'}"]
            if arch == "mmrec-linear":
                extra += ["--set", "model.recurrence=linear"]
            run_dir = runs_dir / f"{arch}-seed{seed}"
            cmd = [sys.executable, str(HERE / "train_baseline.py"), "--arch", base_arch, "--stage", "all",
                   "--preset", args.preset, "--device", args.device, "--seed", str(seed), "--no-progress",
                   "--out", str(run_dir)]
            for s in sets:
                cmd += ["--set", s]
            cmd += extra
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            jobs.append({"arch": arch, "seed": seed, "run_dir": run_dir, "cmd": cmd})
    # the MM-Rec variants (tbptt, linear) after the main comparison, so that a cut budget loses them first
    jobs.sort(key=lambda j: (j["arch"] in ("mmrec-tbptt", "mmrec-linear"), j["seed"], args.archs.index(j["arch"])))
    return jobs


def _terminate(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def cmd_quality(args) -> Path:
    if args.quick:
        args.device, args.preset = "cpu", "tiny"
        args.seeds = args.seeds if args.seeds_given else [1]
    runs_dir = Path(args.runs_dir) if args.runs_dir else \
        (QUICK_RESULTS if args.quick else ROOT / "runs") / f"quality_{args.device}"
    if args.quick and not args.runs_dir:
        shutil.rmtree(runs_dir, ignore_errors=True)                   # scratch runs of an earlier --quick
    jobs = quality_commands(args, runs_dir)
    for j in jobs:
        if j["run_dir"].exists() and any(j["run_dir"].iterdir()):
            raise SystemExit(f"error: {j['run_dir']} already exists; pass another --runs-dir or remove it")
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, args.jobs))))
    pending, running, results = list(jobs), [], []
    t_all = time.perf_counter()
    settings = dict(device=args.device, preset=args.preset, seeds=args.seeds, archs=args.archs, jobs=args.jobs,
                    sets=QUALITY_SETS_QUICK if args.quick else QUALITY_SETS)
    payload = {"kind": "quality", "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine(args.device, gpu=False), "settings": settings, "quick": args.quick, "runs": results}
    clock = Budget(args.budget_s)
    previous = signal.signal(signal.SIGTERM, _terminate)    # `timeout` stops us: stop the runs too
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                j = pending.pop(0)
                if clock.timeout(args.run_timeout) < 30:           # not enough budget left to finish a run
                    results.append({"arch": j["arch"], "seed": j["seed"], "status": "skipped (budget)", "stages": {},
                                    "command": " ".join(shlex.quote(c) for c in j["cmd"])})
                    continue
                j["run_dir"].mkdir(parents=True, exist_ok=True)
                j["log"] = open(j["run_dir"].parent / f"{j['run_dir'].name}.log", "w")
                j["log"].write("$ " + " ".join(shlex.quote(c) for c in j["cmd"]) + "\n")
                j["log"].flush()
                j["proc"] = subprocess.Popen(j["cmd"], stdout=j["log"], stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
                j["t0"] = time.perf_counter()
                j["timeout"] = clock.timeout(args.run_timeout)
                print(f"# started {j['arch']} seed {j['seed']}", file=sys.stderr, flush=True)
                running.append(j)
            time.sleep(0.2)
            for j in list(running):
                rc = j["proc"].poll()
                wall = time.perf_counter() - j["t0"]
                if rc is None and wall > j["timeout"]:
                    os.killpg(j["proc"].pid, signal.SIGKILL)
                    j["proc"].wait()
                    rc = "timeout"
                if rc is None:
                    continue
                running.remove(j)
                j["log"].close()
                r = collect_run(j["run_dir"], j["arch"], j["seed"])
                r.update(status="ok" if rc == 0 else ("timeout" if rc == "timeout" else f"exit {rc}"), wall_s=wall,
                         command=" ".join(shlex.quote(c) for c in j["cmd"]), log=str(j["log"].name))
                results.append(r)
                print(f"# {j['arch']} seed {j['seed']}: {r['status']} in {wall:.0f} s", file=sys.stderr, flush=True)
                write_json(payload, args.out, f"quality_{args.device}.json", args.quick, quiet=True)
    finally:
        for j in running:                                  # their own sessions: not in our process group
            os.killpg(j["proc"].pid, signal.SIGKILL)
        signal.signal(signal.SIGTERM, previous)
    order = {(j["arch"], j["seed"]): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["arch"], r["seed"])])
    print_quality(results)
    settings["wall_s"] = time.perf_counter() - t_all
    payload["machine"] = machine(args.device)
    return write_json(payload, args.out, f"quality_{args.device}.json", args.quick)


def quality_summary(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Dict[str, float]]]]:
    """{arch: {stage: {set: {mean, std, min, max, ppl_mean, n}}}} of the held-out losses over the seeds."""
    acc: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for r in runs:
        if r.get("status") != "ok":
            continue
        for stage, s in r["stages"].items():
            for name, h in (s.get("held_out") or {}).items():
                acc.setdefault(r["arch"], {}).setdefault(stage, {}).setdefault(name, []).append(h["loss"])
    out: Dict[str, Any] = {}
    for arch, stages in acc.items():
        for stage, sets in stages.items():
            for name, losses in sets.items():
                mean = statistics.fmean(losses)
                out.setdefault(arch, {}).setdefault(stage, {})[name] = {
                    "mean": mean, "std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                    "min": min(losses), "max": max(losses), "ppl_mean": math.exp(mean), "n": len(losses),
                    "ppl_min": math.exp(min(losses)), "ppl_max": math.exp(max(losses))}
    return out


def print_quality(runs: List[Dict[str, Any]]) -> None:
    print()
    for r in runs:
        cells = []
        for stage, s in r["stages"].items():
            for name, h in (s.get("held_out") or {}).items():
                cells.append(f"{stage}/{name} {h['loss']:.3f} (ppl {h['ppl']:.1f})")
        print(f"{r['arch']:<12} seed {r['seed']:<3} {r['status']:<8} {fmt(r.get('params'), ',')} params  "
              + "; ".join(cells))
    for arch, stages in quality_summary(runs).items():
        for stage, sets in stages.items():
            for name, s in sets.items():
                print(f"  mean {arch:<12} {stage:<9} {name:<24} loss {s['mean']:.4f} +- {s['std']:.4f} "
                      f"ppl {s['ppl_mean']:.1f} (n={s['n']})")
