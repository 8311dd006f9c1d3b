"""The `ingest` flow: every new shard in the landing location is logged and committed once.

Logging fans out, one task per shard, each writing a staging group of its own; then one
committer task publishes the staged shards in the night's order (docs/operations.md, several
machines)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from tasks.ingest import commit_shards, discover, log_shard, open_store, prepare_store, quarantine_shard, validate
from tasks.params import IngestParams, ModelParams, Workspace, param
from tasks.planning import IngestSummary, ShardOutcome, defer_clashes, plan_night
from tasks.shards import Skipped, quarantined_hashes
from tasks.store_settings import settings_conflict
from valuation.config import FisherConfig, ProjectionConfig


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)  # type: ignore[arg-type]
def ingest(
    workspace: Workspace = param("workspace"),
    landing: str = param("landing"),
    model: ModelParams = param("model"),
    projection: ProjectionConfig = param("projection"),
    fisher: FisherConfig = param("fisher"),
    calibration_examples: PositiveInt = param("calibration_examples"),
    max_shard_mb: PositiveFloat = param("max_shard_mb"),
    settle_seconds: NonNegativeFloat = param("settle_seconds"),
) -> State:
    """Validate the landing location's new shards, quarantine bad ones, log and commit good ones.

    Ends Failed (with everything good committed) when a shard had to be quarantined, so a bad
    night is visible in the UI rather than a silent Completed; and at once, with nothing done,
    when the projection or Fisher settings differ from those of the existing store.
    """
    params = IngestParams(**locals())  # the parameters as the tasks take them, before any other name exists
    logger = get_run_logger()
    max_bytes = int(params.max_shard_mb * 2**20)
    discovered = discover(params.landing, max_bytes, params.settle_seconds, return_state=True)
    if discovered.is_failed():
        return Failed(message=discovered.message)  # e.g. no such landing location: nothing to do
    found = discovered.result()
    store = open_store(params.workspace.store_url, read_only=True)
    if store is not None and (conflict := settings_conflict(store, params)):
        logger.error(conflict)
        return Failed(message=conflict)
    committed = {e.shard_hash for e in store.manifest} if store else set()
    known_ids = frozenset(store.read_metadata().example_ids) if store and store.n_rows else frozenset()
    known_providers = frozenset(store.provider_row_counts()) if store and store.n_rows else frozenset()
    held = quarantined_hashes(params.workspace.quarantine)

    plan = plan_night(found.shards, committed, held)
    for outcome in plan.outcomes:
        if outcome.status == "held":
            logger.warning("%s is still quarantined (same content as before); fix it to ingest it", outcome.name)
    summary = IngestSummary(list(plan.outcomes))
    summary.outcomes += [ShardOutcome(s.name, "", "waiting", detail=s.reason) for s in found.waiting]
    summary.outcomes += [ShardOutcome(s.name, "", "refused", detail=s.reason) for s in found.refused]

    validations = [validate.submit(ref, known_ids, max_bytes, known_providers) for ref in plan.new]
    validated = []
    for f in validations:
        if isinstance(result := f.result(), Skipped):
            summary.outcomes.append(ShardOutcome(result.name, "", "waiting", detail=result.reason))
        else:
            validated.append(result)
    bad = [v for v in validated if not v.ok]
    good, deferred = defer_clashes([v for v in validated if v.ok])
    summary.outcomes += deferred

    futures = [quarantine_shard.submit(v, params) for v in bad]
    logging = []
    if good:
        prepared = prepare_store(params, good, return_state=True)
        if prepared.is_failed():
            return Failed(message=f"{prepared.message}; nothing was committed", data=summary)
        store_url = prepared.result()
        # Fan out: one logging task per shard, each into a staging group of its own (one model copy
        # per device, shards round-robin over them), so loggers share nothing and may run anywhere.
        devices = params.model.devices or [params.model.device]
        for i, v in enumerate(good):
            on_device = params.model.model_copy(update={"device": devices[i % len(devices)]})
            logging.append(log_shard.submit(v, params.model_copy(update={"model": on_device}), store_url))
    wait(futures + logging)
    failures = [f.state.message or "failed" for f in futures + logging if f.state.is_failed()]
    summary.outcomes += [f.result() for f in futures if not f.state.is_failed()]
    logged = [f.result() for f in logging if not f.state.is_failed()]
    summary.outcomes += [o for o in logged if o.status != "staged"]
    staged = [o for o in logged if o.status == "staged"]  # in the plan's order: the manifest's
    if staged:
        # Then one committer publishes them all, in that order, under the store's lock or lease.
        published = commit_shards(staged, store_url, store.n_rows if store else 0, return_state=True)
        if published.is_failed():
            failures.append(published.message or "the commit failed")
            summary.outcomes += staged  # still staged: the next run commits them without logging
        else:
            summary.outcomes += published.result()

    create_table_artifact(
        key=f"ingest-summary-{params.workspace.key}",
        table=[{"shard": o.name, "status": o.status, "rows": o.rows, "detail": o.detail} for o in summary.outcomes],
        description=f"Ingestion from `{params.landing}` into `{params.workspace.store_url}`",
    )
    print(summary.summary())
    if failures:
        reasons = "; ".join(failures)
        return Failed(message=f"{len(failures)} shard task(s) failed ({reasons}); committed shards are kept",
                      data=summary)
    if bad:
        names = ", ".join(v.shard.name for v in bad)
        return Failed(message=f"quarantined {len(bad)} shard(s): {names}; the good shards were committed", data=summary)
    waiting = summary.count("waiting")
    later = f"; {waiting} waiting: modified in the last {params.settle_seconds:g} s (settle_seconds)" if waiting else ""
    return Completed(message=f"committed {summary.count('committed')} shard(s){later}", data=summary)
