"""The change per provider between two reports: the night-over-night view (`dataworth report diff`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import computed_field

from .build import plain
from .model import SCHEMA_VERSION, Report, _Model

# Always differ between runs; shown in the header rather than listed as changes.
_RUN_FIELDS = {"created_at", "run_id"}


class ProviderChange(_Model):
    provider: str
    status: Literal["kept", "new", "gone"]
    share_before: float | None = None
    share_after: float | None = None
    positive_credit_before: float | None = None
    positive_credit_after: float | None = None
    total_credit_before: float | None = None
    total_credit_after: float | None = None
    rank_before: int | None = None
    rank_after: int | None = None

    @computed_field  # type: ignore[prop-decorator]  # in the JSON too, for scripts
    @property
    def share_delta(self) -> float | None:
        return _delta(self.share_before, self.share_after)


class ProvenanceChange(_Model):
    field: str
    before: str
    after: str


class ReportDiff(_Model):
    before: str  # when and which run, for the header
    after: str
    provenance: list[ProvenanceChange]
    providers: list[ProviderChange]  # largest share change first; new and gone ones count in full
    warnings: list[str]  # why the two are not like for like (other queries, other providers)


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def load_report(path: str | os.PathLike) -> Report:
    """A report from its report.json or from the directory write_report wrote it to."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    text = path.read_text(encoding="utf-8")
    try:
        version = json.loads(text).get("schema_version", 1)
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{path} is not a report.json") from None
    if version != SCHEMA_VERSION:  # before validating: its fields differ, and the error should say why
        raise ValueError(f"{path} is a schema-{version} report; this version reads schema {SCHEMA_VERSION} "
                         "(figures changed meaning: compare reports made by the same version)")
    return Report.model_validate_json(text)


def _run_label(report: Report) -> str:
    p = report.provenance
    return p.created_at.isoformat() + (f"  run {p.run_id}" if p.run_id else "")


def diff_reports(before: Report, after: Report) -> ReportDiff:
    old = {p.provider: (rank, p) for rank, p in enumerate(before.ranked_providers(), start=1)}
    new = {p.provider: (rank, p) for rank, p in enumerate(after.ranked_providers(), start=1)}
    changes = []
    for name in sorted(old.keys() | new.keys()):
        fields: dict[str, Any] = {}
        for side, ranked in (("before", old), ("after", new)):
            if name in ranked:
                rank, p = ranked[name]
                fields |= {
                    f"share_{side}": p.share,
                    f"positive_credit_{side}": p.positive_credit,
                    f"total_credit_{side}": p.total_credit,
                    f"rank_{side}": rank,
                }
        status: Literal["kept", "new", "gone"] = (
            "kept" if name in old and name in new else "new" if name in new else "gone")
        changes.append(ProviderChange(provider=name, status=status, **fields))
    changes.sort(key=lambda c: -abs((c.share_after or 0.0) - (c.share_before or 0.0)))  # stable: ties by name

    a, b = before.provenance.model_dump(mode="json"), after.provenance.model_dump(mode="json")
    provenance = [
        ProvenanceChange(field=key, before=str(a[key]), after=str(b[key]))
        for key in a
        if key not in _RUN_FIELDS and a[key] != b[key]
    ]
    return ReportDiff(before=_run_label(before), after=_run_label(after), provenance=provenance, providers=changes,
                      warnings=_warnings(before, after, changes))


def _warnings(before: Report, after: Report, changes: list[ProviderChange]) -> list[str]:
    """Shares add up to 100% over a report's queries and providers: when either set differs, part of
    every share's change is that difference, not a change in the data's worth."""
    warnings = []
    old, new = set(before.credit_matrix.queries), set(after.credit_matrix.queries)
    if before.provenance.query_set_sha256 != after.provenance.query_set_sha256 or old != new:
        warnings.append(f"the reports cover different query sets ({len(old & new)} queries in both, "
                        f"{len(new - old)} only after, {len(old - new)} only before): "
                        "shares are over different queries")
    added = [c.provider for c in changes if c.status == "new"]
    gone = [c.provider for c in changes if c.status == "gone"]
    if added or gone:
        warnings.append(f"the reports cover different providers ({len(added)} new, {len(gone)} gone): every share "
                        "moves when providers join or leave")
    if before.scope != after.scope:
        warnings.append("one report is a provider's export and the other is not (or another provider's): "
                        "they cover different providers")
    return warnings


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _signed(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, "+" + fmt)


def format_diff(diff: ReportDiff) -> str:
    """A plain-text table for the terminal, arrows of each before → after column aligned."""
    header = [
        "provider", "share", "Δ share (pp)", "rank", "positive credit", "Δ positive", "total credit", "Δ total", ""
    ]
    rows: list[list[Any]] = [  # cells, and (before, after) pairs until they are aligned below
        [
            plain(c.provider),  # names are untrusted: no escape sequences into the terminal
            (_pct(c.share_before), _pct(c.share_after)),
            _signed(None if c.share_delta is None else c.share_delta * 100, ".1f"),
            (str(c.rank_before or "—"), str(c.rank_after or "—")),
            (_num(c.positive_credit_before), _num(c.positive_credit_after)),
            _signed(_delta(c.positive_credit_before, c.positive_credit_after), ".4g"),
            (_num(c.total_credit_before), _num(c.total_credit_after)),
            _signed(_delta(c.total_credit_before, c.total_credit_after), ".4g"),
            "" if c.status == "kept" else c.status,
        ]
        for c in diff.providers
    ]
    for i in range(len(header)):
        pairs = [r[i] for r in rows if isinstance(r[i], tuple)]
        if pairs:
            left, right = (max(len(p[side]) for p in pairs) for side in (0, 1))
            for r in rows:
                r[i] = f"{r[i][0].rjust(left)} → {r[i][1].rjust(right)}"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names and status left-aligned, figures right-aligned so digits line up.
        edges = (0, len(cells) - 1)
        return "  ".join(c.ljust(w) if i in edges else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [f"before  {diff.before}", f"after   {diff.after}"]
    lines += [f"changed {c.field}: {plain(c.before)} → {plain(c.after)}" for c in diff.provenance]
    lines += [f"warning: {plain(w)}" for w in diff.warnings]
    lines += ["", line(header).rstrip(), *(line(r).rstrip() for r in rows)]
    return "\n".join(lines) + "\n"
