"""The H200 section of docs/benchmarks.md (issues 15, 16 and 18), from the device runs committed under
bench/results/device/: training throughput (bench/compare_models.py), the recurrence's per-step latency
(bench/bench_recurrence_latency.py) and decode against context beside the Hugging Face GPT-2 with a static cache and
torch.compile (bench/bench_decode.py). Each table comes from one run (one JSON) and names it; `plot_benchmarks.py`
calls `section` while it writes the document.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

DEVICE = Path(__file__).resolve().parent / "results" / "device"
# (title, run directory, JSON) of each table, newest measurement of each kind
TRAIN_RUNS = [("on an H100 80GB (run r, 2026-12-06, main with the Triton read's forward loading a token ahead and its "
               "backward loading the banks as one tile; the tables after run o's two are H200), compiled with CUDA "
               "graphs, B=16 T=1,024, MM-Rec linear and the GPT", "run-2026-12-06-h100-r", "throughput_1024.json"),
              ("on an H100 80GB (run o, 2026-12-06, main with the 16-bit scan forward streaming, before run r's read), "
               "compiled with CUDA graphs, B=16 T=1,024", "run-2026-12-06-h100-o", "throughput_1024.json"),
              ("on an H100 80GB (run o's third call, same machine), compiled with CUDA graphs, B=1 T=16,384",
               "run-2026-12-06-h100-o", "throughput_16384.json"),
              ("compiled with CUDA graphs (mode reduce-overhead, the trainer's default on CUDA), B=16 T=1,024 (run m's "
               "third call, `followups.sh`)", "run-2026-12-05-h200-m", "throughput_1024.json"),
              ("compiled with CUDA graphs, B=1 T=16,384, MM-Rec linear and the GPT after memory_update's prefetch, "
               "column pairs and one-reduction backward", "run-2026-12-05-h200-m", "throughput_cuda_graphs_16384.json"),
              ("compiled with CUDA graphs, B=1 T=16,384, the nonlinear variant alone (run m's second call, "
               "`followups.sh`, on the same warm machine right after the GPT row above)", "run-2026-12-05-h200-m",
               "throughput_nonlinear_16384.json"),
              ("compiled with CUDA graphs (mode reduce-overhead, the trainer's default on CUDA), B=16 T=1,024",
               "run-2026-12-04-h200-h", "throughput_cuda_graphs_1024.json"),
              ("compiled with CUDA graphs (mode reduce-overhead), B=1 T=16,384 (the nonlinear row did not compile in "
               "its worker's 80 s)", "run-2026-12-04-h200-i", "throughput_cuda_graphs_16384.json"),
              ("compiled with CUDA graphs, B=16 T=1,024, the read taking q and v in place and dx_m in bf16, its "
               "forward as token tiles (run g; main's forward is the faster token loop)", "run-2026-12-04-h200-g",
               "throughput_cuda_graphs_1024.json"),
              ("compiled with CUDA graphs (mode reduce-overhead, the trainer's default on CUDA), B=16 T=1,024",
               "run-2026-12-04-h200-c", "throughput_cuda_graphs_1024.json"),
              ("compiled with CUDA graphs (mode reduce-overhead), B=1 T=16,384", "run-2026-12-04-h200-d",
               "throughput_cuda_graphs_16384.json"),
              ("compiled, torch's default mode (no CUDA graphs), B=16 T=1,024, profiled", "run-2026-12-04-h200-b",
               "throughput_cuda_compiled_1024.json"),
              ("compiled, default mode, B=16 T=1,024, the read's backward as a token loop (run s, since replaced)",
               "run-2026-12-02-h200-s", "throughput_cuda_compiled_1024.json"),
              ("compiled, default mode, B=1 T=16,384, the read's backward as a token loop (run t, since replaced)",
               "run-2026-12-02-h200-t", "throughput_cuda_compiled_16384.json"),
              ("compiled, T=1,024 (B=16) and 4,096 (B=4), the read's backward through mdi's backward kernel "
               "(run q, profiled)", "run-2026-12-02-h200-q", "throughput_cuda_compiled_profile.json"),
              ("compiled, B=16 T=1,024, the unfused read beside the fused one of run o's kernels (since replaced)",
               "run-2026-12-02-h200-o",
               "throughput_cuda_compiled_readpath.json"),
              ("eager, T=1,024 (B=16) and 16,384 (B=1)", "run-2026-12-01-h200-h", "throughput_cuda_eager_readpath.json")]
# The runs of the training plot, newest first: each bar from the first of them that has its (arch, T), its ratio to
# the GPT of that same run (run m: the GPT's T=16,384 row is from the call before the nonlinear row's)
PLOT_RUNS = ("run-2026-12-05-h200-m",)
# Rows whose arch name meant another read path when the run was made (run h: the default read on CUDA was unfused)
RUN_LABELS = {"run-2026-12-01-h200-h": {"mmrec": "MM-Rec, unfused read", "mmrec-linear": "MM-Rec (linear), unfused read"},
              "run-2026-12-02-h200-q": {"mmrec": "MM-Rec (fused read)", "mmrec-linear": "MM-Rec (linear, fused read)"}}
QUALITY_RUN = ("run-2026-12-02-h200-s", "quality_cuda.json")
RECURRENCE_RUN = ("run-2026-12-01-h200-h", "recurrence_latency.json")
# decode: MM-Rec nonlinear beside the HF static-cache peer in one process (run i), MM-Rec linear (run j), the eager
# peers (run k); a ratio to the peer is printed only for rows of the peer's own run
DECODE_RUNS = [("run-2026-12-01-h200-i", "decode_context.json"),
               ("run-2026-12-01-h200-j", "decode_context_linear.json"),
               ("run-2026-12-01-h200-k", "decode_eager_peers.json")]
LABELS = {"mmrec": "MM-Rec", "mmrec-linear": "MM-Rec (linear)", "gpt": "GPT (SDPA)",
          "mmrec-fused": "MM-Rec, fused read", "mmrec-linear-fused": "MM-Rec (linear), fused read",
          "mmrec-unfused": "MM-Rec, unfused read", "mmrec-linear-unfused": "MM-Rec (linear), unfused read",
          "mmrec-nonlinear-compiled": "MM-Rec, compiled CUDA-graph step",
          "mmrec-linear-compiled": "MM-Rec (linear), compiled CUDA-graph step",
          "hf-gpt2-static-compile": "HF GPT-2, static cache + compile", "hf-gpt2": "HF GPT-2 generate(), eager",
          "gpt-decode": "GPT (project baseline), KV cache, eager"}


def _load(run: str, name: str) -> Optional[Dict[str, Any]]:
    path = DEVICE / run / name
    return json.loads(path.read_text()) if path.exists() else None


def _command(run: str) -> str:
    return f"`bench/results/device/{run}/command.sh` (log and JSON beside it)"


def _row_clock(settings: Dict[str, Any]) -> str:
    """When compare_models stopped timing a row: runs before settings["row_clock"] counted the warm-up too."""
    seconds = settings.get("row_seconds", 30.0)
    if settings.get("row_clock") == "timed steps":
        return f"its timed steps have run {seconds:g} s"
    return f"its warm-up and steps have run {seconds:g} s"


def training_tables() -> List[str]:
    out: List[str] = []
    for title, run, name in TRAIN_RUNS:
        data = _load(run, name)
        if data is None:
            continue
        rows = [r for r in data["rows"] if r.get("status") == "ok"]
        labels = {**LABELS, **RUN_LABELS.get(run, {})}
        out += [f"Training, `base`, bf16 autocast, {title}, forward + backward + AdamW, median of the timed steps "
                f"(up to {data['settings']['steps']}; a row stops after 2 once {_row_clock(data['settings'])}) "
                f"({_command(run)}; `{data['command'].replace('/tmp/o/', '')}`):",
                "", "| arch | params (M) | T | tokens/s | step (s) | timed steps | peak KiB per token | vs GPT at that T |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: r["T"]):
            gpt = next((g for g in rows if g["arch"] == "gpt" and g["T"] == r["T"]), None)
            ratio = f"{r['tokens_per_s'] / gpt['tokens_per_s']:.2f}x" if gpt else "–"
            params = f"{r['params'] / 1e6:.1f}" if r.get("params") else "–"
            out.append(f"| {labels.get(r['arch'], r['arch'])} | {params} | {r['T']:,} | {r['tokens_per_s']:,.0f} | "
                       f"{r['step_s']:.3f} | {r.get('timed_steps', '–')} | {r['peak_kib_per_token']:,.0f} | {ratio} |")
        asked = data["command"].split("--archs ")[1].split()[0].split(",") if "--archs " in data["command"] else []
        missing = [a for a in asked if a not in {r["arch"] for r in rows}]
        if missing:
            out.append(f"| {', '.join(LABELS.get(a, a) for a in missing)} | | | not finished in the run's time budget "
                       "(compiling) | | | | |")
        out.append("")
    return out


def recurrence_table() -> List[str]:
    run, name = RECURRENCE_RUN
    data = _load(run, name)
    if data is None:
        return []
    out = [f"Recurrence (nonlinear core) per-step latency, CUDA, forward and forward + backward through autograd "
           f"({_command(run)}; `python3 bench/bench_recurrence_latency.py`):", "",
           "| shape | d | dtype | forward us/step | forward + backward us/step | forward + backward ms |",
           "|---|---:|---|---:|---:|---:|"]
    by = {}
    for r in data["rows"]:
        shape = f"B={r['B']} T={r['T']:,} D={r['D']} H={r['H']}"
        by.setdefault((shape, r["d"], r["dtype"]), {})[r["pass"]] = r
    for (shape, d, dtype), p in by.items():
        if "fwd" in p and "fwd+bwd" in p:
            out.append(f"| {shape} | {d} | {dtype} | {p['fwd']['us_per_step']:.2f} | "
                       f"{p['fwd+bwd']['us_per_step']:.2f} | {p['fwd+bwd']['ms']:.2f} |")
    return out + [""]


def decode_table_and_plot(md: Path, img: Path) -> List[str]:
    rows, peer, commands = [], {}, []
    for run, name in DECODE_RUNS:
        data = _load(run, name)
        if data is None:
            continue
        letter = run.rsplit("-", 1)[1]
        commands.append(f"run {letter}: {_command(run)}; `python3 {data['command'].replace('/tmp/o/', '')}`, "
                        f"{data['env']['tokens']} timed tokens")
        for r in data["rows"]:
            model = "gpt-decode" if r["model"] == "gpt" else r["model"]
            rows.append({**r, "model": model, "run": letter})
            if model == "hf-gpt2-static-compile":
                peer[(letter, r["context"], r["batch"])] = r["tokens_per_s"]
    if not rows:
        return []
    out = ["Decode, `base`, bf16 weights, greedy, after the context. The peer is Hugging Face `transformers` GPT-2 "
           "124M `generate()` with `cache_implementation=\"static\"` (transformers compiles its forward); the ratio "
           "is given for rows measured in the same process as the peer. Commands:", ""]
    out += [f"- {c}" for c in commands]
    out += ["", "| context | batch | model | run | tokens/s | ms/token | state or KV cache (MiB) "
            "| vs HF static + compile |",
            "|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["batch"], r["context"], r["model"])):
        p = peer.get((r["run"], r["context"], r["batch"]))
        ratio = f"{r['tokens_per_s'] / p:.2f}x" if p and r["model"] != "hf-gpt2-static-compile" else "–"
        out.append(f"| {r['context']:,} | {r['batch']} | {LABELS.get(r['model'], r['model'])} | {r['run']} | "
                   f"{r['tokens_per_s']:,.0f} | {r['ms_per_token']:.3f} | {r['state_mib']:,.2f} | {ratio} |")
    out.append("")
    plt = _pyplot()
    if plt is None:
        return out
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.6), squeeze=False)
    axes = axes[0]
    models = sorted({r["model"] for r in rows})
    colors = {m: f"C{i}" for i, m in enumerate(models)}                         # one colour per model in every panel
    for ax, batch in zip(axes, batches):
        for model in models:
            pts = sorted((r["context"], r["tokens_per_s"]) for r in rows if r["model"] == model and r["batch"] == batch)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colors[model], label=LABELS.get(model, model))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"H200, base, bf16, batch {batch}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    out += [f"![decode against context, H200]({_save(plt, fig, img / 'decode_h200.png', md)})", ""]
    return out


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None without matplotlib (the tables are written anyway)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path: Path, md: Path) -> str:
    """Writes the figure to `path`; its link relative to the document `md`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.relpath(path, md.parent).replace(os.sep, "/")


