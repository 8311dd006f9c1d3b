"""Score a query set against a gradient store: query gradients, preconditioning, the Dask scan."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
from pydantic import ValidationError

from storage import GradientStore
from storage.snapshots import StoredSnapshot
from valuation.config import InfluenceMode
from valuation.data import Encoder, Example, parse_jsonl
from valuation.influence import PreconditionedQueries, safe_rsqrt
from valuation.logra import LoGra
from valuation.pipeline import LoggingOptions, log_examples

from .engine import TASK_ROWS, ScanOptions, ScanResult, scan_scores

Generator = Callable[[str], str]


@dataclass(frozen=True)
class QuerySet:
    path: str
    sha256: str  # of the outputs valued, generated responses included
    examples: list[Example]

    @classmethod
    def load(cls, url: str, generate: Generator | None = None) -> QuerySet:
        """Queries of a JSONL file (local path or fsspec URL); a line with a prompt and no response
        gets one from `generate`. Any bad line raises a ValueError naming the file and the line."""
        try:
            with fsspec.open(url, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            raise ValueError(f"queries file {url!r} does not exist") from None
        examples: list[Example] = []
        first_line: dict[str, int] = {}
        for line in parse_jsonl(data):
            where = f"{url}, line {line.number}"
            if line.problem:
                raise ValueError(f"{where}: {line.problem}")
            record = line.value
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if "prompt" in record and "response" not in record:
                if generate is None:
                    raise ValueError(f"{where}: a prompt without a response; "
                                     "give a response or let the model generate one (generate_max_new_tokens)")
                record = {**record, "response": generate(record["prompt"])}
            try:
                example = Example(**record)
            except ValidationError as err:
                raise ValueError(f"{where}: {err.errors()[0]['msg']}") from None
            if example.id in first_line:
                raise ValueError(f"{where}: query id {example.id!r} repeats line {first_line[example.id]}")
            first_line[example.id] = line.number
            examples.append(example)
        if not examples:
            raise ValueError(f"{url}: no queries")
        digest = hashlib.sha256("\n".join(e.model_dump_json() for e in examples).encode()).hexdigest()
        return cls(str(url), digest, examples)


def greedy_generator(model, encoder: Encoder, max_new_tokens: int) -> Generator:
    """The model's own greedy continuation of a prompt, tokenised as valuation tokenises a
    prompt (`encoder`'s BOS): the output whose sources we then value."""
    device = next(model.parameters()).device
    tokenizer = encoder.tokenizer

    def generate(prompt: str) -> str:
        input_ids = torch.tensor([encoder.prompt(prompt)], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)

    return generate


@dataclass
class StoreScores:
    scan: ScanResult
    credit: np.ndarray  # queries x providers, from the stored provider sums (float64)
    provider_names: list[str]
    provider_codes: np.ndarray
    snapshot: StoredSnapshot
    query_losses: np.ndarray


def scoring_queries(rows: torch.Tensor, snapshot: StoredSnapshot, mode: InfluenceMode) -> np.ndarray:
    """Preconditioned query rows; for cosine also divided by the query's own norm in H^-1."""
    pre = PreconditionedQueries.build(rows, snapshot.fisher)
    out = pre.rows
    if mode == "cosine":
        out = out * safe_rsqrt(pre.self_influence)[:, None]
    return out.numpy()


def row_scale(store: GradientStore, snapshot: StoredSnapshot, mode: InfluenceMode) -> np.ndarray | None:
    """1 / sqrt(self-influence) per row for relatif and cosine; None for dot."""
    if mode == "dot":
        return None
    values = store.self_influence(snapshot.version)
    if values.shape != (store.n_rows,):
        raise ValueError(
            f"snapshot {snapshot.version} has self-influence for {values.shape[0]} of {store.n_rows} rows; "
            "run `dataworth run refresh-fisher` to complete it"
        )
    return safe_rsqrt(torch.from_numpy(values)).numpy()


def provider_sum_matrix(store: GradientStore, snapshot: StoredSnapshot, mode: InfluenceMode,
                        names: list[str]) -> np.ndarray:
    """providers x K: sums of raw rows (dot) or of rows / sqrt(self-influence) (relatif, cosine)."""
    sums = store.provider_sums() if mode == "dot" else store.provider_normalized_sums(snapshot.version)
    return np.stack([sums[name] for name in names])


def check_credit(from_sums: np.ndarray, from_scan: np.ndarray) -> None:
    """The two routes to provider credit must agree (the scan's float32 scores vs float64 sums)."""
    scale = max(float(np.abs(from_scan).max(initial=0.0)), 1e-30)
    worst = float(np.abs(from_sums - from_scan).max(initial=0.0)) / scale
    if worst > 1e-4:
        raise RuntimeError(
            f"provider credit from stored sums differs from the row scan by {worst:.1e} (relative): "
            "the store's aggregates disagree with its rows; run `dataworth store verify`"
        )


@dataclass(frozen=True)
class ScoreOptions:
    """What a scoring pass computes and where it runs."""

    mode: InfluenceMode = "dot"
    snapshot_version: int | None = None  # latest when None
    top_k: int = 5
    task_rows: int = TASK_ROWS  # rows per Dask task, in whole store chunks
    dask_address: str | None = None  # a distributed scheduler; local threads when None
    logging: LoggingOptions = LoggingOptions()


def score_store(
    store: GradientStore, logra: LoGra, tokenizer, queries: QuerySet, options: ScoreOptions = ScoreOptions()
) -> StoreScores:
    """Every query against every committed row, in one Dask pass over the store's chunks."""
    if not store.snapshot_versions():
        raise ValueError(f"{store.url} has no Fisher snapshot yet; run `dataworth run refresh-fisher`")
    mode = options.mode
    snapshot = store.load_snapshot(options.snapshot_version)
    logged = log_examples(logra, tokenizer, queries.examples, options.logging)
    query_rows = scoring_queries(torch.from_numpy(logged.rows), snapshot, mode)
    scale = row_scale(store, snapshot, mode)
    codes, names = store.provider_codes()
    scan_options = ScanOptions(top_k=options.top_k, task_rows=options.task_rows,
                               scheduler=None if options.dask_address else "threads")
    client: contextlib.AbstractContextManager = contextlib.nullcontext()
    if options.dask_address:
        from distributed import Client

        client = Client(options.dask_address)
    with client:
        scan = scan_scores(store.committed_rows(), codes, len(names), query_rows, scale, scan_options)
    credit = query_rows.astype(np.float64) @ provider_sum_matrix(store, snapshot, mode, names).T
    check_credit(credit, scan.credit)
    return StoreScores(scan, credit, names, codes, snapshot, logged.losses)
