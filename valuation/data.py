"""Training examples: read them, tokenise them for the causal-LM loss, batch them.

One example is one document (`text`) or one instruction pair (`prompt` + `response`). Its loss
is summed over the tokens it is judged on: every token of a document, only the response of a
pair (the prompt is given, so it carries no credit).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .objectives import IGNORE_INDEX


class Example(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    provider: str | None = None
    text: str | None = None
    prompt: str | None = None
    response: str | None = None

    @model_validator(mode="after")
    def _one_format(self) -> Example:
        has_pair = self.prompt is not None or self.response is not None
        if self.text is not None and has_pair:
            raise ValueError("give either text or prompt+response, not both")
        if self.text is None and (self.prompt is None or self.response is None):
            raise ValueError("need text, or both prompt and response")
        return self

    @property
    def is_pair(self) -> bool:
        return self.text is None

    @property
    def display_text(self) -> str:
        """The example as one text, for snippets in reports."""
        return self.text if self.text is not None else f"{self.prompt} {self.response}"


def providers_of(examples: Sequence[Example]) -> list[str]:
    """The provider of each training example; every training example must name one."""
    named = [e.provider for e in examples if e.provider is not None]
    if len(named) < len(examples):
        missing = next(e.id for e in examples if e.provider is None)
        raise ValueError(f"training example {missing!r} names no provider")
    return named


def _first_problem(err: ValidationError) -> str:
    problem = err.errors()[0]
    where = ".".join(str(p) for p in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file: its parsed value, or why it has none."""

    number: int  # 1-based
    value: object = None
    problem: str | None = None


def _lone_surrogate(value: object) -> bool:
    # JSON may spell a lone surrogate ("\ud800"); Python decodes it into a str no tokenizer or
    # file can encode, so it must be refused here rather than crash the logging later.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def parse_jsonl(data: bytes) -> Iterator[JsonLine]:
    """Every non-blank line of JSONL bytes, parsed; the one JSONL reader of the project."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield JsonLine(number, problem=f"not UTF-8 (byte {err.start + 1} of the line)")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            yield JsonLine(number, problem=f"invalid JSON: {err.msg} at column {err.colno}")
            continue
        if _lone_surrogate(value):
            yield JsonLine(number, problem="a string holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text")
            continue
        yield JsonLine(number, value)


def read_examples(data: bytes, source: str) -> list[Example]:
    """Every example of JSONL bytes; blank lines are skipped, the first bad line raises a ValueError
    naming `source` and the line."""
    examples = []
    for line in parse_jsonl(data):
        where = f"{source}, line {line.number}"
        if line.problem:
            raise ValueError(f"{where}: {line.problem}")
        if not isinstance(line.value, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(line.value).__name__}")
        try:
            examples.append(Example(**line.value))
        except ValidationError as err:
            raise ValueError(f"{where}: {_first_problem(err)}") from None
    return examples


def read_jsonl(path: str | Path) -> list[Example]:
    """Every example of a local JSONL file (see read_examples)."""
    return read_examples(Path(path).read_bytes(), str(path))


@dataclass(frozen=True)
class EncodedExample:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where the token is context only


SpecialTokenRule = Literal["auto", "add", "omit"]


class SpecialTokens(BaseModel):
    """Which BOS and EOS an example's tokens get, so rows are encoded as the model was trained.

    `bos` goes before each text and each prompt; `eos` ends each text, and a pair's response.
    - "auto": what the tokenizer itself adds (its config says, as a Llama tokenizer's
      add_bos_token does), and an EOS after each response so the model learns where answers end.
    - "add": always the tokenizer's bos_token / eos_token (an error if it has none).
    - "omit": none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bos: SpecialTokenRule = "auto"
    eos: SpecialTokenRule = "auto"


@dataclass(frozen=True)
class SpecialTokenIds:
    """SpecialTokens resolved for one tokenizer: the ids around each part of an example."""

    text_start: list[int]  # before a text, and before a prompt
    text_end: list[int]
    prompt_end: list[int]  # "auto" keeps whatever the tokenizer puts after a text after a prompt too
    response_end: list[int]

    def names(self, tokenizer) -> dict[str, list[str]]:
        """The same as tokens, by name: what stores and reports record."""
        return {part: tokenizer.convert_ids_to_tokens(ids) for part, ids in vars(self).items()}


def _tokenizer_name(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path", "")
    return f"{type(tokenizer).__name__} {name!r}" if name else type(tokenizer).__name__


def _own_special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text, found by encoding one with and without them."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)} puts special tokens inside a text "
                     f"({full} for {plain}): only tokens before and after it can be set by bos/eos")


