"""Per-provider exports and writing a report's files to a directory.

A provider receives only its own examples and its own figures (its rank among all providers
included): other providers' names, examples and per-provider numbers stay in the full report.
Aggregates over all data (the query snippets, quantiles of all scores, the agreement and median
spread of the stability measurement) carry no one provider's information. Each export is a JSON
file and an HTML page to send, with a print stylesheet so it prints to PDF as it is.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from pathlib import Path

from scoring.results import Stability

from .model import CreditMatrix, Report, ScoreHistogram
from .render import to_csv, to_html, to_json, to_markdown


def _own_histogram(histogram: ScoreHistogram | None, provider: str) -> ScoreHistogram | None:
    counts = histogram.counts.get(provider) if histogram else None
    if histogram is None or not counts or not any(counts):
        return None
    # Trimmed to the provider's occupied bins: the shared edges span every provider's extremes,
    # which would tell it how far another provider's best (or worst) example scored.
    occupied = [i for i, c in enumerate(counts) if c]
    first, last = occupied[0], occupied[-1] + 1
    return ScoreHistogram(
        label=histogram.label,
        bin_edges=histogram.bin_edges[first : last + 1],
        counts={provider: counts[first:last]},
    )


def _own_stability(stability: Stability | None, provider: str) -> Stability | None:
    """Agreement over the whole matrix and the median spread are aggregates; the per-provider
    spreads are each provider's own."""
    if stability is None:
        return None
    own = {provider: stability.share_spread[provider]} if provider in stability.share_spread else {}
    return stability.model_copy(update={"share_spread": own})


def provider_export(report: Report, provider: str) -> Report:
    """The report as `provider` may see it: its own figures, examples and credit column only."""
    mine = report.provider(provider)
    column = report.credit_matrix.providers.index(provider)
    return Report(
        title=report.title,
        scope=provider,
        providers_total=report.providers_total,
        provenance=report.provenance,
        band=report.band,
        providers=[mine],
        queries=[
            q.model_copy(
                update={
                    "top_providers": [],
                    "top_examples": [e for e in q.top_examples if e.provider == provider],
                }
            )
            for q in report.queries
        ],
        credit_matrix=CreditMatrix(
            queries=report.credit_matrix.queries,
            providers=[provider],
            values=[[row[column]] for row in report.credit_matrix.values],
        ),
        stability=_own_stability(report.stability, provider),
        score_histogram=_own_histogram(report.score_histogram, provider),
    )


def export_filename(provider: str, suffix: str = ".json") -> str:
    """`<provider><suffix>`, refusing any name that is not one plain file name.

    Names come from the providers' own data: a "../" or an absolute path would write elsewhere.
    """
    if (
        not provider
        or provider.startswith(".")  # ".", ".." and hidden files
        or "/" in provider
        or "\\" in provider
        or any(unicodedata.category(c).startswith("C") for c in provider)  # NUL, controls, bidi overrides
        or len(provider.encode()) > 200
    ):
        raise ValueError(f"provider name {provider!r} cannot be used as a file name")
    return f"{provider}{suffix}"


def _export_paths(directory: Path, providers: list[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    seen: dict[str, str] = {}
    root = (directory / "providers").resolve()
    for name in providers:
        # Names that differ only in case or Unicode form are one file on macOS and Windows: one
        # provider's export would overwrite, and be sent as, another's.
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            raise ValueError(f"providers {seen[key]!r} and {name!r} would share one export file")
        seen[key] = name
        path = root / export_filename(name)
        if path.parent != root:
            raise ValueError(f"provider name {name!r} escapes the export directory")
        paths[name] = path
    return paths


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from whoever serves it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export_files(report: Report, name: str, path: Path) -> dict[str, tuple[Path, str]]:
    export = provider_export(report, name)
    return {
        f"provider:{name}": (path, to_json(export)),
        f"provider-html:{name}": (path.with_name(export_filename(name, ".html")), to_html(export)),
    }


def write_report(report: Report, directory: str | os.PathLike) -> dict[str, Path]:
    """Write every format and every provider's export; returns kind -> path.

    Kinds: json, markdown, html, providers_csv, credit_matrix_csv, `provider:<name>` (its export as
    JSON) and `provider-html:<name>` (the page to send it: printable, its own figures only). All
    names are checked before anything is written, and report.json is written last, so its presence
    means the directory is complete.
    """
    directory = Path(directory).resolve()
    exports = _export_paths(directory, [p.provider for p in report.providers])
    csvs = to_csv(report)
    files = {
        "markdown": (directory / "report.md", to_markdown(report)),
        "html": (directory / "report.html", to_html(report)),
        "providers_csv": (directory / "providers.csv", csvs["providers.csv"]),
        "credit_matrix_csv": (directory / "credit_matrix.csv", csvs["credit_matrix.csv"]),
        **{kind: file for name, path in exports.items() for kind, file in _export_files(report, name, path).items()},
        "json": (directory / "report.json", to_json(report)),
    }
    (directory / "providers").mkdir(parents=True, exist_ok=True)
    for path, text in files.values():
        _write_atomic(path, text)
    return {kind: path for kind, (path, _) in files.items()}
