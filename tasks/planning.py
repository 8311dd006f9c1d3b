"""The night's plan: which landed shards to log, which to skip, hold or defer, and what became of each.

Pure functions over shard references and validation results, so the rules are tested without
Prefect; the ingest flow only composes tasks around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .shards import ShardRef, ValidatedShard, provider_key

ShardStatus = Literal[
    "committed",  # logged and committed this night
    "staged",  # logged into staging (its commit failed this night: the next run commits it without logging)
    "already_committed",  # another run committed it meanwhile
    "skipped",  # in the store before the night began
    "held",  # the same content was quarantined before: fix the file to ingest it
    "quarantined",  # bad lines found this night
    "deferred",  # shares example ids or a provider's spelling with another new shard (of this run, or
    # committed by another run meanwhile): waits for the next night
    "waiting",  # may still be uploading (modified just now, or changed while read): looked at again next run
    "refused",  # not a shard: a directory, or a link leaving the landing location; never read
]


@dataclass(frozen=True)
class ShardOutcome:
    name: str
    sha256: str
    status: ShardStatus
    rows: int = 0
    detail: str = ""


@dataclass
class IngestSummary:
    outcomes: list[ShardOutcome] = field(default_factory=list)

    def count(self, status: ShardStatus) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def rows_committed(self) -> int:
        return sum(o.rows for o in self.outcomes if o.status == "committed")

    def summary(self) -> str:
        lines = [
            f"{o.name}: {o.status}" + (f" ({o.rows} rows)" if o.rows else "") + (f" - {o.detail}" if o.detail else "")
            for o in self.outcomes
        ]
        waiting = f", {self.count('waiting')} waiting" if self.count("waiting") else ""
        lines.append(f"{self.count('committed')} committed ({self.rows_committed} rows), "
                     f"{self.count('skipped')} already in the store, {self.count('quarantined')} quarantined{waiting}")
        return "\n".join(lines)


@dataclass(frozen=True)
class NightPlan:
    new: list[ShardRef]  # to validate, then log
    outcomes: list[ShardOutcome]  # decided without reading the shards


def plan_night(refs: Sequence[ShardRef], committed: Iterable[str], held: Iterable[str]) -> NightPlan:
    """Shards already committed are skipped, shards quarantined before with the same content are
    held, the rest are new."""
    committed, held = set(committed), set(held)
    new, outcomes = [], []
    for ref in refs:
        if ref.sha256 in committed:
            outcomes.append(ShardOutcome(ref.name, ref.sha256, "skipped"))
        elif ref.sha256 in held:
            outcomes.append(ShardOutcome(ref.name, ref.sha256, "held", detail="quarantined earlier"))
        else:
            new.append(ref)
    return NightPlan(new, outcomes)


def _clash(v: ValidatedShard, ids: dict[str, str], providers: dict[str, tuple[str, str]]) -> str | None:
    for e in v.examples:
        if e.id in ids:
            return f"shares example ids with {ids[e.id]}"
        spelling, shard = providers.get(provider_key(e.provider or ""), (e.provider, ""))
        if spelling != e.provider:
            return f"spells provider {e.provider!r} as {shard} spells {spelling!r}"
    return None


def defer_clashes(good: Sequence[ValidatedShard]) -> tuple[list[ValidatedShard], list[ShardOutcome]]:
    """(shards to log, deferred outcomes): a shard sharing an example id with an earlier new shard
    of the same night, or spelling a provider differently from it only in case, waits for the next
    night, when the first is committed and validation sees its ids and providers."""
    ids: dict[str, str] = {}
    providers: dict[str, tuple[str, str]] = {}
    admitted, deferred = [], []
    for v in good:
        if clash := _clash(v, ids, providers):
            deferred.append(ShardOutcome(v.shard.name, v.shard.sha256, "deferred", detail=clash))
            continue
        ids.update({e.id: v.shard.name for e in v.examples})
        providers.update({provider_key(e.provider or ""): (e.provider or "", v.shard.name) for e in v.examples})
        admitted.append(v)
    return admitted, deferred
