"""The trainer in parts: config (typed settings), schedule, runtime (devices, DDP, signals), report (metrics,
plot, progress), evaluation (held-out loss, samples), stage (one stage's loop and checkpoints), run (the stages
of a run). `python -m mmrec_model.train` is its CLI."""
