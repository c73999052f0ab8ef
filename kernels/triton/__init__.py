"""Triton kernels of the mmrec ops (installed as mmrec_ops.triton_kernels)."""
