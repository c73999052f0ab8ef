"""Tokenizer, chat/instruction templates and their loss masks, checked token by token."""
import pytest
import torch

from mmrec_model.data import IGNORE, DATA_DIR, pad_examples, targets_from_mask
from mmrec_model.tokenizer import SPECIAL_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tok():
    text = (DATA_DIR / "pretrain" / "wikitext103_sample_train.txt").read_text(encoding="utf-8")[:60_000]
    return Tokenizer.train([text], vocab_size=400)


def test_vocab_and_control_tokens(tok):
    assert tok.vocab_size == 400
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(["abc"], vocab_size=100)


def test_roundtrip_bytes_and_unicode(tok):
    text = "Héllo, wörld! 你好 🙂\n\ttabs  and  spaces"
    assert tok.decode(tok.encode(text)) == text


def test_control_strings_in_text_are_plain_text(tok):
    ids = tok.encode("say <|end|> and <|assistant|>")
    assert not set(ids) & tok.special_ids
    assert tok.decode(ids) == "say <|end|> and <|assistant|>"


def test_save_load(tok, tmp_path):
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode("The quick brown fox") == tok.encode("The quick brown fox")
    assert again.end_id == tok.end_id


def test_chat_mask_token_by_token(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "See you."}]
    ids, mask = tok.render_chat(messages)
    enc = tok.encode
    expected = ([(tok.system_id, 0)] + [(i, 0) for i in enc("Be brief.")] + [(tok.end_id, 0)]
                + [(tok.user_id, 0)] + [(i, 0) for i in enc("Hi there")] + [(tok.end_id, 0)]
                + [(tok.assistant_id, 0)] + [(i, 1) for i in enc("Hello!")] + [(tok.end_id, 1)]
                + [(tok.user_id, 0)] + [(i, 0) for i in enc("Bye")] + [(tok.end_id, 0)]
                + [(tok.assistant_id, 0)] + [(i, 1) for i in enc("See you.")] + [(tok.end_id, 1)])
    assert list(zip(ids, mask)) == expected
    # the learned tokens decode to exactly the assistant turns
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Hello!See you."
    prompt, pmask = tok.render_chat(messages[:2], add_generation_prompt=True)
    assert prompt[-1] == tok.assistant_id and not any(pmask)


def test_instruction_mask_token_by_token(tok):
    ids, mask = tok.render_instruction("Add the numbers.", "2 and 3", "5")
    user_text = "Add the numbers.\n\nInput:\n2 and 3"
    expected = ([(tok.user_id, 0)] + [(i, 0) for i in tok.encode(user_text)] + [(tok.end_id, 0), (tok.assistant_id, 0)]
                + [(i, 1) for i in tok.encode("5")] + [(tok.end_id, 1)])
    assert list(zip(ids, mask)) == expected
    no_input, _ = tok.render_instruction("Say hi.", "", "hi")
    assert tok.decode(no_input[1:no_input.index(tok.end_id)]) == "Say hi."
    prompt, pmask = tok.render_instruction("Add the numbers.", "2 and 3")
    assert prompt == ids[:len(prompt)] and prompt[-1] == tok.assistant_id and not any(pmask)


def test_targets_follow_the_mask(tok):
    ids, mask = tok.render_instruction("Name a colour.", "", "Blue")
    x, y = targets_from_mask(torch.tensor(ids), torch.tensor(mask, dtype=torch.bool))
    assert x.tolist() == ids[:-1]
    for t in range(len(ids) - 1):       # position t predicts token t+1; only response tokens are targets
        assert y[t].item() == (ids[t + 1] if mask[t + 1] else IGNORE)
    learned = [v for v in y.tolist() if v != IGNORE]
    assert learned == tok.encode("Blue") + [tok.end_id]


def test_padding_is_never_a_target(tok):
    a = tok.render_instruction("A", "", "long answer here with words")
    b = tok.render_instruction("B", "", "x")
    ex = [(torch.tensor(i), torch.tensor(m, dtype=torch.bool)) for i, m in (a, b)]
    x, y = pad_examples(ex, tok.pad_id, multiple=16)
    assert x.shape[1] % 16 == 0
    short = len(b[0]) - 1
    assert (x[1, short:] == tok.pad_id).all() and (y[1, short:] == IGNORE).all()
    assert (y[1, :short] != IGNORE).sum() == len(tok.encode("x")) + 1
