"""Reports built from a small synthetic score matrix: content, formats, exports, diff, and the HTML
page rendered in a real headless browser."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from reporting.build import (
    ExampleRecord,
    ScoringResult,
    TopK,
    build_report,
    rank_ranges,
    score_histogram,
    snippet,
)
from reporting.diff import diff_reports, format_diff, load_report
from reporting.export import provider_export, write_report
from reporting.model import SCHEMA_VERSION, Provenance, Report, Stability
from reporting.provenance import code_version, location_name, store_version
from reporting.render import to_csv, to_html, to_json, to_markdown
from valuation.credit import credit_matrix, query_shares, summarise

OUTPUT = Path(__file__).parent / "output"
# The same names, in the same order, that infra/ensure-browser.sh looks for.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROVIDERS = ("acme", "borealis", "gamma & co $1$")  # markup and mathtext characters on purpose
HOSTILE = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"


def provenance(**changes) -> Provenance:
    fields = dict(
        model_name="tiny-gpt",
        model_fingerprint="f00dfeed12345678",
        projection_fingerprint="proj0123456789ab",
        projection={"kind": "random", "k_in": 8, "k_out": 8, "seed": 0},
        store="store.zarr",
        store_version="41",
        storage_precision="bf16",
        fisher_snapshot=3,
        fisher={"estimator": "true", "samples": 4, "sample_seed": 0, "damping": 0.1},
        influence_mode="relatif",
        max_length=256,
        precision="fp32",
        tokenization={"tokenizer": "GPT2TokenizerFast", "bos": "add", "eos": "auto",
                      "special_tokens": {"text_start": ["<|e|>"], "text_end": [], "prompt_end": [],
                                         "response_end": ["<|e|>"]}, "max_length": 256, "truncation": "right"},
        query_set_sha256="9" * 64,
        code_version="0.1.0+abc1234",
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        run_id="nightly-41",
    )
    return Provenance(**(fields | changes))


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> TopK:
    """Best k of each row of `scores` (over the columns `rows`), padded with empty slots."""
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    top_rows, top_scores = rows[order], np.take_along_axis(scores, order, axis=-1)
    pad = k - order.shape[-1]
    return TopK(
        np.pad(top_rows, ((0, 0), (0, pad)), constant_values=-1),
        np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf),
    )


def make_report(providers=PROVIDERS, bias=(0.6, 0.1, -0.2), seed=0, n_queries=4, per_provider=6, **prov):
    """(report, scores, records); examples of each provider score around its bias."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(providers)), per_provider)
    records = [
        ExampleRecord(f"{providers[p]}-{i:03d}", providers[p], f"  {providers[p]} document {i}:\n\tsome text " * 8)
        for i, p in enumerate(labels)
    ]
    scores = rng.normal(size=(n_queries, len(labels))) + np.asarray(bias)[labels]
    names, credit = credit_matrix(scores, [r.provider for r in records])
    codes = np.array([names.index(r.provider) for r in records])
    rows = np.arange(len(records))
    k = 4
    provider_top = [top_k(scores[:, codes == p], rows[codes == p], k) for p in range(len(names))]
    result = ScoringResult(
        query_ids=[f"q{i}" for i in range(n_queries)],
        query_texts=[f"answer {i}: {HOSTILE}" for i in range(n_queries)],
        provider_names=names,
        examples_per_provider=np.bincount(codes).tolist(),
        credit=credit,
        top=top_k(scores, rows, k),
        provider_top=TopK(np.stack([t.rows for t in provider_top], 1), np.stack([t.scores for t in provider_top], 1)),
        example=records.__getitem__,
        provenance=provenance(**prov),
        query_score_quantiles=[
            {f"p{q}": float(v) for q, v in zip((50, 90, 99), np.percentile(row, [50, 90, 99]))} for row in scores
        ],
    )
    return build_report(
        result,
        top_k=3,
        top_queries=2,
        snippet_chars=60,
        bootstrap=200,
        score_histogram=score_histogram(scores.mean(axis=0), codes, names, bins=12),
        stability=Stability(
            varies="projection seed", variants=[0, 1, 2], spearman_mean=0.93, spearman_min=0.88,
            share_spread={name: 0.01 * (i + 1) for i, name in enumerate(names)}, share_spread_median=0.02,
            examples=len(records), queries=n_queries, measured_at=datetime(2025, 1, 2, 1, 0, tzinfo=UTC), snapshot=3,
        ),
    ), scores, records


