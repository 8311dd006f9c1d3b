"""The `ingest` flow: every new shard in the landing location is logged and committed once."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.ingest import ShardOutcome, discover, log_and_commit, open_store, prepare_store, quarantine_shard, validate
from tasks.shards import quarantined_hashes

from .params import IngestParams


@dataclass
class IngestSummary:
    outcomes: list[ShardOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def rows_committed(self) -> int:
        return sum(o.rows for o in self.outcomes if o.status == "committed")

    def summary(self) -> str:
        lines = [f"{o.name}: {o.status}" + (f" ({o.rows} rows)" if o.rows else "") + (f" - {o.detail}" if o.detail else "")
                 for o in self.outcomes]
        lines.append(f"{self.count('committed')} committed ({self.rows_committed} rows), "
                     f"{self.count('skipped')} already in the store, {self.count('quarantined')} quarantined")
        return "\n".join(lines)


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def ingest(params: IngestParams = IngestParams()):
    """Validate the landing location's new shards, quarantine bad ones, log and commit good ones.

    Ends Failed (with everything good committed) when a shard had to be quarantined, so a bad
    night is visible in the UI rather than a silent Completed.
    """
    logger = get_run_logger()
    refs = discover(params.landing)
    store = open_store(params.workspace.store_url, read_only=True)
    committed = {e.shard_hash for e in store.manifest} if store else set()
    known_ids = frozenset(store.read_metadata().example_ids) if store and store.n_rows else frozenset()
    held = quarantined_hashes(params.workspace.quarantine)

    summary = IngestSummary()
    new = []
    for ref in refs:
        if ref.sha256 in committed:
            summary.outcomes.append(ShardOutcome(ref.name, ref.sha256, "skipped"))
        elif ref.sha256 in held:
            logger.warning("%s is still quarantined (same content as before); fix it to ingest it", ref.name)
            summary.outcomes.append(ShardOutcome(ref.name, ref.sha256, "held", detail="quarantined earlier"))
        else:
            new.append(ref)

    validations = [validate.submit(ref, known_ids, int(params.max_shard_mb * 2**20)) for ref in new]
    validated = [f.result() for f in validations]
    good = [v for v in validated if v.ok]
    bad = [v for v in validated if not v.ok]
    # The same id in two new shards of one night: the later shard waits for the next night, when
    # the first is committed and its ids are known to the store.
    seen: dict[str, str] = {}
    for v in list(good):
        clash = next((seen[e.id] for e in v.examples if e.id in seen), None)
        if clash:
            good.remove(v)
            summary.outcomes.append(ShardOutcome(v.shard.name, v.shard.sha256, "deferred",
                                                 detail=f"shares example ids with {clash}"))
            continue
        seen.update({e.id: v.shard.name for e in v.examples})

    futures = [quarantine_shard.submit(v, params) for v in bad]
    if good:
        store_ref = prepare_store(params, good[0].examples)
        # One model copy per device; shards round-robin over them and log in parallel, while the
        # store's lock lets one commit through at a time.
        devices = params.model.devices or [params.model.device]
        for i, v in enumerate(good):
            on_device = params.model.model_copy(update={"device": devices[i % len(devices)]})
            futures.append(log_and_commit.submit(v, params.model_copy(update={"model": on_device}), store_ref))
    wait(futures)
    failures = [f for f in futures if f.state.is_failed()]
    summary.outcomes += [f.result() for f in futures if not f.state.is_failed()]

    create_table_artifact(
        key="ingest-summary",
        table=[{"shard": o.name, "status": o.status, "rows": o.rows, "detail": o.detail} for o in summary.outcomes],
        description=f"Ingestion from `{params.landing}` into `{params.workspace.store_url}`",
    )
    print(summary.summary())
    if failures:
        return Failed(message=f"{len(failures)} shard task(s) failed; committed shards are kept", data=summary)
    if bad:
        names = ", ".join(v.shard.name for v in bad)
        return Failed(message=f"quarantined {len(bad)} shard(s): {names}; the good shards were committed", data=summary)
    return Completed(message=f"committed {summary.count('committed')} shard(s)", data=summary)
