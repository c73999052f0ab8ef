"""What a run reports: metrics.jsonl records, the loss plot, the progress bar and the end-of-stage summary."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..checkpoint import atomic_write_text
from ..data import STAGES

class Metrics:
    """Appends JSON records to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:    # a line cut by a kill
                continue
        return out

    def loss_summary(self, stage: str, n: int = 10):
        """(mean train loss of the stage's first n logged steps, of its last n): the whole stage, across resumes."""
        losses = [r["loss"] for r in sorted((r for r in self.read() if r.get("kind") == "train"
                                             and r.get("stage") == stage), key=lambda r: r["step"])]
        if not losses:
            return None, None
        return sum(losses[:n]) / len(losses[:n]), sum(losses[-n:]) / len(losses[-n:])

    def truncate_after(self, stage: str, step: int) -> None:
        """Drops records written after checkpoint `step` of `stage` (they are recomputed on resume)."""
        if not self.enabled or not self.path.is_file():
            return
        order = STAGES.index(stage)
        kept = [r for r in self.read()
                if STAGES.index(r["stage"]) < order or (r["stage"] == stage and r["step"] <= step)]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_metrics(metrics_path: Path, png_path: Path) -> Optional[Path]:
    """Train loss and held-out losses of every stage on one step axis, with the stage boundaries."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; no loss plot", file=sys.stderr)
        return None
    records = Metrics(metrics_path, False).read()
    if not records:
        return None
    offsets, offset = {}, 0
    for stage in STAGES:
        steps = [r["step"] for r in records if r["stage"] == stage]
        if steps:
            offsets[stage] = offset
            offset += max(steps)
    fig, ax = plt.subplots(figsize=(9, 5))
    for stage in offsets:
        train = [r for r in records if r["kind"] == "train" and r["stage"] == stage]
        ax.plot([offsets[stage] + r["step"] for r in train], [r["loss"] for r in train], lw=1, color="tab:blue",
                label="train" if stage == next(iter(offsets)) else None)
    sets = sorted({r["set"] for r in records if r["kind"] == "eval"})
    for i, name in enumerate(sets):
        ev = [r for r in records if r["kind"] == "eval" and r["set"] == name]
        ax.plot([offsets[r["stage"]] + r["step"] for r in ev], [r["loss"] for r in ev], marker="o", ms=4,
                lw=1, ls="--", label=f"held-out {name}", color=f"C{(i + 1) % 10}")
    for stage, start in offsets.items():
        ax.axvline(start, color="gray", lw=0.8, ls=":")
        ax.text(start, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=9, color="gray")
    ax.set_xlabel("optimizer step (stages concatenated)")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


class Progress:
    def __init__(self, enabled: bool, total: int, initial: int, desc: str):
        self.bar = None
        self.enabled = enabled
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            mininterval=0.5, file=sys.stderr)

    def update(self, postfix: Dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def report_stage(summary: Dict[str, Any], out: Path, log) -> None:
    stage = summary["stage"]
    lines = [f"== {stage}: {summary['steps']} steps, {summary['tokens']:,} tokens, {summary['time_s']:.0f} s"]
    if summary["loss_first"] is not None and summary["loss_last"] is not None:
        lines.append(f"   train loss {summary['loss_first']:.3f} (first 10 steps) -> {summary['loss_last']:.3f} "
                     f"(last 10 steps)")
    for name, r in summary["held_out"].items():
        lines.append(f"   held-out {name}: loss {r['loss']:.3f}, perplexity {r['ppl']:.1f} ({r['tokens']:,} tokens)")
    md = [f"## {stage}\n"]
    for s in summary.get("samples", []):
        lines.append(f"   sample | {s['prompt']!r} -> {s['output']!r}")
        md.append(f"**prompt:** {s['prompt']!r}\n\n**output:** {s['output']!r}\n")
    log("\n".join(lines))
    with open(out / "samples.md", "a", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
