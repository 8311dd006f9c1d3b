"""Prefect tasks of ingestion: discover, validate, quarantine, log shards into staging (in
parallel, on any machine), and commit them (one committer)."""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from sample import SHARDS_DIR
from storage import CommitResult, GradientStore, ModelMismatchError, StoreError, StoreExistsError, StoreNotFoundError
from storage.sink import ShardSink
from storage.staging import staged_rows
from valuation import ProjectionMismatchError
from valuation.data import providers_of
from valuation.pipeline import iter_logged
from valuation.sink import LogSession

from .calibration import calibration_sample
from .failures import fails_in_one_line, is_transient, one_line, retry_if_transient
from .models import encoding_identity, fit_pca, lm_fisher, load_for_logging
from .params import IngestParams
from .planning import ShardOutcome
from .progress import RunProgress
from .shards import (
    Landing,
    ShardChanged,
    ShardRef,
    Skipped,
    ValidatedShard,
    discover_shards,
    quarantine,
    validate_shard,
)

# `prefect concurrency-limit create dataworth-committer 1` queues the commits in Prefect as well.
COMMITTER_TAG = "dataworth-committer"


class ShardLoggingError(ValueError):
    """A shard that cannot be logged as things are: names it, what went wrong and what to change."""

    def __init__(self, shard: str, err: Exception):
        super().__init__(f"{shard}: {one_line(err)}{_what_to_change(err)}")


def _what_to_change(err: Exception) -> str:
    if isinstance(err, ModelMismatchError | ProjectionMismatchError):
        return "; log it with the store's model and projection, or start a new workspace for this model"
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return "; lower model.batch_size (or model.max_length)"
    if "no token to compute a loss on" in str(err):
        return "; raise model.max_length, or shorten that prompt"
    return ""


def open_store(url: str, read_only: bool = False) -> GradientStore | None:
    try:
        return GradientStore.open(url, read_only=read_only)
    except StoreNotFoundError:
        return None


@task(name="discover-shards", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)
@fails_in_one_line
def discover(landing: str, max_bytes: int, settle_seconds: float) -> Landing:
    if Path(landing).resolve() == SHARDS_DIR:  # shipped with the package: never half-uploaded, however new
        settle_seconds = 0.0
    found = discover_shards(landing, max_bytes=max_bytes, settle_seconds=settle_seconds)
    logger = get_run_logger()
    logger.info("found %d shard(s) in %s", len(found.shards), landing)
    for skipped in found.waiting:
        logger.info("%s waits for a later run: %s", skipped.name, skipped.reason)
    for skipped in found.refused:
        logger.warning("%s is not read: %s", skipped.name, skipped.reason)
    return found


@task(name="validate-shard", task_run_name="validate-{ref.name}")
def validate(ref: ShardRef, known_ids: frozenset[str], max_bytes: int,
             known_providers: frozenset[str] = frozenset()) -> ValidatedShard | Skipped:
    logger = get_run_logger()
    try:
        result = validate_shard(ref, known_ids, max_bytes, known_providers)
    except (ShardChanged, FileNotFoundError):
        logger.info("%s changed while it was read: it may still be uploading; it waits for a later run", ref.name)
        return Skipped(ref.name, "changed (or went) while it was read: it may still be uploading")
    if result.ok:
        logger.info("%s: %d valid examples", ref.name, len(result.examples))
    else:
        logger.error("%s: %d problem(s), first: line %d, %s: %s", ref.name, len(result.problems),
                     result.problems[0].line, result.problems[0].field, result.problems[0].reason)
    return result


@task(name="quarantine-shard", task_run_name="quarantine-{validated.shard.name}")
def quarantine_shard(validated: ValidatedShard, params: IngestParams) -> ShardOutcome:
    report = quarantine(validated, params.workspace.quarantine)
    create_table_artifact(
        key=f"quarantine-{validated.shard.sha256[:12]}",
        table=[{"line": p.line, "field": p.field, "reason": p.reason} for p in validated.problems],
        description=f"Shard **{validated.shard.name}** was quarantined (`{report}`): each bad line below. "
        "Fix the shard and drop the corrected file into the landing location.",
    )
    return ShardOutcome(validated.shard.name, validated.shard.sha256, "quarantined",
                        detail=f"{len(validated.problems)} problem(s); report {report}")


@task(name="prepare-store")
@fails_in_one_line
def prepare_store(params: IngestParams, shards: list[ValidatedShard]) -> str:
    """Open the store, or create it under this model and projection; returns its URL.

    A PCA projection (the default) is fitted on a calibration sample of `shards` (the first
    night's valid shards; tasks/calibration.py) and saved with the store, with the record of
    that sample, so every later logger and query uses exactly the same matrices.
    """
    store = open_store(params.workspace.store_url)
    if store is None:
        encoding = encoding_identity(params.model, params.workspace)  # before the PCA pass: a bad setting fails fast
        projections, record = None, None
        if params.projection.init == "pca":
            examples, record = calibration_sample(shards, params.calibration_examples)
            try:
                projections = fit_pca(params, examples)
            except Exception as err:
                if is_transient(err):
                    raise
                # The PCA pass meets the night's examples before any shard's logging task does.
                names = ", ".join(s.name for s in record.shards)
                raise ShardLoggingError(f"PCA calibration on {names}", err) from err
            get_run_logger().info("PCA projection fitted on %d examples of %d shard(s) (sha256 %s)",
                                  record.examples, len(record.shards), record.sha256[:12])
        loaded = load_for_logging(params.model, params.workspace, params.projection, projections)
        try:
            store = GradientStore.create(params.workspace.store_url, loaded.logra.spec, loaded.fingerprint,
                                         projections=projections, fisher=lm_fisher(params.fisher),
                                         calibration=record.model_dump() if record else None, encoding=encoding)
        except StoreExistsError:  # another run created it meanwhile: its projection rules
            store = GradientStore.open(params.workspace.store_url)
    return store.url


