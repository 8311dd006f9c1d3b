"""Which examples a PCA projection is fitted on, and the record of them kept with the store.

The projection is fitted once, when the store is created, and every later row and query is
projected with it; so the sample is chosen deliberately (taken in turn from each of the first
night's valid shards, so no one shard or provider fills it, and capped) and named in the store
and in every report: which shards, how many examples, and a hash of their content.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, zip_longest

from pydantic import BaseModel, ConfigDict

from valuation.data import Example
from valuation.pipeline import examples_sha256

from .shards import ValidatedShard


class ShardName(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    sha256: str


class CalibrationRecord(BaseModel):
    """What a stored PCA projection was fitted on (StoreAttributes.calibration, report provenance)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shards: list[ShardName]
    examples: int
    sha256: str  # of the examples' content, in the order they were fitted on


def calibration_sample(shards: Sequence[ValidatedShard], cap: int) -> tuple[list[Example], CalibrationRecord]:
    """Up to `cap` examples, one from each shard in turn (shard order, then line order), and their record."""
    if cap < 1:
        raise ValueError(f"calibration_examples must be at least 1, got {cap}")
    turns = zip_longest(*(s.examples for s in shards))
    examples = [e for e in chain.from_iterable(turns) if e is not None][:cap]
    if not examples:
        raise ValueError("no valid examples to fit the PCA projection on")
    taken = {e.id for e in examples}
    names = [ShardName(name=s.shard.name, sha256=s.shard.sha256)
             for s in shards if any(e.id in taken for e in s.examples)]
    return examples, CalibrationRecord(shards=names, examples=len(examples), sha256=examples_sha256(examples))


def calibration_provenance(stored: dict | None) -> dict | None:
    """A store's calibration record as reports show it: counts and the content hash, no shard names
    (a provider's export must not name another provider's shards)."""
    if stored is None:
        return None
    record = CalibrationRecord(**stored)
    return {"examples": record.examples, "shards": len(record.shards), "sha256": record.sha256}
