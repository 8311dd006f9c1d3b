"""Examples, their encoding for the causal-LM loss, and batching."""

import json

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from sample.model import load_sample_corpus, train_tokenizer
from tests.models import tiny_gpt2
from valuation.data import EncodedExample, Example, batches, collate, encode_example, encoding_settings, read_jsonl
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


# --- encode_example ------------------------------------------------------------------------


def test_text_is_labelled_on_every_token():
    encoded = encode_example(CharTokenizer(), Example(id="t", text="abc"), max_length=16)
    assert encoded == EncodedExample("t", ids("abc"), ids("abc"))


def test_pair_masks_the_prompt_and_ends_the_response_with_eos():
    tok = CharTokenizer(bos_token_id=1, eos_token_id=2)
    encoded = encode_example(tok, Example(id="p", prompt="ab", response="xyz"), max_length=16)
    assert encoded.input_ids == [1, *ids("ab"), *ids("xyz"), 2]  # BOS once, before the prompt only
    assert encoded.labels == [IGNORE_INDEX] * 3 + ids("xyz") + [2]


def test_pair_with_a_real_tokenizer_is_labelled_on_response_tokens_only():
    tok = train_tokenizer(["How many grams in 2 kg? Answer: 2000 grams."] * 3, vocab_size=300)
    example = Example(id="qa", prompt="How many grams in 2 kg?", response=" Answer: 2000 grams.")
    encoded = encode_example(tok, example, max_length=64)
    n_prompt = len(tok(example.prompt)["input_ids"])
    assert encoded.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert encoded.labels[n_prompt:] == encoded.input_ids[n_prompt:]
    assert tok.decode(encoded.labels[n_prompt:]) == example.response + "<|endoftext|>"


def test_encoding_settings_name_the_special_tokens_added():
    tok = train_tokenizer(["some text to learn a few tokens from"] * 3, vocab_size=300)
    settings = encoding_settings(tok, 64)
    assert settings["special_tokens_added"] == [] and settings["eos_after_response"] == "<|endoftext|>"
    # A tokenizer that puts a BOS before every text, as Llama's does.
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tok.eos_token_id)])
    assert encoding_settings(tok, 64)["special_tokens_added"] == ["<|endoftext|>"]


def test_truncation_keeps_the_start():
    tok = CharTokenizer()
    assert encode_example(tok, Example(id="t", text="abcdefgh"), 5).input_ids == ids("abcde")
    pair = encode_example(tok, Example(id="p", prompt="abc", response="xyz"), 5)
    assert pair.input_ids == ids("abcxy")
    assert pair.labels == [IGNORE_INDEX] * 3 + ids("xy")


def test_example_without_loss_tokens_is_an_error_naming_it():
    tok = CharTokenizer()
    with pytest.raises(ValueError, match=r"'long-prompt'.*prompt alone is 6 tokens, max_length is 6"):
        encode_example(tok, Example(id="long-prompt", prompt="abcdef", response="xyz"), 6)
    with pytest.raises(ValueError, match=r"'one-char'.*1 token"):
        encode_example(tok, Example(id="one-char", text="a"), 8)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        encode_example(tok, Example(id="t", text="abc"), 1)


def test_prompt_one_short_of_max_length_keeps_one_loss_token():
    encoded = encode_example(CharTokenizer(), Example(id="p", prompt="abcde", response="xyz"), 6)
    assert encoded.labels == [IGNORE_INDEX] * 5 + ids("x")


# --- collate and batches -------------------------------------------------------------------


def encoded_set(texts):
    tok = CharTokenizer()
    return [encode_example(tok, Example(id=f"e{i}", text=t), 64) for i, t in enumerate(texts)]


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