def staging_worker_id() -> str:
    """A staging area of its own for each logging task: unique across machines, processes and runs."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-._")[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# No result cache: a cache kept beside the store (in PREFECT_HOME) outlives a restore from backup
# and would answer "committed" for a shard the restored store lacks. The manifest alone says.
@task(
    name="log-shard",
    task_run_name="log-{validated.shard.name}",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
@fails_in_one_line
def log_shard(validated: ValidatedShard, params: IngestParams, store_url: str) -> ShardOutcome:
    """Log the shard's LoGra gradients into a staging group of this task's own ("staged").

    It writes nothing any other writer touches (no shared chunk, resize or attribute), so any
    number of these run at once, on any machine that reaches the store; `commit_shards`
    publishes them. A shard the manifest holds, or that a staging area holds ready (an earlier
    run logged it and its commit did not happen), is not logged again.
    """
    ref = validated.shard
    gradient_store = GradientStore.open(store_url)
    if gradient_store.is_committed(ref.sha256):
        return ShardOutcome(ref.name, ref.sha256, "already_committed")
    if (rows := staged_rows(gradient_store.root(), ref.sha256)) is not None:
        return ShardOutcome(ref.name, ref.sha256, "staged", rows)
    examples = validated.examples
    sink = ShardSink(gradient_store, ref.sha256, name=ref.name, providers=dict(zip(
        [e.id for e in examples], providers_of(examples))), snippets={e.id: e.display_text for e in examples},
        worker_id=staging_worker_id())
    try:
        loaded = load_for_logging(params.model, params.workspace, gradient_store.spec.config,
                                  gradient_store.projections())
        # Before the compute, not after it: rows of another model would be refused at commit.
        gradient_store.check_compatible(loaded.logra.spec, loaded.fingerprint)
        with loaded.lock:
            # Rows go to the shard's staging group a chunk at a time as they are logged: memory
            # stays at a few chunks whatever the shard's size.
            fisher = lm_fisher(params.fisher)
            sink.open(LogSession(loaded.logra.spec, loaded.fingerprint, loaded.logra.projections(), fisher))
            progress, done = RunProgress(get_run_logger(), f"log {ref.name}", len(examples), "examples"), 0
            for logged in iter_logged(loaded.logra, loaded.tokenizer, examples,
                                      loaded.logging_options(params.model), fisher=fisher,
                                      progress=f"log {ref.name}"):
                sink.write(logged)
                done += logged.rows.shape[0]
                progress(done)  # in the run's log: the terminal bar is not in the UI
            sink.close()
    except Exception as err:
        sink.discard()  # a killed process leaves its group to the committer's stale sweep instead
        if is_transient(err):
            raise
        raise ShardLoggingError(ref.name, err) from err
    rows = sink.result.rows if sink.result else 0  # close() finished the group
    get_run_logger().info("%s: %d rows staged by %s", ref.name, rows, sink.worker_id)
    return ShardOutcome(ref.name, ref.sha256, "staged", rows)


@task(
    name="commit-shards",
    tags=[COMMITTER_TAG],
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
@fails_in_one_line
def commit_shards(staged: list[ShardOutcome], store_url: str, ids_checked_below: int = 0) -> list[ShardOutcome]:
    """The one committer: publish the staged shards in the order given (the night's plan, so the
    manifest's order does not depend on which logger finished first), in one manifest write,
    holding the store's committer lock (a lease on S3).

    Validation checked the ids against the store's first `ids_checked_below` rows; the commit
    checks them against the rest, so a shard another run committed meanwhile with the same ids
    is deferred. Safe to retry: committed shards are not written twice.
    """
    logger = get_run_logger()
    store = GradientStore.open(store_url)
    results: dict[str, CommitResult] = {}
    for r in store.commit_staged([o.sha256 for o in staged], ids_checked_below=ids_checked_below):
        results.setdefault(r.shard_hash, r)  # a shard staged twice: the first says what happened
    outcomes = []
    for o in staged:
        result = results.get(o.sha256)
        if result is None:  # not staged any more: another run committed the same content first
            if not store.is_committed(o.sha256):
                raise StoreError(f"{o.name}: its staged rows went before they were committed; run ingest again")
            outcomes.append(ShardOutcome(o.name, o.sha256, "already_committed"))
        elif result.status == "refused":
            # Validation will name the lines next run, when it sees the ids committed.
            logger.warning("%s is deferred: %s", o.name, result.reason)
            outcomes.append(ShardOutcome(o.name, o.sha256, "deferred", detail=result.reason))
        else:
            logger.info("%s: %s rows [%d, %d)", o.name, result.status, result.row_start, result.row_stop)
            outcomes.append(ShardOutcome(o.name, o.sha256, result.status, result.rows))
    return outcomes
