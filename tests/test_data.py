"""Examples, their encoding for the causal-LM loss, and batching."""

import json

import pytest
import torch

from sample.model import load_sample_corpus, train_tokenizer
from tests.models import gpt2_style_tokenizer, llama_style_tokenizer, tiny_gpt2, tokenizer_without_bos
from valuation.data import (
    EncodedExample,
    Encoder,
    Example,
    SpecialTokens,
    batches,
    collate,
    encoding_settings,
    read_jsonl,
)
from valuation.objectives import IGNORE_INDEX, CausalLMObjective


class CharTokenizer:
    """One id per character (its code point), so expected ids can be written by hand."""

    def __init__(self, bos_token_id=None, eos_token_id=3):
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id

    def __call__(self, text, add_special_tokens=True):
        bos = [self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []
        return {"input_ids": bos + [ord(c) for c in text]}


def ids(text):
    return [ord(c) for c in text]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


# --- Example and read_jsonl ---------------------------------------------------------------


def test_example_accepts_text_or_pair():
    assert not Example(id="a", provider="p", text="hello").is_pair
    assert Example(id="b", prompt="q", response="r").is_pair


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"text": "t", "prompt": "q", "response": "r"}, "not both"),
        ({"text": "t", "response": "r"}, "not both"),
        ({}, "need text"),
        ({"prompt": "q"}, "need text"),
    ],
)
def test_example_rejects_mixed_or_missing_content(fields, message):
    with pytest.raises(ValueError, match=message):
        Example(id="x", **fields)


def test_read_jsonl_reads_both_formats_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [
        json.dumps({"id": "a", "provider": "p", "text": "hello"}),
        "",
        json.dumps({"id": "b", "provider": "q", "prompt": "2+2?", "response": "4"}),
    ])
    assert read_jsonl(path) == [
        Example(id="a", provider="p", text="hello"),
        Example(id="b", provider="q", prompt="2+2?", response="4"),
    ]


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ('{"id": "c", "text": "unterminated', r"line 3: invalid JSON"),
        ('{"provider": "p", "text": "no id"}', r"line 3: id: Field required"),
        ('{"id": "c", "prompt": "no response"}', r"line 3: .*need text, or both prompt and response"),
        ('["a", "list"]', r"line 3: expected a JSON object"),
    ],
)
def test_read_jsonl_names_file_and_line_of_a_bad_line(tmp_path, bad_line, expected):
    good = json.dumps({"id": "a", "text": "fine"})
    path = write_lines(tmp_path / "bad.jsonl", [good, good, bad_line, good])
    with pytest.raises(ValueError, match=expected) as err:
        read_jsonl(path)
    assert str(path) in str(err.value)


def test_sample_corpus_reads_cleanly():
    corpus = load_sample_corpus()
    assert len(corpus) == 280
    assert len({e.id for e in corpus}) == 280
    assert sum(e.is_pair for e in corpus) == 40


# --- Encoder ------------------------------------------------------------------------------


def test_text_is_labelled_on_every_token():
    encoded = Encoder(CharTokenizer(), 16).encode(Example(id="t", text="abc"))
    assert encoded == EncodedExample("t", ids("abc"), ids("abc"))


def test_pair_masks_the_prompt_and_ends_the_response_with_eos():
    tok = CharTokenizer(bos_token_id=1, eos_token_id=2)
    encoded = Encoder(tok, 16).encode(Example(id="p", prompt="ab", response="xyz"))
    assert encoded.input_ids == [1, *ids("ab"), *ids("xyz"), 2]  # BOS once, before the prompt only
    assert encoded.labels == [IGNORE_INDEX] * 3 + ids("xyz") + [2]


def test_pair_with_a_real_tokenizer_is_labelled_on_response_tokens_only():
    tok = train_tokenizer(["How many grams in 2 kg? Answer: 2000 grams."] * 3, vocab_size=300)
    example = Example(id="qa", prompt="How many grams in 2 kg?", response=" Answer: 2000 grams.")
    encoded = Encoder(tok, 64).encode(example)
    n_prompt = len(tok(example.prompt)["input_ids"])
    assert encoded.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert encoded.labels[n_prompt:] == encoded.input_ids[n_prompt:]
    assert tok.decode(encoded.labels[n_prompt:]) == example.response + "<|endoftext|>"


