import pytest
import torch

import ftlab
from ftlab.chat import Example, apply_chat_template, format_prompt, sft_tensors
from ftlab.tokenizer import EOS, MAX_LEN, PAD_ID, VOCAB, decode, encode, pad_batch


def test_roundtrip_every_character():
    text = "".join(VOCAB)
    assert decode(encode(text)) == text


def test_unknown_character_is_named():
    with pytest.raises(ValueError, match="'Z'"):
        encode("abcZ")
    with pytest.raises(TypeError):
        encode(123)
    with pytest.raises(ValueError, match="999"):
        decode([999])


def test_chat_template_renders_one_exchange():
    msgs = [{"role": "user", "content": "rev abc"}, {"role": "assistant", "content": "cba"}]
    assert apply_chat_template(msgs) == "▶rev abc◆cba■"
    assert apply_chat_template(msgs[:1], add_generation_prompt=True) == "▶rev abc◆"
    assert format_prompt("rev abc", "raw") == "rev abc="


@pytest.mark.parametrize("msgs,match", [
    ([], "non-empty"),
    ([{"role": "assistant", "content": "x"}], "alternate"),
    ([{"role": "user", "content": "a◆b"}], "marker"),
    ([{"role": "user", "text": "a"}], "keys"),
])
def test_chat_template_rejects_bad_messages(msgs, match):
    with pytest.raises(ValueError, match=match):
        apply_chat_template(msgs)


def test_bad_template_name():
    with pytest.raises(ValueError, match="'jinja'"):
        format_prompt("x", "jinja")


def test_sft_loss_mask_covers_completion_and_eos_only():
    ids, mask = sft_tensors([Example("▶ab◆", "xy"), Example("▶a◆", "z")])
    assert decode(ids[0]) == "▶ab◆xy" + EOS
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert mask[1].tolist() == [0, 0, 0, 1, 1, 0, 0]  # then padding
    assert ids[1, -1].item() == PAD_ID
    _, full = sft_tensors([Example("▶ab◆", "xy")], mask_prompt=False)
    assert full.sum().item() == 7


def test_sft_rejects_too_long():
    with pytest.raises(ValueError, match="MAX_LEN"):
        sft_tensors([Example("a" * MAX_LEN, "b")])


def test_pad_batch_left_and_right():
    ids, m = pad_batch([[5, 6], [7]], side="left")
    assert ids.tolist() == [[5, 6], [PAD_ID, 7]] and m.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError, match="'middle'"):
        pad_batch([[1]], side="middle")
