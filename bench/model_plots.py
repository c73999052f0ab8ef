"""The comparison's plots (docs/img/*.png) and the helpers they share with bench/plot_benchmarks.py's tables: arch
order, labels and colours, the rows that finished, the machine line of a result JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from compare_quality import quality_summary


ARCH_ORDER = ["mmrec", "mmrec-linear", "mmrec-tbptt", "gpt", "lstm"]
LABELS = {"mmrec": "MM-Rec", "mmrec-linear": "MM-Rec (linear)", "mmrec-tbptt": "MM-Rec (TBPTT)",
          "gpt": "GPT", "lstm": "LSTM"}
COLORS = {"mmrec": "tab:blue", "mmrec-linear": "tab:cyan", "mmrec-tbptt": "tab:purple", "gpt": "tab:orange",
          "lstm": "tab:green"}
PRETRAIN_SETS = ["wikitext2_valid_part", "gutenberg_valid", "tinyshakespeare_valid"]
DEVICE_NAMES = {"cuda": "GPU", "cpu": "CPU"}


def ok_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def arch_sorted(archs) -> List[str]:
    return sorted(set(archs), key=lambda a: ARCH_ORDER.index(a) if a in ARCH_ORDER else 99)


def fmt_num(x: Optional[float], spec: str = ",.0f") -> str:
    return "–" if x is None else format(x, spec)


def describe_machine(data: Dict[str, Any]) -> str:
    m = data.get("machine", {})
    gpu = m.get("gpu") or next((r.get("device_name") for r in data.get("rows", []) if
                                r.get("device_name") and "cuda" in str(data.get("settings"))), None)
    parts = [gpu or f"{m.get('cpus', '?')}-core CPU", f"torch {m.get('torch', '?')}"]
    if m.get("cuda"):
        parts.append(f"CUDA {m['cuda']}")
    if m.get("cudnn"):
        parts.append(f"cuDNN {m['cudnn']}")
    return ", ".join(parts) + f"; {data.get('date', '?')}"


def find_row(rows, **keys) -> Optional[Dict[str, Any]]:
    for r in rows:
        if all(r.get(k) == v for k, v in keys.items()):
            return r
    return None


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _throughput_axes(ax, ax_mem, data) -> None:
    rows = data["rows"]
    sizes = sorted({r["T"] for r in rows})
    archs = arch_sorted(r["arch"] for r in rows)
    width = 0.8 / max(1, len(archs))
    for i, arch in enumerate(archs):
        xs = [j + (i - (len(archs) - 1) / 2) * width for j in range(len(sizes))]
        vals, mems = [], []
        for T in sizes:
            r = find_row(rows, arch=arch, T=T)
            ok = r is not None and r.get("status") == "ok"
            vals.append(r["tokens_per_s"] / 1e3 if ok else 0.0)
            mems.append(r["peak_mib"] / 1024 if ok else 0.0)
        ax.bar(xs, vals, width, label=LABELS.get(arch, arch), color=COLORS.get(arch))
        for x, T, v in zip(xs, sizes, vals):
            r = find_row(rows, arch=arch, T=T)
            if r is not None and r.get("status") != "ok":
                ax.text(x, 0, r.get("status", "?").upper(), rotation=90, ha="center", va="bottom", fontsize=7)
        if ax_mem is not None:
            ax_mem.bar(xs, mems, width, label=LABELS.get(arch, arch), color=COLORS.get(arch))
    for a in [ax] + ([ax_mem] if ax_mem is not None else []):
        a.set_xticks(range(len(sizes)))
        a.set_xticklabels([f"T={T:,}" for T in sizes])
        a.grid(axis="y", alpha=0.3)
    ax.set_ylabel("training tokens/s (thousands)")
    ax.set_title("Training throughput")
    ax.legend(fontsize=8)
    if ax_mem is not None:
        ax_mem.set_ylabel("peak memory (GiB)")
        ax_mem.set_title("Training peak memory")


def _generate_axes(ax_speed, ax_mem, data) -> None:
    rows = ok_rows(data["rows"])
    batches = sorted({r["batch"] for r in rows if "batch" in r})
    for arch in arch_sorted(r["arch"] for r in rows):
        for b in batches:
            pts = sorted((r["context"], r) for r in rows if r["arch"] == arch and r.get("batch") == b)
            if not pts:
                continue
            style = "-" if b == batches[0] else "--"
            label = LABELS.get(arch, arch) + (f" (B={b})" if len(batches) > 1 else "")
            xs = [c for c, _ in pts]
            ax_speed.plot(xs, [r["decode_tokens_per_s"] for _, r in pts], style, marker="o", label=label,
                          color=COLORS.get(arch))
            if ax_mem is not None:
                ax_mem.plot(xs, [max(r["state_mib"], 1e-3) for _, r in pts], style, marker="o", label=label,
                            color=COLORS.get(arch))
    from matplotlib.ticker import FuncFormatter
    contexts = sorted({r["context"] for r in rows})
    for a in [ax_speed] + ([ax_mem] if ax_mem is not None else []):
        a.set_xscale("log", base=2)
        a.set_xticks(contexts)
        a.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1024:g}K" if x >= 1024 else f"{x:g}"))
        a.set_xlabel("context length (tokens)")
        a.grid(alpha=0.3, which="both")
    ax_speed.set_yscale("log")
    ax_speed.set_ylabel("decode tokens/s")
    ax_speed.set_title("Generation speed after the context")
    ax_speed.legend(fontsize=7)
    if ax_mem is not None:
        ax_mem.set_yscale("log")
        ax_mem.set_ylabel("state / KV cache (MiB)")
        ax_mem.set_title("Memory held for generation")


def plot_throughput(data, path: Path) -> Path:
    plt = _plt()
    fig, (ax, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    _throughput_axes(ax, ax_mem, data)
    fig.suptitle(f"{DEVICE_NAMES.get(data['settings']['device'], '')} training, {data['settings']['preset']} size, "
                 f"{data['settings']['dtype']}: {describe_machine(data).split(';')[0]}", fontsize=9)
    return _save(fig, path)


def plot_generate(data, path: Path) -> Path:
    plt = _plt()
    fig, (ax, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    _generate_axes(ax, ax_mem, data)
    s = data["settings"][0]
    fig.suptitle(f"{DEVICE_NAMES.get(s['device'], '')} generation, {s['preset']} size, {s['dtype']}: "
                 f"{describe_machine(data).split(';')[0]}", fontsize=9)
    return _save(fig, path)


def plot_headline(throughput, generate, path: Path) -> Path:
    plt = _plt()
    panels = (throughput is not None) + (generate is not None) * 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
    axes = list(axes) if panels > 1 else [axes]
    if throughput is not None:
        _throughput_axes(axes.pop(0), None, throughput)
    if generate is not None:
        _generate_axes(axes[0], axes[1], generate)
    src = throughput or generate
    s = src["settings"][0] if isinstance(src["settings"], list) else src["settings"]
    fig.suptitle(f"MM-Rec vs GPT vs LSTM at equal parameters ({s['preset']} size) on "
                 f"{describe_machine(src).split(';')[0]}", fontsize=10)
    return _save(fig, path)


def plot_quality(data, path: Path) -> Path:
    plt = _plt()
    summary = quality_summary(data["runs"])
    archs = arch_sorted(summary)
    sets = [(st, name) for st in ("pretrain", "instruct", "chat")
            for name in sorted({n for a in archs for n in summary[a].get(st, {})},
                               key=lambda n: PRETRAIN_SETS.index(n) if n in PRETRAIN_SETS else 9)]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(sets) + 2), 4.4))
    width = 0.8 / max(1, len(archs))
    for i, arch in enumerate(archs):
        xs, ys, lo, hi = [], [], [], []
        for j, (st, name) in enumerate(sets):
            s = summary[arch].get(st, {}).get(name)
            if s is None:
                continue
            xs.append(j + (i - (len(archs) - 1) / 2) * width)
            ys.append(s["ppl_mean"])
            lo.append(s["ppl_mean"] - s["ppl_min"])
            hi.append(s["ppl_max"] - s["ppl_mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=LABELS.get(arch, arch), color=COLORS.get(arch))
    ax.set_xticks(range(len(sets)))
    ax.set_xticklabels([f"{name}\n(after {st})" for st, name in sets], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("held-out perplexity (mean; bars: min-max over seeds)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    s = data["settings"]
    ax.set_title(f"Held-out perplexity, {s['preset']} size, seeds {s['seeds']}: {describe_machine(data).split(';')[0]}",
                 fontsize=9)
    return _save(fig, path)


def plot_curves(data, path: Path) -> Optional[Path]:
    plt = _plt()
    runs = [r for r in data["runs"] if r.get("status") == "ok"]
    sets = [n for n in PRETRAIN_SETS if any(n in r.get("eval_curves", {}).get("pretrain", {}) for r in runs)]
    sets += sorted({n for r in runs for n in r.get("eval_curves", {}).get("pretrain", {})} - set(sets))
    if not sets:
        return None
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for arch in arch_sorted(r["arch"] for r in runs):
            for k, r in enumerate(x for x in runs if x["arch"] == arch):
                pts = r.get("eval_curves", {}).get("pretrain", {}).get(name, [])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1,
                            color=COLORS.get(arch), alpha=0.9 if k == 0 else 0.5,
                            label=LABELS.get(arch, arch) if k == 0 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("pre-training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out loss (nats/token)")
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)
