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
from .model import ExampleEvidence, Provenance, QueryReport, Report

PROVENANCE_FIELDS = tuple(Provenance.model_fields)


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


def figure_notes(report: Report) -> list[tuple[str, str]]:
    """(figure, what it means) for the figures of the provider table, stated on every page."""
    band = report.band
    n = len(report.queries)
    where_raw = "report.json, providers.csv" if report.scope is None else "this provider's .json export"
    return [
        ("Share of help", "the headline figure, in percent. On each query, every provider whose examples lowered "
         "the query's loss gets its fraction of all the lowering on that query; the share is that fraction "
         f"averaged over the {n} queries (any where no provider helped left out), each weighing the same "
         "however long it is. Shares add up to "
         f"100% over all {report.providers_total} providers."),
        ("Band", f"the {band.low_percentile:g}th to {band.high_percentile:g}th percentile of the share when the "
         f"queries are drawn again with replacement ({band.method}, {band.resamples} resamples, seed {band.seed}). "
         "It shows how much the share depends on which queries were asked and needs no gradient work; the noise "
         "of the projection is measured separately (Stability)."),
        ("Rank", "1 = largest share. Providers whose bands overlap are tied: \"2–4\" means the bands allow any "
         "rank from 2 to 4."),
        ("Net", "signed credit on each query over all providers' absolute credit on it, averaged over the queries "
         "(from -100% to +100%). The share counts only where a provider helped; net also subtracts where it "
         "hurt (raised the loss), so a provider can hold a fair share and a negative net: it helped much on a "
         "few queries and hurt on more."),
        ("Helped / hurt", "how many queries its credit was positive / negative on."),
        ("Raw credit", f"total_credit and positive_credit ({where_raw}) are plain sums of influence "
         "over the queries; their scale differs from query to query, so they rank providers differently "
         "from the share and are not shown here."),
    ]


def stability_note(report: Report) -> str:
    """The projection's noise next to the ranking, in the words a provider can check; an export
    names only its own provider's spread."""
    stability = report.stability
    if stability is None:
        return ("Stability: not measured for this projection, model and mode, so the ranks carry the band's "
                "uncertainty only (`dataworth stability` measures it; the nightly run does when it is due).")
    variants = ", ".join(str(v) for v in stability.variants)
    text = (
        f"Stability: redrawing the {stability.redrawn(plural=True)} ({variants}) gives provider credit that agrees at "
        f"Spearman {stability.spearman_mean:.2f} on average (lowest {stability.spearman_min:.2f}); shares moved by "
        f"a median of {stability.share_spread_median:.1%} across them"
    )
    if report.scope is not None and report.scope in stability.share_spread:
        text += f", this provider's by {stability.share_spread[report.scope]:.1%}"
    when = stability.measured_at.strftime("%Y-%m-%d %H:%M UTC")
    snapshot = f", Fisher snapshot {stability.snapshot}" if stability.snapshot is not None else ""
    if stability.snapshot is not None and stability.snapshot != report.provenance.fisher_snapshot:
        snapshot += f" (this report: {report.provenance.fisher_snapshot})"
    text += f". Measured {when} on {stability.examples} examples and {stability.queries} queries{snapshot}."
    if stability.spearman_mean < STABLE_SPEARMAN:
        text += (f" Below {STABLE_SPEARMAN}: a difference of a rank or two is within the projection's noise, "
                 "whatever the bands say.")
    return text


STABLE_SPEARMAN = 0.9  # below it, the reports say ranks are not reliable (docs/evaluation.md)

PROVIDER_COLUMNS = (
    "rank", "rank_low", "rank_high", "provider", "share", "share_low", "share_high", "net",
    "queries_helped", "queries_hurt", "positive_credit", "total_credit", "examples",
)


def provider_rows(report: Report) -> list[dict]:
    """One row per provider (PROVIDER_COLUMNS), by rank: providers.csv, a Prefect table."""
    return [
        {column: getattr(p, column) for column in PROVIDER_COLUMNS} for p in report.ranked_providers()
    ]


