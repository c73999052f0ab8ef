"""Held-out loss and perplexity, and the sample generations printed after each stage."""
from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn.functional as F

from .. import data as D
from ..generate import continue_stream
from ..session import ChatSession
from ..tokenizer import Tokenizer

SAMPLE_PROMPTS = {
    "pretrain": ["ROMEO:\n", "The history of the"],
    "instruct": [("Give three tips for staying healthy.", ""), ("Translate the sentence into French.", "Good morning!")],
    "chat": ["Hello! What can you help me with?"],
}


@torch.no_grad()
def evaluate(model, sets: Dict[str, List[D.MicroBatch]], device, amp) -> Dict[str, Dict[str, float]]:
    """Token-weighted held-out loss and perplexity of each set (each row from a fresh state)."""
    was_training = model.training
    model.eval()
    out = {}
    for name, batches in sets.items():
        total, count = 0.0, 0
        for mb in batches:
            x, y = mb.x.to(device), mb.y.to(device)
            with amp():
                logits, _ = model(x)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=D.IGNORE,
                                     reduction="sum").item()
            count += int((y != D.IGNORE).sum())
        if count:
            loss = total / count
            out[name] = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}
    model.train(was_training)
    return out


def stage_samples(stage: str, model, tok: Tokenizer, max_new_tokens: int, seed: int) -> List[Dict[str, str]]:
    """Sample generations for `stage` (a fixed generator, so the training RNG is not touched)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for prompt in SAMPLE_PROMPTS[stage]:
        if stage == "pretrain":
            ids, _ = continue_stream(model, tok.encode(prompt), None, max_new_tokens, stop=(tok.eos_id,),
                                     temperature=0.8, top_k=40, top_p=0.95, generator=g)
            out.append({"prompt": prompt, "output": tok.decode(ids)})
        elif stage == "instruct":
            instruction, inp = prompt
            ids, _ = continue_stream(model, tok.render_instruction(instruction, inp)[0], None, max_new_tokens,
                                     stop=(tok.end_id, tok.eos_id), temperature=0.7, top_k=40, top_p=0.95,
                                     generator=g)
            out.append({"prompt": tok.instruction_prompt(instruction, inp), "output": tok.decode(ids)})
        else:
            session = ChatSession(model, tok, max_new_tokens=max_new_tokens, temperature=0.7, seed=seed)
            out.append({"prompt": prompt, "output": session.reply(prompt)})
    model.train(was_training)
    return out
