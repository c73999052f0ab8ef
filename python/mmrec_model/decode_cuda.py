"""CUDA-graph decoding: one replay = sample from the static logits (on device, seeded) -> eos bookkeeping ->
record the token -> one model step (decode.step_tensors) into the static logits. The host launches replays
and synchronises only every `check_every` tokens to read the recorded tokens (stop conditions, streaming).

compiled=True captures the step compiled by torch.compile in its for_compile form (norms, the recurrence's
per-head matvec and the read as elementwise sums, which Inductor fuses: the step's cuBLAS calls fall from ~10 to 4
per layer; fullgraph, static shapes; compiled once per graph, on the warm-up before capture).

Two graphs share one memory pool: a step without a slot-memory update and a step with the masked update
(rows whose chunk completes). Which one a step needs follows from the rows' positions, known on the host.
Only imported for CUDA models; nothing here runs on CPU.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from .decode import DecodeState, completion_mask, step_tensors


class GraphDecoder:
    def __init__(self, ds: DecodeState, logits: Tensor, prev: Tensor, capacity: int,
                 sampler: Callable[[Tensor, Optional[torch.Generator]], Tensor],
                 generator: Optional[torch.Generator], eos: Optional[Tensor], compiled: bool = False):
        if ds.device.type != "cuda":
            raise ValueError(f"GraphDecoder: needs a CUDA DecodeState, got device {ds.device}")
        B = ds.batch_size
        self.ds, self.sampler, self.eos = ds, sampler, eos
        self.step = (torch.compile(functools.partial(step_tensors, for_compile=True), fullgraph=True, dynamic=False)
                     if compiled else step_tensors)
        self.default_gen = generator is None
        self.generator = torch.cuda.default_generators[ds.device.index or 0] if generator is None else generator
        self.logits = logits.float().clone()                                          # [B, V] static input
        self.prev = prev.clone()                                                      # [B] last token per row
        self.done = torch.zeros(B, dtype=torch.bool, device=ds.device)               # [B] finished rows
        self.hist = torch.zeros(B, max(capacity, 1), dtype=torch.long, device=ds.device)  # [B, n] tokens
        self.counter = torch.zeros(1, 1, dtype=torch.long, device=ds.device)          # next column of hist
        self.read = 0                                                                  # columns handed out
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: Dict[bool, torch.cuda.CUDAGraph] = {}
        for masked in (False, True):
            self.graphs[masked] = self._capture(masked)

    def _body(self, masked: bool) -> None:
        B = self.ds.batch_size
        token = self.sampler(self.logits, self.generator)                            # [B]
        if self.eos is not None:
            token = torch.where(self.done, self.prev, token)
            self.done |= (token[:, None] == self.eos[None, :]).any(-1)
        self.prev.copy_(token)
        self.hist.scatter_(1, self.counter.expand(B, 1), token[:, None])
        self.counter.add_(1)
        update = completion_mask(self.ds) if masked else None
        # one compiled graph per (batch, dtype, model shape, update kind): more than dynamo's default limit of 8
        # in a session that decodes several batch sizes or models; fullgraph turns the limit into an error
        with torch._dynamo.config.patch(recompile_limit=256):
            self.logits.copy_(self.step(self.ds, token, update))

    def _buffers(self) -> List[Tensor]:
        return [*self.ds.mem, *self.ds.chunk_sum, self.ds.pos, self.logits, self.prev, self.done, self.hist,
                self.counter]

    def _capture(self, masked: bool) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (allocator, cuBLAS workspaces), then capture; the warmup's effects on the
        state and the generator are undone, so replays continue exactly where the eager state stands."""
        saved = [t.clone() for t in self._buffers()]
        rng = self.generator.get_state()
        side = torch.cuda.Stream(device=self.ds.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                self._body(masked)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if not self.default_gen:
            graph.register_generator_state(self.generator)
        with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool):
            self._body(masked)
        for t, s in zip(self._buffers(), saved):
            t.copy_(s)
        self.generator.set_state(rng)
        return graph

    def run(self, n: int, push: Callable[[List[int]], bool], stop_rows: Callable[[], List[int]],
            check_every: int) -> int:
        """Replays up to n steps. Every `check_every` steps the new token columns go to push(column) (which
        returns True when every row is finished); rows stop_rows() names (stop strings) are marked done on
        the device. Returns the number of steps run (the state advanced by as many positions)."""
        if self.read + n > self.hist.shape[1]:
            raise ValueError(f"GraphDecoder.run: {self.read} + {n} steps exceed the capacity {self.hist.shape[1]}")
        C = self.ds.config.chunk_len
        phases = {p % C for p in self.ds.positions}                                   # row completes at step i
        checked = steps = 0                                                            # iff (phase + i) % C == C - 1
        finished = False
        for i in range(n):
            self.graphs[((C - 1 - i) % C) in phases].replay()
            steps = i + 1
            if steps - checked >= check_every or steps == n:
                columns = self.hist[:, self.read + checked:self.read + steps].T.tolist()  # the one sync
                checked = steps
                for column in columns:
                    finished = push(column) or finished
                for r in stop_rows():
                    self.done[r] = True
                if finished:
                    break
        self.ds.positions = [p + steps for p in self.ds.positions]
        self.read += steps
        return steps
