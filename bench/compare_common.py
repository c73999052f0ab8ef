"""What bench/compare_models.py's subcommands share: the machine's description, the JSON writer, the wall-clock
budget, the command line and number formatting (bench/compare_quality.py uses them too)."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "models"
QUICK_RESULTS = ROOT / "runs" / "compare_quick"


def machine(device: str, gpu: bool = True) -> Dict[str, Any]:
    """The machine; gpu=False leaves CUDA uninitialised (the parent must not hold GPU memory while workers run)."""
    import torch
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    if gpu and device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def write_json(payload: Dict[str, Any], out: Optional[str], name: str, quick: bool, quiet: bool = False) -> Path:
    """Writes the JSON (again after every worker, so a run cut short still leaves its rows)."""
    path = Path(out) if out else (QUICK_RESULTS if quick else RESULTS) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {path}")
    return path


class Budget:
    """Wall-clock budget of a subcommand: each worker's timeout is cut to what is left (at least 5 s)."""

    def __init__(self, seconds: Optional[float]):
        self.end = None if not seconds else time.perf_counter() + seconds

    def timeout(self, worker_timeout: float) -> float:
        if self.end is None:
            return worker_timeout
        return max(5.0, min(worker_timeout, self.end - time.perf_counter()))


def command_line() -> str:
    return "python bench/compare_models.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
