"""Contribution reports: build from scoring results, render (JSON, CSV, Markdown, HTML), export, diff."""

from .build import ExampleRecord, ScoringResult, TopK, build_report, score_histogram
from .diff import diff_reports, format_diff, load_report
from .export import provider_export, write_report
from .model import Provenance, Report, Stability
from .render import to_csv, to_html, to_json, to_markdown

__all__ = [
    "ExampleRecord",
    "Provenance",
    "Report",
    "ScoringResult",
    "Stability",
    "TopK",
    "build_report",
    "diff_reports",
    "format_diff",
    "load_report",
    "provider_export",
    "score_histogram",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
    "write_report",
]
