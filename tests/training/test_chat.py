"""Chat session: constant-size state over turns, streaming, reset (with a random tiny model)."""
import pytest
import torch

from mmrec_model import MMRecConfig, MMRecLM
from mmrec_model.generate import TextStream, continue_stream
from mmrec_model.session import ChatSession
from mmrec_model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def parts():
    tok = Tokenizer.train(["Hello there, how are you? I am fine, thank you. Größe: 你好. " * 40], vocab_size=320)
    torch.manual_seed(0)
    model = MMRecLM(MMRecConfig.preset("tiny", vocab_size=tok.vocab_size)).eval()
    return model, tok


def _shapes(state):
    return [(s.h.shape, s.m.shape, s.slots.shape, s.chunk_sum.shape) for s in state.layers]


def test_state_size_is_constant_over_turns(parts):
    model, tok = parts
    session = ChatSession(model, tok, system="Be kind.", max_new_tokens=20, seed=0)
    streamed = []
    first = session.reply("Hello there", streamed.append)
    assert "".join(streamed) == first
    shapes, position = _shapes(session.state), session.state.position
    for _ in range(3):
        session.reply("And how are you?")
        assert _shapes(session.state) == shapes          # memory does not grow with the conversation
    assert session.state.position > position
    session.reset()
    assert session.state is None


def test_sampling_is_seeded_and_greedy_matches_full_forward(parts):
    model, tok = parts
    a = ChatSession(model, tok, max_new_tokens=15, seed=3).reply("Hi")
    b = ChatSession(model, tok, max_new_tokens=15, seed=3).reply("Hi")
    assert a == b
    prompt = tok.encode("Hello there, how")
    new, _ = continue_stream(model, prompt, None, 6, temperature=0)
    ids = list(prompt)
    for token in new:                                 # each greedy token = argmax of a full re-read
        logits, _ = model(torch.tensor([ids]))
        assert int(logits[0, -1].argmax()) == token
        ids.append(token)


def test_text_stream_holds_back_split_characters(parts):
    _, tok = parts
    ids = tok.encode("你好 Größe")
    out = []
    stream = TextStream(tok, out.append)
    for i in ids:
        stream.push(i)
    assert "".join(out) == "你好 Größe" and all("\ufffd" not in piece for piece in out)