def _provider_cells(row: dict, queries: int) -> list[tuple[str, bool]]:
    """The provider table's cells (text, numeric?) for Markdown and HTML; the name still unescaped."""
    rank = str(row["rank"]) if row["rank_low"] == row["rank_high"] else f"{row['rank_low']}–{row['rank_high']}"
    return [
        (rank, True),
        (row["provider"], False),
        (_pct(row["share"]), True),
        (f"{_pct(row['share_low'])} – {_pct(row['share_high'])}", True),
        (f"{row['net']:+.1%}", True),
        (f"{row['queries_helped']} / {row['queries_hurt']} of {queries}", True),
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


def headline(report: Report) -> str:
    """The page's one headline figure, its unit stated: a provider's share of the help."""
    queries = len(report.queries)
    if report.scope is not None:
        p = report.provider(report.scope)
        return (
            f"{report.scope}: {_pct(p.share)} of the help (band {_pct(p.share_low)}–{_pct(p.share_high)}), "
            f"rank {p.rank_range} of {report.providers_total} providers; net {p.net:+.1%}; "
            f"helped on {p.queries_helped} and hurt on {p.queries_hurt} of {queries} queries."
        )
    ranked = report.ranked_providers()
    if not ranked:
        return "No providers."
    top = ranked[0]
    tied = sum(1 for p in ranked if p.rank_low == 1)
    lead = (f"{top.provider} leads with {_pct(top.share)}" if tied == 1
            else f"{tied} providers tie for rank 1 (largest: {top.provider}, {_pct(top.share)})")
    return (f"Headline figure: each provider's share of the help, in percent of all {report.providers_total} "
            f"providers' help, each of the {queries} queries weighing the same. {lead}.")


_PROVIDER_HEADER = ["Rank", "Provider", "Share of help", "Band", "Net", "Helped / hurt", "Examples"]


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
    lines += [f"**{_md(headline(report))}**", "", "## Providers", ""]
    queries = len(report.queries)
    lines += _md_table(
        _PROVIDER_HEADER,
        [[cell if num else _md(cell) for cell, num in _provider_cells(r, queries)] for r in provider_rows(report)],
    )
    lines += ["", _md(stability_note(report)), "", "What the figures mean:", ""]
    lines += [f"- **{term}**: {_md(text)}" for term, text in figure_notes(report)]
    lines += ["", "## Evidence by provider", ""]
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
.headline { font-size: 17px; background: #f3f5f8; border-left: 4px solid #3b6ea8; padding: 8px 12px; }
dl.figures dt { font-weight: 600; } dl.figures dd { margin: 0 0 6px 16px; color: #444; }
figure { margin: 8px 0; } svg { max-width: 100%; height: auto; } h3 code { font-size: 15px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
@media print {
  @page { size: A4; margin: 16mm 14mm; }
  body { font-size: 10.5pt; max-width: none; margin: 0; padding: 0; color: #000; }
  h2 { break-after: avoid; } h3 { break-after: avoid; }
  table, figure, blockquote, .headline { break-inside: avoid; }
  thead { display: table-header-group; }
  details > summary { list-style: none; } details > summary::-webkit-details-marker { display: none; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
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
    queries = len(report.queries)
    table = _html_table(
        _PROVIDER_HEADER,
        [[(cell if num else _h(cell), num) for cell, num in _provider_cells(r, queries)]
         for r in provider_rows(report)],
    )
    # One provider alone needs no chart of shares: its figures are the headline and the table.
    chart = f'<figure aria-label="provider shares">{shares_chart(ranked)}</figure>' if report.scope is None else ""
    notes = "".join(f"<dt>{_h(term)}</dt><dd>{_h(text)}</dd>" for term, text in figure_notes(report))
    return (
        f'{chart}{note}{table}<p class="note">{_h(stability_note(report))}</p>'
        f'<details open><summary>What the figures mean</summary><dl class="figures">{notes}</dl></details>'
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
    scoped = report.scope is not None
    evidence = "".join(
        f"<details open><summary>{_h(p.provider)}</summary>"
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
        f'<p class="note">For provider <strong>{_h(report.scope)}</strong>: its own figures and examples, '
        "and figures over all data that name no other provider.</p>"
        if scoped
        else ""
    )
    files = ("The full query × provider credit matrix is in report.json and credit_matrix.csv."
             if not scoped else "This provider's credit on every query is in its .json export.")
    query_note = ("Examples shown under each query are this provider's own among the best over all data."
                  if scoped else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_h(report.title)}{" — " + _h(report.scope) if scoped else ""}</title><style>{_CSS}</style></head>
<body>
<h1>{_h(report.title)}</h1>{scope}
<p class="headline">{_h(headline(report))}</p>
<p class="note">Model {_h(report.provenance.model_name)}, {len(report.queries)} queries,
{report.providers_total} providers; created {_h(report.provenance.created_at.isoformat())}.
Positive influence means the example lowered the query's loss.</p>
<h2>{"Figures" if scoped else "Providers"}</h2>
{_html_providers(report)}
{_html_distributions(report)}
<h2>Evidence{"" if scoped else " by provider"}</h2>
{evidence}
<h2>Queries</h2>
<p class="note">{query_note}</p>
{queries}
<h2>Provenance</h2>
{provenance}
<p class="note">{files}</p>
</body></html>
"""
