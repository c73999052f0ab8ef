"""bench/saved_activations.py: the bytes autograd keeps for the backward, per storage with a token dimension."""
import torch
from torch import nn

import saved_activations


class _Toy(nn.Module):
    """ids [1, T] -> logits [1, T, 8]: an embedding gather (saves ids) and a sine (saves its float32 input)."""

    def __init__(self, vocab: int = 11, width: int = 8):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, width))

    def forward(self, ids):
        return self.table[ids].sin(), None


def test_counts_each_saved_storage_once():
    T = 5
    ids, targets = torch.randint(0, 11, (1, T)), torch.randint(0, 8, (1, T))
    got = saved_activations.saved_bytes(_Toy(), ids, targets, compiled=False)
    # ids (int64) for the gather, the gathered [1, T, 8] float32 for sin, cross_entropy's log-softmax [T, 8]
    # float32 and the targets (int64); the table itself (a parameter) is not counted
    assert got == T * 8 + T * 8 * 4 + T * 8 * 4 + T * 8


def test_rows_for_a_small_preset(capsys):
    assert saved_activations.main(["--archs", "mmrec-linear,gpt", "--preset", "tiny", "--T", "16"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["mmrec-linear", "gpt"]
    for row in rows:
        params, fixed, eager, compiled = map(float, row[1:])
        assert params > 0 and eager > 0 and compiled > 0
