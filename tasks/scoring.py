"""Prefect tasks of scoring: value the standing queries and publish the provider reports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext, get_run_context

from reporting.build import ExampleRecord, ScoringResult, TopK, build_report, score_histogram
from reporting.diff import load_report
from reporting.export import write_report
from reporting.model import Provenance, Report
from reporting.provenance import code_version, location_name, store_version
from reporting.render import provider_rows, to_markdown
from scoring.queries import QuerySet, ScoreOptions, StoreScores, greedy_generator, score_store
from scoring.results import Stability
from scoring.stability import stability_key
from storage import GradientStore
from valuation.data import encoding_settings

from .calibration import calibration_provenance
from .dask_access import check_dask_address
from .failures import fails_in_one_line
from .models import LoadedModel, load_for_logging
from .params import SAMPLE_MODEL, ScoreParams, Workspace
from .progress import DaskProgress
from .stability import saved_stability
from .store_settings import query_encoding_conflict, store_special_tokens

# Base URL at which a web server serves the workspace's reports directory (`dataworth serve` sets it
# for the runs it starts): the UI links the HTML report there, since browsers do not open file://
# links from a web page.
REPORTS_URL = "DATAWORTH_REPORTS_URL"


@dataclass(frozen=True)
class ScoreOutcome:
    report_dir: str
    files: dict[str, str]
    top_provider: str
    share: float

    def summary(self) -> str:
        return (f"report: {self.files['html']}\n"
                f"        {self.files['markdown']}\n"
                f"largest share of the help: {self.top_provider} ({self.share:.1%})")


def precision_name(loaded: LoadedModel) -> str:
    dtype = loaded.autocast_dtype or next(loaded.model.parameters()).dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _run_id() -> str | None:
    try:
        context = get_run_context()
    except Exception:  # outside a flow run there is no id to record
        return None
    return str(context.task_run.flow_run_id) if isinstance(context, TaskRunContext) else None


def matching_stability(params: ScoreParams, store: GradientStore) -> Stability | None:
    """The workspace's stability measurement, if it was made for this projection, model, mode and
    special tokens."""
    key = stability_key(store.spec.config, store.model_fingerprint["fingerprint"], params.mode,
                        store_special_tokens(store))
    return saved_stability(params.workspace.stability, key)


def assemble_report(store: GradientStore, scores: StoreScores, queries: QuerySet, params: ScoreParams,
                    loaded: LoadedModel) -> Report:
    metadata = store.read_metadata()
    scan = scores.scan

    def example(row: int) -> ExampleRecord:
        snippet = metadata.snippets[row] if metadata.snippets is not None else ""
        return ExampleRecord(metadata.example_ids[row], metadata.providers[row], snippet)

    counts = store.provider_row_counts()
    fisher = scores.snapshot.fisher
    options = loaded.logging_options(params.model)
    name = params.model.name_or_path
    provenance = Provenance(
        model_name=name if name == SAMPLE_MODEL else location_name(name),
        model_fingerprint=store.model_fingerprint["fingerprint"],
        projection_fingerprint=store.spec.fingerprint,
        projection=store.spec.config.model_dump(),
        store=location_name(store.url),
        store_version=store_version(store.n_rows, [e.shard_hash for e in store.manifest]),
        storage_precision=str(store.codec.precision),
        projection_calibration=calibration_provenance(store.attributes.calibration),
        fisher_snapshot=scores.snapshot.version,
        fisher={**store.attributes.fisher, "damping": fisher.alpha},
        influence_mode=params.mode,
        max_length=options.max_length,
        precision=precision_name(loaded),
        tokenization=encoding_settings(options.encoder(loaded.tokenizer)),
        query_set_sha256=queries.sha256,
        code_version=code_version(),
        created_at=datetime.now(UTC),
        run_id=_run_id(),
    )
    result = ScoringResult(
        query_ids=[q.id for q in queries.examples],
        query_texts=[q.display_text for q in queries.examples],
        provider_names=scores.provider_names,
        examples_per_provider=[counts[n] for n in scores.provider_names],
        credit=scores.credit,
        top=TopK(scan.top_rows, scan.top_scores),
        provider_top=TopK(scan.provider_top_rows, scan.provider_top_scores),
        example=example,
        provenance=provenance,
    )
    histogram = score_histogram(scan.row_mean_scores, scores.provider_codes, scores.provider_names)
    return build_report(result, top_k=params.top_k, score_histogram=histogram,
                        stability=matching_stability(params, store))


def html_link(html: Path, workspace: Workspace) -> str | None:
    """The HTML report's address under DATAWORTH_REPORTS_URL, or None when nothing serves the reports."""
    base = os.environ.get(REPORTS_URL, "").rstrip("/")
    if not base:
        return None
    return f"{base}/{quote(html.resolve().relative_to(workspace.reports).as_posix())}"


