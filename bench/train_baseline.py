"""`python bench/train_baseline.py --arch gpt|lstm|mmrec [mmrec_model.train arguments]`

Runs the MM-Rec trainer (`python -m mmrec_model.train`: same data, tokenizer, optimizer, schedule, evaluation
and checkpoints) on a baseline of bench/baselines.py, sized by `matched()` to the parameter count of the
--preset. `--arch mmrec` is the plain trainer. For example:

    python bench/train_baseline.py --arch gpt --preset small --device cuda --out runs/gpt-small

TBPTT (carrying the recurrent state across consecutive pre-training segments) is MM-Rec's alone in this
trainer: the GPT has no carried state, and the trainer's checkpoints only know how to store MM-Rec's. For
--arch gpt and lstm, stages.pretrain.tbptt is set to false; asking for it is an error.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import model_class  # noqa: E402

ARCHS = ("mmrec", "gpt", "lstm")


def main(argv: Optional[Sequence[str]] = None, stop=None) -> int:
    """stop(stage, step): see mmrec_model.train.main."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arch = None
    for i, a in enumerate(argv):
        if a == "--arch" and i + 1 < len(argv):
            arch = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--arch="):
            arch = a.split("=", 1)[1]
            del argv[i]
            break
    if arch is None or arch in ("-h", "--help"):
        print(__doc__)
        return 0 if arch is not None or "-h" in argv or "--help" in argv else 2
    if arch not in ARCHS:
        print(f"error: --arch must be one of {ARCHS}, got {arch!r}", file=sys.stderr)
        return 2
    from mmrec_model import train
    if arch != "mmrec":
        for i, a in enumerate(argv):
            if a.startswith("stages.pretrain.tbptt=") and argv[i - 1] == "--set" and \
                    a.split("=", 1)[1].strip().lower() in ("true", "1", "yes", "on"):
                print(f"error: --arch {arch} cannot train with TBPTT (see --help)", file=sys.stderr)
                return 2
        argv += ["--set", "stages.pretrain.tbptt=false"]
    return train.main(argv, model_class=model_class(arch), stop=stop)


if __name__ == "__main__":
    sys.exit(main())
