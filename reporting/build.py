"""From scoring results to a Report: pure functions, no I/O, so a run re-renders from its numbers alone."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

from valuation.credit import summarise

from .model import (
    Band,
    CreditMatrix,
    ExampleEvidence,
    Provenance,
    ProviderCredit,
    ProviderReport,
    QueryEvidence,
    QueryReport,
    Report,
    ScoreHistogram,
    Stability,
)


class ExampleRecord(NamedTuple):
    example_id: str
    provider: str
    text: str


@dataclass(frozen=True)
class TopK:
    """Best examples first, on the last axis: global row indices (-1 = empty slot) and their scores."""

    rows: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class ScoringResult:
    """What one scoring run produced, in the scoring engine's layout (see scoring.engine.ScanResult)."""

    query_ids: Sequence[str]
    query_texts: Sequence[str]
    provider_names: Sequence[str]  # the credit matrix's columns, in order
    examples_per_provider: Sequence[int]
    credit: np.ndarray  # queries x providers
    top: TopK  # queries x k, over all examples
    provider_top: TopK  # queries x providers x k, each provider's own best
    example: Callable[[int], ExampleRecord]  # row index -> its record; called only for shown rows
    provenance: Provenance
    query_score_quantiles: Sequence[Mapping[str, float]] | None = None


def plain(text: str) -> str:
    """One line: whitespace collapsed, control characters dropped.

    Names and texts are untrusted and end up in terminals and table cells, where a newline breaks
    the layout and an escape sequence can rewrite the screen.
    """
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in text).split())


def snippet(text: str, max_chars: int) -> str:
    """The plain text, cut on a word boundary with an ellipsis when longer than max_chars."""
    if max_chars < 2:
        raise ValueError("max_chars must leave room for a character and the ellipsis")
    flat = plain(text)
    if len(flat) <= max_chars:
        return flat
    cut = flat[: max_chars - 1]
    space = cut.rfind(" ")
    # Drop the word the cut went through, unless that would leave almost nothing (one long word).
    if flat[max_chars - 1] != " " and space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def score_histogram(
    scores: np.ndarray,
    provider_codes: np.ndarray,
    provider_names: Sequence[str],
    *,
    bins: int = 30,
    label: str = "example score, mean over queries",
) -> ScoreHistogram:
    """Per provider, counts of its examples' scores over bins shared by all providers."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    edges = np.histogram_bin_edges(scores, bins=bins)
    counts = {
        name: np.histogram(scores[provider_codes == p], bins=edges)[0].tolist()
        for p, name in enumerate(provider_names)
    }
    return ScoreHistogram(label=label, bin_edges=edges.tolist(), counts=counts)


def rank_ranges(share: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank, best rank, worst rank) per provider, 1 = largest share, ties in share by position.

    A provider is surely behind another only when their bands do not overlap; its best rank
    counts those surely ahead of it, its worst those not surely behind. Percentiles of a
    bootstrap need not bracket the point estimate, so each band is widened to include it.
    """
    low, high = np.minimum(low, share), np.maximum(high, share)
    order = np.lexsort((np.arange(len(share)), -share))
    rank = np.empty(len(share), dtype=int)
    rank[order] = np.arange(1, len(share) + 1)
    ahead = low[None, :] > high[:, None]  # [p, q]: q surely ahead of p
    best = 1 + ahead.sum(axis=1)
    worst = len(share) - ahead.sum(axis=0)  # not surely behind: all but those p is surely ahead of
    return rank, best, worst


def _check(result: ScoringResult) -> None:
    n_queries, n_providers = len(result.query_ids), len(result.provider_names)
    if result.credit.shape != (n_queries, n_providers):
        raise ValueError(f"credit is {result.credit.shape}, expected {(n_queries, n_providers)}")
    if len(result.query_texts) != n_queries or len(result.examples_per_provider) != n_providers:
        raise ValueError("query_texts / examples_per_provider do not match the credit matrix")
    if not np.isfinite(result.credit).all():
        raise ValueError("credit must be finite")
    if result.top.rows.shape[0] != n_queries or result.provider_top.rows.shape[:2] != (n_queries, n_providers):
        raise ValueError("top-k arrays do not match the credit matrix")