def publish_artifacts(report: Report, files: dict[str, Path], workspace: Workspace) -> None:
    """The report as artifacts of the current run, keyed by workspace so two workspaces never mix."""
    html, key = files["html"], workspace.key
    link = html_link(html, workspace)
    where = (f"HTML report: [{link}]({link})" if link else
             f"HTML report: `{html}` on the host that ran the flow (browsers do not open file links from the UI; "
             "`dataworth serve` serves the reports, see docs/operations.md)")
    create_table_artifact(
        key=f"provider-credit-{key}",
        # The pages' columns and order (rank ranges, share of the help, net), not other figures to reconcile.
        table=provider_rows(report),
        description=f"Per-provider share of the help ({report.provenance.influence_mode}; docs/operations.md, "
                    f"reading a report) in `{workspace.path}`. {where}",
    )
    create_markdown_artifact(key=f"valuation-report-{key}", markdown=f"{where}\n\n{to_markdown(report)}",
                             description=f"The contribution report of `{workspace.path}`")
    create_link_artifact(key=f"valuation-report-html-{key}", link=link or html.as_uri(),
                         link_text="HTML report" if link else f"HTML report (a file on the flow's host: {html})")


def republish_artifacts(outcome: ScoreOutcome, workspace: Workspace) -> None:
    """A scored report's artifacts again, on the current run (the parent flow of `score`)."""
    files = {kind: Path(path) for kind, path in outcome.files.items()}
    publish_artifacts(load_report(files["json"]), files, workspace)


@task(name="score-and-report")
@fails_in_one_line
def score_and_report(params: ScoreParams) -> ScoreOutcome:
    logger = get_run_logger()
    check_dask_address(params.dask_address)  # before anything connects to it
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    loaded = load_for_logging(params.model, params.workspace, store.spec.config, store.projections())
    store.check_compatible(loaded.logra.spec, loaded.fingerprint)
    if conflict := query_encoding_conflict(store, params.model, params.workspace):
        raise ValueError(conflict)
    logging = loaded.logging_options(params.model)
    generate = None
    if params.generate_max_new_tokens:
        generate = greedy_generator(loaded.model, logging.encoder(loaded.tokenizer), params.generate_max_new_tokens)
    queries = QuerySet.load(params.queries, generate)
    with loaded.lock:
        options = ScoreOptions(
            mode=params.mode, snapshot_version=params.snapshot, top_k=params.top_k, task_rows=params.task_rows,
            dask_address=params.dask_address, logging=logging,
        )
        logger.info("scoring %d queries against %d rows", len(queries.examples), store.n_rows)
        with DaskProgress(logger, f"scan of {store.n_rows} rows"):
            scores = score_store(store, loaded.logra, loaded.tokenizer, queries, options)
    report = assemble_report(store, scores, queries, params, loaded)
    stamp = report.provenance.created_at.strftime("%Y%m%dT%H%M%SZ")
    directory = params.workspace.reports / f"{stamp}-{queries.sha256[:8]}"
    files = write_report(report, directory)
    publish_artifacts(report, files, params.workspace)
    best = max(report.providers, key=lambda p: p.share)
    logger.info("scored %d queries x %d rows; report in %s", len(queries.examples), store.n_rows, directory)
    return ScoreOutcome(str(directory), {k: str(v) for k, v in files.items()}, best.provider, best.share)