def _chosen(rule: SpecialTokenRule, own: list[int], tokenizer, kind: str) -> list[int]:
    if rule == "auto":
        return own
    if rule == "omit":
        return []
    token_id = getattr(tokenizer, f"{kind}_token_id", None)
    if token_id is None:
        raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)} has no {kind.upper()} token: "
                         f"{kind} 'add' needs one; use 'auto' or 'omit'")
    return [token_id]


def resolve_special_tokens(tokenizer, special: SpecialTokens) -> SpecialTokenIds:
    """The ids `special` puts around each part of an example with this tokenizer."""
    before, after = _own_special_tokens(tokenizer)
    start = _chosen(special.bos, before, tokenizer, "bos")
    if special.eos == "auto":  # the tokenizer's own after texts and prompts, as it encodes them
        eos = getattr(tokenizer, "eos_token_id", None)
        return SpecialTokenIds(start, after, after, [] if eos is None else [eos])
    end = _chosen(special.eos, after, tokenizer, "eos")
    return SpecialTokenIds(start, end, [], end)


class Encoder:
    """Token ids and labels of examples for one tokenizer: its special tokens are resolved once,
    here, and each example then costs one tokenizer call per part."""

    def __init__(self, tokenizer, max_length: int, special: SpecialTokens = SpecialTokens()):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (one context and one predicted token), got {max_length}")
        self.tokenizer, self.max_length, self.special = tokenizer, max_length, special
        self.ids = resolve_special_tokens(tokenizer, special)

    def _plain(self, text: str | None) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, text: str) -> list[int]:
        """A prompt's ids as they precede its response (and as a query's prompt is generated from)."""
        return self.ids.text_start + self._plain(text) + self.ids.prompt_end

    def encode(self, example: Example) -> EncodedExample:
        """Token ids and labels of one example, cut to `max_length` tokens from the right."""
        ids, max_length = self.ids, self.max_length
        if example.is_pair:
            prompt = self.prompt(cast(str, example.prompt))  # a pair has both parts
            response = self._plain(example.response) + ids.response_end
            input_ids = prompt + response
            labels = [IGNORE_INDEX] * len(prompt) + response
        else:
            input_ids = ids.text_start + self._plain(example.text) + ids.text_end
            labels = list(input_ids)
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        # Position 0 is never predicted (nothing comes before it), so it cannot carry loss.
        if all(label == IGNORE_INDEX for label in labels[1:]):
            if example.is_pair and len(prompt) >= max_length:
                reason = f"its prompt alone is {len(prompt)} tokens, max_length is {max_length}"
            else:
                reason = f"it is {len(input_ids)} token(s) long and the first is never predicted"
            raise ValueError(f"example {example.id!r} has no token to compute a loss on: {reason}")
        return EncodedExample(example.id, input_ids, labels)

    def identity(self) -> dict[str, Any]:
        """The setting and the special tokens it resolves to around each part of an example: what
        makes rows comparable (a store keeps it)."""
        return {**self.special.model_dump(), "special_tokens": self.ids.names(self.tokenizer)}


def encoding_settings(encoder: Encoder) -> dict:
    """How `encoder` turns examples into tokens, for a report's provenance: the bos/eos setting,
    the special tokens it resolves to around texts, prompts and responses, and the cut."""
    return {"tokenizer": type(encoder.tokenizer).__name__, **encoder.identity(),
            "max_length": encoder.max_length, "truncation": "right"}


def collate(encoded: Sequence[EncodedExample], pad_id: int | None) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels (IGNORE_INDEX at padding), example_ids.

    `pad_id` may be None (GPT-2 tokenizers have no pad token): padding is masked out and never
    labelled, so any in-vocabulary id serves and 0 is used.
    """
    if not encoded:
        raise ValueError("cannot collate an empty list of examples")
    width = max(len(e.input_ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), 0 if pad_id is None else pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "example_ids": [e.id for e in encoded],
    }


def batches(
    encoded: Sequence[EncodedExample], batch_size: int, pad_id: int | None, *, by_length: bool = False
) -> Iterator[dict]:
    """Collated batches of `batch_size` examples (the last may be smaller).

    In input order by default. `by_length` groups examples of similar length to waste less
    compute on padding: a stable sort by length, so ties keep input order and the batches are
    the same on every run; rows then come out in that order, as `example_ids` says.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(encoded, key=lambda e: len(e.input_ids)) if by_length else list(encoded)
    for start in range(0, len(order), batch_size):
        yield collate(order[start : start + batch_size], pad_id)


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its tensors on `device` (ids and other lists as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
