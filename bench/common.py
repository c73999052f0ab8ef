"""Shared benchmark plumbing: timing, the machine's copy bandwidth, result tables and JSON."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str = "cpu", warmup: int = 2, repeat: int = 7,
            max_seconds: float = 20.0) -> float:
    """Median wall time of fn() in milliseconds (CUDA: event-timed)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples: List[float] = []
    budget = time.perf_counter() + max_seconds
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > budget and len(samples) >= 3:
            break
    return statistics.median(samples)


def copy_bandwidth_gbs(device: str = "cpu", nbytes: int = 256 << 20) -> float:
    """Bytes read + written per second by a torch copy of an `nbytes` tensor (the machine's ceiling)."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=2, repeat=9)
    return 2 * nbytes / (ms * 1e-3) / 1e9


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    backend: str
    pass_: str
    ms: float
    gbs: Optional[float] = None
    gflops: Optional[float] = None
    extra: Dict[str, float] = field(default_factory=dict)


def machine() -> Dict[str, object]:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(rows: List[Row], copy_gbs: float, baseline: str = "ref") -> None:
    """Rows grouped by (op, shape, dtype, pass); speed-ups against `baseline` and every other backend."""
    groups: Dict[tuple, List[Row]] = {}
    for r in rows:
        groups.setdefault((r.op, r.shape, r.dtype, r.pass_), []).append(r)
    header = f"{'op':<14}{'shape':<22}{'dtype':<9}{'pass':<9}{'backend':<22}{'ms':>10}{'GB/s':>8}{'%copy':>7}" \
             f"{'GFLOP/s':>9}  speed-up"
    print(header)
    print("-" * len(header))
    for key, group in groups.items():
        base = next((r for r in group if r.backend == baseline), None)
        for r in group:
            ups = []
            for other in group:
                if other is not r:
                    ups.append(f"{other.ms / r.ms:.1f}x vs {other.backend}")
            gbs = f"{r.gbs:8.1f}" if r.gbs else " " * 8
            frac = f"{100 * r.gbs / copy_gbs:6.0f}%" if r.gbs else " " * 7
            gfl = f"{r.gflops:9.1f}" if r.gflops else " " * 9
            print(f"{r.op:<14}{r.shape:<22}{r.dtype:<9}{r.pass_:<9}{r.backend:<22}{r.ms:10.3f}{gbs}{frac}{gfl}  "
                  + ", ".join(ups if base is not None or ups else []))
    print(f"copy bandwidth measured in this run: {copy_gbs:.1f} GB/s (read + write)")


def save(name: str, rows: List[Row], copy_gbs: float, command: str, out_dir: Optional[Path] = None) -> Path:
    out_dir = Path(out_dir or os.environ.get("MMREC_BENCH_OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"command": command, "machine": machine(), "copy_gbs": copy_gbs,
               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "rows": [{**asdict(r), "pass": r.pass_} for r in rows]}
    for row in payload["rows"]:
        row.pop("pass_")
    path.write_text(json.dumps(payload, indent=1))
    return path
