"""A Report as text: JSON for machines, CSV for spreadsheets, Markdown for artifacts, one HTML page.

Every name, id and snippet is untrusted (providers send the data; queries are model outputs), so
each format escapes them in its own way.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable

from .build import plain
from .charts import MAX_PROVIDERS, distributions_chart, shares_chart
from .model import ExampleEvidence, QueryReport, Report

PROVENANCE_FIELDS = (
    "model_name",
    "model_fingerprint",
    "projection_fingerprint",
    "projection",
    "store_url",
    "store_version",
    "fisher_snapshot",
    "fisher_alpha",
    "fisher_estimator",
    "influence_mode",
    "query_set_sha256",
    "code_version",
    "created_at",
    "run_id",
)


def to_json(report: Report) -> str:
    return report.model_dump_json(indent=2)


def _num(x: float) -> str:
    return f"{x:.4g}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def provenance_items(report: Report) -> list[tuple[str, str]]:
    values = report.provenance.model_dump(mode="json")
    return [
        (key, json.dumps(values[key], sort_keys=True) if isinstance(values[key], dict) else str(values[key]))
        for key in PROVENANCE_FIELDS
    ]


def band_note(report: Report) -> str:
    """What the band covers and, honestly, what it does not."""
    band = report.band
    text = (
        f"Band: {band.low_percentile:g}-{band.high_percentile:g}th percentiles of the share, "
        f"{band.method} ({band.resamples} resamples, seed {band.seed})."
    )
    stability = report.stability
    if stability is None:
        return text + " It covers the choice of queries only, not the noise of the random projection."
    seeds = ", ".join(str(s) for s in stability.seeds)
    return (
        f"{text} Across projection seeds {seeds}, provider credits agree with Spearman "
        f"{stability.spearman_mean:.2f} on average (lowest {stability.spearman_min:.2f}); "
        f"the band does not include this. {stability.note}"
    ).strip()


PROVIDER_COLUMNS = (
    "rank", "provider", "share", "share_low", "share_high", "positive_credit", "total_credit", "examples"
)


def provider_rows(report: Report) -> list[dict]:
    """One row per provider (PROVIDER_COLUMNS), largest share first: providers.csv, a Prefect table."""
    return [
        {
            "rank": rank,
            "provider": p.provider,
            "share": p.share,
            "share_low": p.share_low,
            "share_high": p.share_high,
            "positive_credit": p.positive_credit,
            "total_credit": p.total_credit,
            "examples": p.examples,
        }
        for rank, p in enumerate(report.ranked_providers(), start=1)
    ]


def _provider_cells(row: dict) -> list[tuple[str, bool]]:
    """The provider table's cells (text, numeric?) for Markdown and HTML; the name still unescaped."""
    return [
        (str(row["rank"]), True),
        (row["provider"], False),
        (_pct(row["share"]), True),
        (f"{_pct(row['share_low'])} – {_pct(row['share_high'])}", True),
        (_num(row["positive_credit"]), True),
        (_num(row["total_credit"]), True),
        (str(row["examples"]), True),
    ]


def _query_facts(query: QueryReport, escape: Callable[[object], str]) -> list[str]:
    """The lines under a query's heading, names escaped for the format."""
    facts = []
    if query.top_providers:
        top = ", ".join(f"{escape(c.provider)} ({_num(c.credit)})" for c in query.top_providers)
        facts.append(f"Top providers: {top}")
    if query.score_quantiles:
        quantiles = ", ".join(f"{escape(k)} {_num(v)}" for k, v in query.score_quantiles.items())
        facts.append(f"Scores over all examples: {quantiles}")
    return facts


_PROVIDER_HEADER = ["Rank", "Provider", "Share", "Band", "Positive credit", "Total credit", "Examples"]