def _runs_label(rows: List[Dict[str, Any]]) -> str:
    letters = list(dict.fromkeys(r["run"].rsplit("-", 1)[-1] for r in rows))
    return f"run{'s' if len(letters) > 1 else ''} {', '.join(letters)}"


def training_plot(md: Path, img: Path) -> List[str]:
    """Bars of compiled training tokens/s per arch at each T from the first of the PLOT_RUNS that has it, the ratio
    to the GPT of that run above each bar; docs/img/training_h200.png (the README shows it too)."""
    rows = []
    for _, run, name in (t for t in TRAIN_RUNS if t[1] in PLOT_RUNS):
        data = _load(run, name)
        rows += [dict(r, run=run) for r in (data or {}).get("rows", []) if r.get("status") == "ok"]
    plt = _pyplot()
    if not rows or plt is None:
        return []
    sizes = sorted({r["T"] for r in rows})
    archs = [a for a in ("gpt", "mmrec-linear", "mmrec") if any(r["arch"] == a for r in rows)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / len(archs)
    for i, arch in enumerate(archs):
        for j, T in enumerate(sizes):
            r = next((r for r in rows if r["arch"] == arch and r["T"] == T), None)
            if r is None:
                continue
            gpt = next((g for g in rows if g["arch"] == "gpt" and g["T"] == T and g["run"] == r["run"]), None)
            x = j + (i - (len(archs) - 1) / 2) * width
            ax.bar(x, r["tokens_per_s"] / 1e3, width, color=f"C{i}", label=LABELS.get(arch, arch) if j == 0 else None)
            if gpt:
                ax.annotate(f"{r['tokens_per_s'] / gpt['tokens_per_s']:.2f}x", (x, r["tokens_per_s"] / 1e3),
                            ha="center", va="bottom", fontsize=7)
    batch = {r["T"]: r["batch"] for r in rows}
    ax.set_xticks(range(len(sizes)), [f"T={T:,} (B={batch[T]})" for T in sizes])
    ax.set_ylabel("training tokens/s (thousands)")
    ax.set_title(f"H200, base, bf16, compiled, {rows[0]['tokens_per_step']:,} tokens per step ("
                 f"{_runs_label(rows)})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return [f"![compiled training throughput, H200]({_save(plt, fig, img / 'training_h200.png', md)})", ""]


def _loss_at(curve: List[List[float]], step: float) -> float:
    """A held-out loss curve [[step, loss], ...] read at `step`, linear between its evaluations."""
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return l0 + (l1 - l0) * (step - s0) / (s1 - s0)
    return curve[-1][1]


def quality_tables(table_quality: Callable[[Dict[str, Any]], List[str]]) -> List[str]:
    """The quality runs' held-out losses at equal tokens (`table_quality`) and each MM-Rec variant's pre-training
    losses read at the GPT's pre-training time."""
    run, name = QUALITY_RUN
    data = _load(run, name)
    if data is None:
        return []
    runs = [r for r in data["runs"] if r.get("status") == "ok"]
    out = [f"Quality, `small` preset, the three-stage pipeline at equal tokens ({_command(run)}; "
           f"`{data['command'].replace('/tmp/o/', '').replace('/tmp/runs', 'RUNS')}`); perplexity, mean (min-max) "
           "over the seeds:", ""] + table_quality(data) + [""]

    def per_step(arch: str) -> float:
        times = [r["stages"]["pretrain"]["time_s"] / r["stages"]["pretrain"]["steps"] for r in runs if r["arch"] == arch]
        return sum(times) / len(times)

    if "gpt" not in {r["arch"] for r in runs}:
        return out
    budget = per_step("gpt") * max(r["stages"]["pretrain"]["steps"] for r in runs if r["arch"] == "gpt")
    sets = sorted(runs[0]["eval_curves"]["pretrain"])
    out += [f"Pre-training held-out loss at the GPT's pre-training time ({budget:.1f} s; the six pipelines shared the "
            "GPU, so these times are shared-GPU times), each curve read linearly between its evaluations, mean over "
            "the seeds:", "", "| arch | steps in that time | " + " | ".join(sets) + " |",
            "|---|---:|" + "---:|" * len(sets)]
    for arch in sorted({r["arch"] for r in runs}, key=lambda a: (a != "gpt", a)):
        steps = budget / per_step(arch)
        mine = [r for r in runs if r["arch"] == arch]
        cells = [sum(_loss_at(r["eval_curves"]["pretrain"][s], steps) for r in mine) / len(mine) for s in sets]
        out.append(f"| {LABELS.get(arch, arch)} | {steps:,.0f} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return out + [""]


def section(md: Path, img: Path, table_quality: Callable[[Dict[str, Any]], List[str]]) -> List[str]:
    """Markdown lines of the H200 section (empty when none of its runs is committed); `table_quality` renders a
    quality JSON's table (plot_benchmarks')."""
    body = (training_tables() + training_plot(md, img) + quality_tables(table_quality) + recurrence_table()
            + decode_table_and_plot(md, img))
    if not body:
        return []
    return ["## H200, 2026-12-01/05, and H100 2026-12-06: the current kernels (issues 15, 16, 18)", "",
            "torch 2.11 + CUDA 13 on one NVIDIA H200, except the first three tables (an H100 80GB lent on 2026-12-06; "
            "compare ratios to the GPT, not tokens/s, across the two). The GPU sections further down are the H100 run of "
            "2026-11-24 (the issue 8 comparison, before the latency kernels, the compiled training default and the "
            "CUDA-graph decode).", ""] + body
