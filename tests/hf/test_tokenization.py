"""The exported tokenizer through AutoTokenizer against mmrec_model's Tokenizer: chat template ids on every
bundled chat, control tokens, plain text."""
import json

import pytest

from mmrec_model.tokenizer import SPECIAL_TOKENS, Tokenizer

from . import require
from .conftest import CORPUS_DIR

require("transformers")
from transformers import AutoTokenizer  # noqa: E402


def bundled_chats():
    chats = []
    for path in sorted((CORPUS_DIR / "chat").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                chats.append(json.loads(line)["messages"])
    return chats


@pytest.fixture(scope="module")
def hf_tok(hf_dir):
    return AutoTokenizer.from_pretrained(hf_dir)


def test_chat_template_ids_equal_render_chat_on_bundled_chats(hf_tok, tok):
    chats = bundled_chats()
    assert len(chats) > 300
    for messages in chats:
        # the template parses control tokens out of text; the bundled chats type none
        assert not any(marker in m["content"] for m in messages for marker in SPECIAL_TOKENS)
        full = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=False)
        assert full == tok.render_chat(messages)[0]
        prompt = messages[:-1] if messages[-1]["role"] == "assistant" else messages
        ids = hf_tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids == tok.render_chat(prompt, add_generation_prompt=True)[0]


def test_unknown_role_is_refused(hf_tok):
    with pytest.raises(Exception, match="unknown role"):
        hf_tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_special_tokens_and_plain_text(hf_tok, tok, hf_dir):
    assert hf_tok.eos_token_id == tok.eos_id and hf_tok.pad_token_id == tok.pad_id
    assert [hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    assert hf_tok(text)["input_ids"] == tok.encode(text)
    assert hf_tok.decode(tok.encode(text)) == text
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in config
    # the same tokenizer.json still loads with mmrec_model's Tokenizer (control tokens kept as text there)
    again = Tokenizer.load(hf_dir)
    assert again.encode(text) == tok.encode(text)
    assert again.encode("<|end|>") == tok.encode("<|end|>") != [tok.end_id]