# --- special tokens (bos / eos) ------------------------------------------------------------

def encoded_before_the_setting(tok, example, max_length):
    """encode_example as it was before bos/eos could be set: the ids existing stores were logged with."""
    if example.is_pair:
        prompt = tok(example.prompt)["input_ids"]
        response = tok(example.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return (prompt + response)[:max_length], ([IGNORE_INDEX] * len(prompt) + response)[:max_length]
    ids = tok(example.text)["input_ids"][:max_length]
    return ids, ids


@pytest.mark.parametrize("make", [gpt2_style_tokenizer, llama_style_tokenizer,
                                  lambda: llama_style_tokenizer("<s> $A </s>")], ids=["gpt2", "llama", "bos-and-eos"])
def test_auto_gives_exactly_the_ids_of_before_the_setting(make):
    tok, corpus = make(), load_sample_corpus()
    encoder = Encoder(tok, 256, SpecialTokens(bos="auto", eos="auto"))
    for example in corpus:
        encoded = encoder.encode(example)
        assert (encoded.input_ids, encoded.labels) == encoded_before_the_setting(tok, example, 256), example.id


def test_add_on_gpt2_puts_the_bos_first_and_the_eos_last():
    tok = gpt2_style_tokenizer()
    plain = tok("Emma woke early.", add_special_tokens=False)["input_ids"]
    text = Example(id="t", text="Emma woke early.")
    assert Encoder(tok, 64).encode(text).input_ids == plain  # auto: GPT-2 adds nothing
    encoded = Encoder(tok, 64, SpecialTokens(bos="add", eos="add")).encode(text)
    assert encoded.input_ids == [tok.bos_token_id, *plain, tok.eos_token_id] == encoded.labels


def test_omit_on_a_bos_adding_tokenizer_removes_it():
    tok = llama_style_tokenizer()
    plain = tok("Emma woke early.", add_special_tokens=False)["input_ids"]
    text = Example(id="t", text="Emma woke early.")
    assert Encoder(tok, 64).encode(text).input_ids == [tok.bos_token_id, *plain]
    assert Encoder(tok, 64, SpecialTokens(bos="omit")).encode(text).input_ids == plain
    assert Encoder(tok, 64, SpecialTokens(bos="add")).ids == Encoder(tok, 64).ids  # its own BOS is <s> already


def test_add_on_a_tokenizer_without_that_token_is_one_line_naming_it():
    tok = tokenizer_without_bos()
    with pytest.raises(ValueError, match=rf"^tokenizer {type(tok).__name__} has no BOS token: bos 'add' needs one;"
                       r" use 'auto' or 'omit'$"):
        Encoder(tok, 64, SpecialTokens(bos="add"))
    Encoder(tokenizer_without_bos(), 64, SpecialTokens(bos="omit", eos="add"))  # its EOS is there


@pytest.mark.parametrize(("special", "prompt_start", "response_end"), [
    (SpecialTokens(), ["<s>"], ["</s>"]),
    (SpecialTokens(bos="omit", eos="add"), [], ["</s>"]),
    (SpecialTokens(bos="add", eos="omit"), ["<s>"], []),
])
def test_a_pair_is_labelled_on_its_response_and_ends_as_eos_says(special, prompt_start, response_end):
    tok = llama_style_tokenizer()
    example = Example(id="qa", prompt="How many grams in 2 kg?", response=" 2000 grams.")
    prompt = tok.convert_tokens_to_ids(prompt_start) + tok(example.prompt, add_special_tokens=False)["input_ids"]
    response = tok(example.response, add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(response_end)
    encoded = Encoder(tok, 64, special).encode(example)
    assert encoded.input_ids == prompt + response
    assert encoded.labels == [IGNORE_INDEX] * len(prompt) + response  # the prompt and its BOS carry no loss


def test_encoding_settings_name_the_setting_and_the_tokens_it_resolves_to():
    tok = llama_style_tokenizer()
    settings = encoding_settings(Encoder(tok, 64, SpecialTokens(eos="add")))
    assert settings == {
        "tokenizer": type(tok).__name__, "bos": "auto", "eos": "add",
        "special_tokens": {"text_start": ["<s>"], "text_end": ["</s>"], "prompt_end": [], "response_end": ["</s>"]},
        "max_length": 64, "truncation": "right",
    }
    gpt2 = encoding_settings(Encoder(gpt2_style_tokenizer(), 64))["special_tokens"]
    assert gpt2 == {"text_start": [], "text_end": [], "prompt_end": [], "response_end": ["<|endoftext|>"]}


def test_truncation_keeps_the_start():
    tok = CharTokenizer()
    assert Encoder(tok, 5).encode(Example(id="t", text="abcdefgh")).input_ids == ids("abcde")
    pair = Encoder(tok, 5).encode(Example(id="p", prompt="abc", response="xyz"))
    assert pair.input_ids == ids("abcxy")
    assert pair.labels == [IGNORE_INDEX] * 3 + ids("xy")


def test_example_without_loss_tokens_is_an_error_naming_it():
    tok = CharTokenizer()
    with pytest.raises(ValueError, match=r"'long-prompt'.*prompt alone is 6 tokens, max_length is 6"):
        Encoder(tok, 6).encode(Example(id="long-prompt", prompt="abcdef", response="xyz"))
    with pytest.raises(ValueError, match=r"'one-char'.*1 token"):
        Encoder(tok, 8).encode(Example(id="one-char", text="a"))
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        Encoder(tok, 1).encode(Example(id="t", text="abc"))


def test_prompt_one_short_of_max_length_keeps_one_loss_token():
    encoded = Encoder(CharTokenizer(), 6).encode(Example(id="p", prompt="abcde", response="xyz"))
    assert encoded.labels == [IGNORE_INDEX] * 5 + ids("x")


# --- collate and batches -------------------------------------------------------------------


def encoded_set(texts):
    tok = CharTokenizer()
    return [Encoder(tok, 64).encode(Example(id=f"e{i}", text=t)) for i, t in enumerate(texts)]


def test_collate_pads_right_and_masks_padding():
    batch = collate(encoded_set(["abcd", "ab", "abc"]), pad_id=7)
    assert batch["example_ids"] == ["e0", "e1", "e2"]
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (3, 4) and batch[key].dtype == torch.long
    assert batch["input_ids"][1].tolist() == ids("ab") + [7, 7]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert batch["labels"][1].tolist() == ids("ab") + [IGNORE_INDEX] * 2


def test_collate_without_a_pad_token_pads_with_zero():
    assert collate(encoded_set(["abc", "ab"]), pad_id=None)["input_ids"][1, -1] == 0
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_id=0)


def test_padding_does_not_change_an_examples_loss():
    model = tiny_gpt2(vocab=128)
    encoded = encoded_set(["abcdefghij", "klm", "nopqrs"])
    objective = CausalLMObjective()
    batch = collate(encoded, pad_id=0)
    together = objective.losses(objective.forward(model, batch), batch)
    for row, e in enumerate(encoded):
        alone = collate([e], pad_id=0)
        torch.testing.assert_close(together[row], objective.losses(objective.forward(model, alone), alone)[0])


def test_batches_keep_input_order():
    encoded = encoded_set(["aaaa", "a b", "aa", "aaaaaa", "aaa", "ab", "abcde"])
    got = [b["example_ids"] for b in batches(encoded, 3, pad_id=0)]
    assert got == [["e0", "e1", "e2"], ["e3", "e4", "e5"], ["e6"]]


def test_length_bucketing_is_a_stable_sort():
    encoded = encoded_set(["aaaa", "a b", "aa", "aaaaaa", "aaa", "ab", "abcde"])
    got = [b["example_ids"] for b in batches(encoded, 3, pad_id=0, by_length=True)]
    assert got == [["e2", "e5", "e1"], ["e4", "e0", "e6"], ["e3"]]  # ties (e2/e5, e1/e4) keep input order
    assert [b["input_ids"].shape[1] for b in batches(encoded, 3, 0, by_length=True)] == [3, 5, 6]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(encoded, 0, pad_id=0))