@pytest.fixture(scope="module")
def built():
    return make_report()


def test_report_figures_match_the_scores(built):
    report, scores, records = built
    names, credit = credit_matrix(scores, [r.provider for r in records])
    expected = {s.provider: s for s in summarise(credit, names, [6, 6, 6], bootstrap=200, seed=0)}
    for p in report.providers:
        s = expected[p.provider]
        fields = ("total_credit", "positive_credit", "share", "share_low", "share_high", "net", "queries_helped",
                  "queries_hurt", "examples")
        assert [getattr(p, f) for f in fields] == [getattr(s, f) for f in fields]
    assert sum(p.share for p in report.providers) == pytest.approx(1.0)
    assert report.ranked_providers()[0].provider == "acme"
    assert np.allclose(report.credit_matrix.values, credit)

    for q, query in enumerate(report.queries):
        best = np.argsort(-scores[q], kind="stable")[:3]
        assert [e.example_id for e in query.top_examples] == [records[r].example_id for r in best]
        assert [c.provider for c in query.top_providers] == [names[p] for p in np.argsort(-credit[q], kind="stable")]
    for p in report.providers:
        j = names.index(p.provider)
        assert [qe.query_id for qe in p.top_examples_by_query] == [
            f"q{q}" for q in np.argsort(-credit[:, j], kind="stable")[:2]
        ]
        for qe in p.top_examples_by_query:
            assert len(qe.examples) == 3 and all(e.provider == p.provider for e in qe.examples)
            assert [e.score for e in qe.examples] == sorted((e.score for e in qe.examples), reverse=True)


