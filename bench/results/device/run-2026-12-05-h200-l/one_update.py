"""memory_update forward + backward at the base model's T=16,384, B=1 shape (B=1 NC=256 S=16 D=768, bf16), 4 times:
the process ncu profiles in H200 run l."""
import torch

import mmrec_ops

torch.manual_seed(0)
B, NC, S, D = 1, 256, 16, 768
kw = dict(device="cuda", dtype=torch.bfloat16, requires_grad=True)
M0, key, value = torch.randn(B, S, D, **kw), torch.randn(B, NC, D, **kw), torch.randn(B, NC, D, **kw)
strength = torch.rand(B, NC, **kw)
for _ in range(4):
    Ms = mmrec_ops.memory_update(M0, key, value, strength)
    torch.autograd.grad(Ms, (M0, key, value, strength), torch.ones_like(Ms))
torch.cuda.synchronize()
print("done", tuple(Ms.shape))