# ---- CSV

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: str) -> str:
    # Spreadsheets run a cell starting with one of these as a formula: keep names inert.
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv(rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([[_csv_text(v) if isinstance(v, str) else v for v in row] for row in rows])
    return out.getvalue()


def to_csv(report: Report) -> dict[str, str]:
    matrix = report.credit_matrix
    return {
        "providers.csv": _csv([list(PROVIDER_COLUMNS)] + [list(r.values()) for r in provider_rows(report)]),
        "credit_matrix.csv": _csv(
            [["query_id", *matrix.providers]] + [[q, *values] for q, values in zip(matrix.queries, matrix.values)]
        ),
    }


# ---- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!$])")


def _md(text: object) -> str:
    """Inert in any Markdown renderer: one line, every character that could start markup escaped."""
    return _MD_SPECIAL.sub(r"\\\1", plain(str(text)))


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _md_examples(examples: list[ExampleEvidence]) -> list[str]:
    if not examples:
        return ["_No examples._"]
    return _md_table(
        ["Example", "Provider", "Score", "Snippet"],
        [[_md(e.example_id), _md(e.provider), _num(e.score), _md(e.snippet)] for e in examples],
    )


def to_markdown(report: Report) -> str:
    lines = [f"# {_md(report.title)}", ""]
    if report.scope is not None:
        lines += [f"Export for provider **{_md(report.scope)}**: its own figures and examples only.", ""]
    lines += ["## Providers", ""]
    lines += _md_table(
        _PROVIDER_HEADER,
        [[cell if num else _md(cell) for cell, num in _provider_cells(r)] for r in provider_rows(report)],
    )
    lines += ["", _md(band_note(report)), "", "## Evidence by provider", ""]
    for p in report.ranked_providers():
        lines += [f"### {_md(p.provider)}", ""]
        for qe in p.top_examples_by_query:
            lines += [f"Query **{_md(qe.query_id)}**, credit {_num(qe.credit)}:", "", *_md_examples(qe.examples), ""]
    lines += ["## Queries", ""]
    for q in report.queries:
        lines += [f"### {_md(q.query_id)}", "", f"> {_md(q.snippet)}", ""]
        for fact in _query_facts(q, _md):
            lines += [fact, ""]
        lines += [*_md_examples(q.top_examples), ""]
    lines += ["## Provenance", ""]
    lines += _md_table(["Field", "Value"], [[key, _md(value)] for key, value in provenance_items(report)])
    return "\n".join(lines) + "\n"


# ---- HTML

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; max-width: 1100px; margin: 24px auto;
       padding: 0 16px; }
h1 { font-size: 24px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; } .snippet { color: #333; } code { font-size: 12px; word-break: break-all; }
figure { margin: 8px 0; } svg { max-width: 100%; height: auto; } h3 code { font-size: 15px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
"""
# No scripts, and nothing may be fetched: should escaping ever fail, the browser still runs nothing.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    """Cells are (already escaped html, numeric?)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, num in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_examples(examples: list[ExampleEvidence]) -> str:
    if not examples:
        return '<p class="note">No examples.</p>'
    return _html_table(
        ["Example", "Provider", "Score", "Snippet"],
        [
            [(f"<code>{_h(e.example_id)}</code>", False), (_h(e.provider), False), (_num(e.score), True),
             (f'<span class="snippet">{_h(e.snippet)}</span>', False)]
            for e in examples
        ],
    )


def _html_providers(report: Report) -> str:
    ranked = report.ranked_providers()
    note = (
        f'<p class="note">The chart shows the {MAX_PROVIDERS} largest of {len(ranked)} providers.</p>'
        if len(ranked) > MAX_PROVIDERS
        else ""
    )
    table = _html_table(
        _PROVIDER_HEADER,
        [[(cell if num else _h(cell), num) for cell, num in _provider_cells(r)] for r in provider_rows(report)],
    )
    return (
        f'<figure aria-label="provider shares">{shares_chart(ranked)}</figure>{note}{table}'
        f'<p class="note">{_h(band_note(report))}</p>'
    )


def _html_distributions(report: Report) -> str:
    if report.score_histogram is None:
        return ""
    order = [p.provider for p in report.ranked_providers()]
    return (
        "<h2>Score distributions</h2>"
        f'<figure aria-label="score distributions">{distributions_chart(report.score_histogram, order)}</figure>'
    )


def to_html(report: Report) -> str:
    evidence = "".join(
        f"<details><summary>{_h(p.provider)}</summary>"
        + "".join(
            f"<p>Query <code>{_h(qe.query_id)}</code>, credit {_num(qe.credit)}</p>{_html_examples(qe.examples)}"
            for qe in p.top_examples_by_query
        )
        + "</details>"
        for p in report.ranked_providers()
    )
    queries = "".join(
        f"<h3><code>{_h(q.query_id)}</code></h3><blockquote>{_h(q.snippet)}</blockquote>"
        + "".join(f"<p>{fact}</p>" for fact in _query_facts(q, _h))
        + _html_examples(q.top_examples)
        for q in report.queries
    )
    provenance = _html_table(
        ["Field", "Value"], [[(_h(k), False), (f"<code>{_h(v)}</code>", False)] for k, v in provenance_items(report)]
    )
    scope = (
        f'<p class="note">Export for provider <strong>{_h(report.scope)}</strong>: '
        "its own figures and examples only.</p>"
        if report.scope is not None
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_h(report.title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_h(report.title)}</h1>{scope}
<p class="note">Model {_h(report.provenance.model_name)}, {len(report.queries)} queries,
{len(report.providers)} providers; created {_h(report.provenance.created_at.isoformat())}.
Positive influence means the example lowered the query's loss.</p>
<h2>Providers</h2>
{_html_providers(report)}
{_html_distributions(report)}
<h2>Evidence by provider</h2>
{evidence}
<h2>Queries</h2>
{queries}
<h2>Provenance</h2>
{provenance}
<p class="note">The full query × provider credit matrix is in report.json and credit_matrix.csv.</p>
</body></html>
"""