def test_every_query_weighs_the_same_in_the_share():
    # Query 0 is "long": its credit is 100x that of the others, where b does all the helping.
    credit = np.array([[100.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    by_name = {s.provider: s for s in summarise(credit, ["a", "b"], [1, 1], bootstrap=50)}
    assert by_name["a"].share == pytest.approx(0.25) and by_name["b"].share == pytest.approx(0.75)
    assert by_name["a"].positive_credit == 100.0  # the raw sum would have made a the leader
    assert query_shares(credit * np.array([[1e-3], [7.0], [1.0], [1e4]])) == pytest.approx([0.25, 0.75])


def test_a_fair_share_and_a_negative_net_are_explained_side_by_side():
    # a helps a lot on one query and hurts on three: share of help and net point different ways.
    credit = np.array([[5.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])
    a = summarise(credit, ["a", "b"], [1, 1], bootstrap=50)[0]
    assert a.share > 0.2 and a.net < 0 and (a.queries_helped, a.queries_hurt) == (1, 3)
    report = make_report(providers=("acme", "borealis"), bias=(0.0, 0.4), n_queries=6)[0]
    text = to_markdown(report)
    assert "Headline figure: each provider's share of the help, in percent" in text
    for term in ("**Share of help**", "**Band**", "**Rank**", "**Net**", "**Raw credit**"):
        assert term in text


def test_overlapping_bands_tie_ranks():
    share = np.array([0.40, 0.25, 0.20, 0.15])
    low, high = share - np.array([0.02, 0.06, 0.06, 0.02]), share + np.array([0.02, 0.06, 0.06, 0.02])
    rank, best, worst = rank_ranges(share, low, high)
    assert rank.tolist() == [1, 2, 3, 4]
    assert list(zip(best.tolist(), worst.tolist())) == [(1, 1), (2, 3), (2, 4), (3, 4)]
    # A band that misses its own point estimate is widened to include it.
    assert rank_ranges(np.array([0.5, 0.5]), np.array([0.6, 0.1]), np.array([0.7, 0.2]))[1].tolist() == [1, 1]


def test_provenance_names_no_local_path_and_no_shard():
    assert location_name("/home/operator/secret/.dataworth/store.zarr") == "store.zarr"
    assert location_name("file:///home/operator/store.zarr/") == "store.zarr"
    assert location_name("s3://bucket-of-acme/valuation/store.zarr") == "s3://…/store.zarr"
    assert location_name("~/models/my-model") == "my-model"
    assert location_name("org/hub-model") == "org/hub-model"  # a hub id is not a path
    version = store_version(12, ["a" * 64, "b" * 64])
    assert version.startswith("12 rows, 2 shards, manifest ") and "a" * 12 not in version
    assert store_version(12, ["b" * 64, "a" * 64]) != version  # the order of commits is part of it


def test_code_version_of_a_checkout_is_its_commit():
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not run from a git checkout")
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert code_version().startswith("git:") and head[:7] in code_version()


def test_snippets_are_collapsed_and_cut_on_words():
    assert snippet("  a\n\tb\x1b[31m  c ", 20) == "a b [31m c"
    cut = snippet("the quick brown fox jumps over the lazy dog", 20)
    assert cut == "the quick brown fox…" and len(cut) <= 20
    assert snippet("x" * 50, 10) == "x" * 9 + "…"  # one long word: cut mid-word, not dropped


def test_json_round_trip(built):
    report = built[0]
    assert Report.model_validate_json(to_json(report)) == report


def test_markdown_has_provenance_and_every_provider(built):
    report = built[0]
    text = to_markdown(report)
    unescaped = re.sub(r"\\(.)", r"\1", text)
    for name in PROVIDERS:
        assert name in unescaped
    for value in ("f00dfeed12345678", "proj0123456789ab", "relatif", "9" * 64, "0.1.0+abc1234", "nightly-41",
                  "max_length | 256", "precision | fp32", '"bos": "add"', '"text_start": ["<|e|>"]', '"samples": 4'):
        assert value in unescaped
    assert "<script>" not in text  # untrusted snippets stay inert
    assert "Spearman 0.93" in text and "projection seeds (0, 1, 2)" in text
    assert f"p99 {report.queries[0].score_quantiles['p99']:.4g}" in text


def test_csv_parses(built):
    report = built[0]
    files = to_csv(report)
    rows = list(csv.DictReader(io.StringIO(files["providers.csv"])))
    assert [r["provider"] for r in rows] == [p.provider for p in report.ranked_providers()]
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0)
    matrix = list(csv.reader(io.StringIO(files["credit_matrix.csv"])))
    assert matrix[0] == ["query_id", *report.credit_matrix.providers]
    assert [[float(v) for v in row[1:]] for row in matrix[1:]] == report.credit_matrix.values


def test_csv_keeps_names_from_running_as_formulas(built):
    report = make_report(providers=("=HYPERLINK(1)", "acme", "beta"))[0]
    assert "'=HYPERLINK(1)" in to_csv(report)["providers.csv"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_provider_export_holds_only_its_own(built, name):
    report = built[0]
    export = provider_export(report, name)
    text = to_json(export)
    for other in PROVIDERS:
        if other != name:
            assert json.dumps(other)[1:-1] not in text
            assert other.split()[0] not in text  # nor its example ids or snippets
    own = [e.example_id for qe in report.provider(name).top_examples_by_query for e in qe.examples]
    assert own and all(i in text for i in own)
    assert [p.provider for p in export.providers] == [name] and export.scope == name
    assert all(q.top_providers == [] for q in export.queries)
    column = report.credit_matrix.providers.index(name)
    assert export.credit_matrix.values == [[row[column]] for row in report.credit_matrix.values]
    assert Report.model_validate_json(text) == export


def test_diff_shows_share_changes_and_new_and_gone_providers(built):
    before = built[0]
    after = make_report(providers=("acme", "borealis", "delta"), bias=(0.2, 0.6, 0.1), store_version="42")[0]
    diff = diff_reports(before, after)
    by_name = {c.provider: c for c in diff.providers}
    assert by_name["acme"].status == "kept"
    assert by_name["acme"].share_delta == pytest.approx(after.provider("acme").share - before.provider("acme").share)
    assert by_name["acme"].share_delta < 0 and by_name["borealis"].share_delta > 0
    assert (by_name["delta"].status, by_name[PROVIDERS[2]].status) == ("new", "gone")
    assert [c.field for c in diff.provenance] == ["store_version"]
    table = format_diff(diff)
    assert "changed store_version: 41 → 42" in table
    acme_line = next(line for line in table.splitlines() if line.startswith("acme "))
    assert re.search(rf"{before.provider('acme').share:.1%}\s+→\s+{after.provider('acme').share:.1%}", acme_line)
    assert f"{by_name['acme'].share_delta * 100:+.1f}" in acme_line


def test_diff_warns_when_reports_cover_different_queries_or_providers(built):
    before = built[0]
    assert diff_reports(before, make_report(seed=1)[0]).warnings == []  # same queries and providers
    other_queries = make_report(n_queries=5, query_set_sha256="8" * 64)[0]
    (warning,) = diff_reports(before, other_queries).warnings
    assert warning.startswith("the reports cover different query sets (4 queries in both, 1 only after, 0 only before)")
    assert "warning: the reports cover different query sets" in format_diff(diff_reports(before, other_queries))
    export = provider_export(before, "acme")
    assert any("provider's export" in w for w in diff_reports(before, export).warnings)


def test_write_report_writes_every_file_and_loads_back(built, tmp_path):
    report = built[0]
    paths = write_report(report, tmp_path / "run")
    assert {"json", "markdown", "html", "providers_csv", "credit_matrix_csv"} <= paths.keys()
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "run" / "providers").iterdir()) == sorted(
        f"{n}{suffix}" for n in PROVIDERS for suffix in (".html", ".json")
    )
    assert not list((tmp_path / "run").rglob("*.tmp"))
    assert load_report(tmp_path / "run") == report == load_report(paths["json"])
    assert load_report(paths["provider:acme"]) == provider_export(report, "acme")


@pytest.mark.parametrize(
    "bad", ["../evil", "a/b", "..", ".hidden", "back\\slash", "nul\x00byte", "/etc/passwd", "Acme"]
)
def test_write_report_refuses_names_that_escape_or_collide(tmp_path, bad):
    report = make_report(providers=("acme", bad, "other"))[0]
    with pytest.raises(ValueError):
        write_report(report, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_html_is_self_contained_and_escaped(built):
    page = to_html(built[0])
    assert page.count("<svg") == 2  # the shares and the distributions charts
    assert html_escaped("answer 0: <script>alert('x')</script> &") in page
    assert "<script" not in page and "<img" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?(https?:)?//|@import""", page)


def html_escaped(text: str) -> str:
    return html.escape(text, quote=True)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--window-size=1280,2000",
)
# Console messages (script errors, fetches the page's CSP blocked) reach stderr as "CONSOLE".
CONSOLE_ERROR = re.compile(r"CONSOLE|Uncaught|Refused to")


@pytest.fixture
def chromium(tmp_path):
    """Runs headless Chromium on a page: chromium(page, profile_name, *flags) -> CompletedProcess."""
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip("no chromium on PATH: run `bash infra/ensure-browser.sh` (installs it when root)")

    def run(page: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
        command = [browser, *_FLAGS, f"--user-data-dir={tmp_path / name}", *extra, page.as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=90)

    return run


def test_html_opens_in_headless_chromium(built, tmp_path, chromium):
    out = OUTPUT / "html_report"
    shutil.rmtree(out, ignore_errors=True)
    paths = write_report(built[0], out)

    # Control: a broken page must be caught, else a silent log format change would pass anything.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><body><script>undefinedFunction();</script></body>")
    assert CONSOLE_ERROR.search(chromium(broken, "control", f"--screenshot={tmp_path / 'control.png'}").stderr)

    screenshot = out / "report.png"
    shot = chromium(paths["html"], "screenshot", f"--screenshot={screenshot}")
    (out / "chromium-stderr.log").write_text(shot.stderr)
    assert screenshot.is_file(), shot.stderr[-2000:]
    assert png_size(screenshot) == (1280, 2000)
    assert screenshot.stat().st_size > 30_000  # a blank page compresses to a few KB
    assert not CONSOLE_ERROR.search(shot.stderr), shot.stderr[-2000:]

    dom = chromium(paths["html"], "dom", "--dump-dom").stdout
    assert dom.count("<svg") == 2 and "<path" in dom  # both charts are in the rendered page
    assert "<h1>Data contribution report</h1>" in dom
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom  # the hostile snippet is text, not elements
    assert "<script" not in dom and "<img" not in dom


def _leaks(text: str, report: Report, provider: str) -> list[str]:
    """Every other provider's name and example id found in `text`, raw or as HTML/JSON escape it."""
    others = [p for p in report.providers if p.provider != provider]
    ids = {e.example_id for p in others for qe in p.top_examples_by_query for e in qe.examples}
    ids |= {e.example_id for q in report.queries for e in q.top_examples if e.provider != provider}
    return [
        value for value in [p.provider for p in others] + sorted(ids)
        if any(form in text for form in (value, html.escape(value, quote=True), json.dumps(value)[1:-1]))
    ]


def test_every_export_holds_no_other_providers_name_or_examples(built, tmp_path):
    report = built[0]
    paths = write_report(report, tmp_path / "run")
    for p in report.providers:
        page, data = (paths[f"{kind}:{p.provider}"].read_text() for kind in ("provider-html", "provider"))
        assert paths[f"provider-html:{p.provider}"].name == f"{p.provider}.html"
        for text in (page, data):
            assert _leaks(text, report, p.provider) == []
        # Its rank among all providers, never "rank 1" of a list of one.
        assert f"rank {p.rank_range} of {len(report.providers)} providers" in html.unescape(page)
        assert "@media print" in page and "<svg" in page  # printable; its own score distribution
    control = to_html(report)  # the check finds what it looks for
    assert _leaks(control, report, "acme") and _leaks(to_json(report), report, "acme")


def test_an_export_opens_and_prints_in_headless_chromium(built, tmp_path, chromium):
    report = built[0]
    last = report.ranked_providers()[-1].provider
    out = OUTPUT / "provider_export"
    shutil.rmtree(out, ignore_errors=True)
    page = write_report(report, out)[f"provider-html:{last}"]
    screenshot, pdf = out / "export.png", out / "export.pdf"
    shot = chromium(page, "screenshot", f"--screenshot={screenshot}")
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    assert not CONSOLE_ERROR.search(shot.stderr), shot.stderr[-2000:]
    printed = chromium(page, "pdf", f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-", printed.stderr[-2000:]
    dom = chromium(page, "dom", "--dump-dom").stdout
    assert _leaks(dom, report, last) == [] and "<script" not in dom


def test_a_report_of_an_older_schema_is_refused_in_one_line(built, tmp_path):
    old = json.loads(to_json(built[0])) | {"schema_version": 1}
    (tmp_path / "report.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=f"schema-1 report; this version reads schema {SCHEMA_VERSION}"):
        load_report(tmp_path)