def _evidence(
    result: ScoringResult, top_k: int, snippet_chars: int
) -> Callable[[np.ndarray, np.ndarray], list[ExampleEvidence]]:
    record = cache(result.example)  # an example can be shown for several queries and providers

    def evidence(rows: np.ndarray, scores: np.ndarray) -> list[ExampleEvidence]:
        shown = [(int(r), float(s)) for r, s in zip(rows, scores) if r >= 0][:top_k]
        return [
            ExampleEvidence(
                example_id=record(r).example_id,
                provider=record(r).provider,
                score=s,
                snippet=snippet(record(r).text, snippet_chars),
            )
            for r, s in shown
        ]

    return evidence


_SUMMARY_FIELDS = ("provider", "share", "share_low", "share_high", "net", "queries_helped", "queries_hurt",
                   "total_credit", "positive_credit", "examples")


def build_report(
    result: ScoringResult,
    *,
    title: str = "Data contribution report",
    top_k: int = 5,
    top_queries: int = 3,
    snippet_chars: int = 160,
    bootstrap: int = 1000,
    seed: int = 0,
    score_histogram: ScoreHistogram | None = None,
    stability: Stability | None = None,
) -> Report:
    """The report: per provider its figures and its best examples on its top queries; per query
    its top providers and examples; the full credit matrix for machines."""
    _check(result)
    names = list(result.provider_names)
    credit = np.asarray(result.credit, dtype=np.float64)
    evidence = _evidence(result, top_k, snippet_chars)
    summaries = summarise(credit, names, result.examples_per_provider, bootstrap=bootstrap, seed=seed)
    rank, best, worst = rank_ranges(*(np.array([getattr(s, f) for s in summaries])
                                      for f in ("share", "share_low", "share_high")))

    providers = []
    for p, summary in enumerate(summaries):
        # Stable sort: ties keep query order, so a report is the same on every run.
        best_queries = np.argsort(-credit[:, p], kind="stable")[:top_queries]
        by_query = [
            QueryEvidence(
                query_id=result.query_ids[q],
                credit=float(credit[q, p]),
                examples=evidence(result.provider_top.rows[q, p], result.provider_top.scores[q, p]),
            )
            for q in best_queries
        ]
        if any(e.provider != summary.provider for qe in by_query for e in qe.examples):
            raise ValueError(f"provider_top rows of {summary.provider!r} belong to another provider")
        providers.append(
            ProviderReport(
                **{f: getattr(summary, f) for f in _SUMMARY_FIELDS},
                rank=int(rank[p]), rank_low=int(best[p]), rank_high=int(worst[p]),
                top_examples_by_query=by_query,
            )
        )

    quantiles = result.query_score_quantiles
    queries = [
        QueryReport(
            query_id=query_id,
            snippet=snippet(result.query_texts[q], snippet_chars),
            top_providers=[
                ProviderCredit(provider=names[p], credit=float(credit[q, p]))
                for p in np.argsort(-credit[q], kind="stable")[:top_k]
            ],
            top_examples=evidence(result.top.rows[q], result.top.scores[q]),
            score_quantiles=dict(quantiles[q]) if quantiles is not None else None,
        )
        for q, query_id in enumerate(result.query_ids)
    ]

    return Report(
        title=title,
        providers_total=len(names),
        provenance=result.provenance,
        band=Band(resamples=bootstrap, seed=seed),
        providers=providers,
        queries=queries,
        credit_matrix=CreditMatrix(queries=list(result.query_ids), providers=names, values=credit.tolist()),
        stability=stability,
        score_histogram=score_histogram,
    )
