"""Markdown tables of an evaluation's results (the dict `runner.evaluate` returns)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scoring.results import redrawn_words

from .brittleness import RANDOM


def _num(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    return f"{text} ± {stderr:.{digits}f}" if stderr is not None and not math.isnan(stderr) else text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _interval(stats: dict) -> str:
    if not stats or "ci_low" not in stats:
        return _num(stats.get("spearman"), stats.get("stderr")) if stats else "—"
    return f"{_num(stats['spearman'])} [{_num(stats['ci_low'])}, {_num(stats['ci_high'])}]"


CEILING = "noise ceiling (one retrain seed vs the others)"


def headline_table(results: dict, names: Sequence[str]) -> str:
    lds = results.get("lds", {}).get("methods", {})
    lopo = dict(results.get("lopo", {}).get("methods", {}))
    brittle = results.get("brittleness", {}).get("methods", {})
    ceiling = results.get("lopo", {}).get("noise_ceiling")
    if ceiling:
        lopo[CEILING] = ceiling
    rows = []
    shown = [*([CEILING] if ceiling else []), *names, *([RANDOM] if brittle else [])]
    for name in shown:
        d, o, b = lds.get(name, {}), lopo.get(name, {}), brittle.get(name, {})
        if not (d or o or b):
            continue
        rows.append([
            name if name == CEILING else f"`{name}`",
            _num(d.get("lds"), d.get("stderr")),
            _interval(o),
            _num(o.get("spearman_pooled")),
            _num(o.get("top1"), digits=2),
            _num(b.get("loss_rise"), b.get("stderr")),
            _num(b.get("beats_random"), digits=2),
        ])
    header = ["method", "LDS", "LOPO ρ per query [95% CI]", "LOPO ρ pooled", "LOPO top-1", "brittleness: loss rise",
              "beats random"]
    return _table(header, rows)


def _variant_order(method: dict) -> tuple:
    """LoGra (random, then PCA; empirical, then sampled-label Fisher; by rank), ensembles, dense, exact."""
    return (["logra", "dense", "full"].index(method["gradients"]), len(method["seeds"]), method["init"] != "random",
            method["fisher"], method["rank"], method["mode"])


def grid_table(results: dict, check: str, field: str) -> str:
    """One row per method variant (its name without the damping), one column per alpha."""
    cells: dict[str, dict[float, str]] = {}
    order: dict[str, tuple] = {}
    for name, stats in results.get(check, {}).get("methods", {}).items():
        method = results["methods"][name]
        if method["fisher"] == "none" or method["gradients"] in ("ekfac", "tfidf", "bm25"):
            continue
        variant = name.replace(f"-a{method['damping']:g}-", "-")
        cells.setdefault(variant, {})[method["damping"]] = _num(stats[field])
        order[variant] = _variant_order(method)
    alphas = sorted({a for row in cells.values() for a in row})
    rows = [[f"`{v}`", *(cells[v].get(a, "") for a in alphas)] for v in sorted(cells, key=order.__getitem__)]
    return _table(["method (α varies)", *(f"α={a:g}" for a in alphas)], rows)


def render_markdown(results: dict) -> str:
    names = results.get("headline") or list(results["methods"])
    parts = [(f"### Task `{results['task']}`: {results['n_train']} training examples, "
              f"{len(results['query_ids'])} queries")]
    settings = []
    if "lds" in results:
        c = results["lds"]["config"]
        settings.append(f"LDS: {c['subsets']} random subsets of {c['fraction']:g} of the data, "
                        f"{c['retrains']} retrain(s) each")
    if "lopo" in results:
        settings.append(f"leave-one-provider-out: {len(results['lopo']['providers'])} providers, "
                        f"{results['lopo']['config']['retrains']} retrain(s) each")
    if "brittleness" in results:
        c = results["brittleness"]["config"]
        settings.append(f"brittleness: top {c['top_k']} removed, {len(results['brittleness']['queries'])} queries, "
                        f"{c['retrains']} retrain(s) each; loss rise = query loss after removal minus before")
    run = results["run"]
    settings.append(f"{run['retrains_done']} retrains run now, {run['retrains_reused']} reused from the checkpoint; "
                    f"{run['total_s']:.0f} s")
    parts.append("\n".join(f"- {s}" for s in settings))
    parts.append(headline_table(results, names))
    for name, reason in results.get("skipped", {}).items():
        parts.append(f"**`{name}` was not run: {reason}.**")
    if "stability" in results:
        st = results["stability"]
        redrawn = redrawn_words(st.get("varies", "projection seed"), st.get("labels_redrawn", False), plural=True)
        parts.append(f"Stability of `{st['method']}`: mean Spearman of the query x provider credit between "
                     f"{redrawn} {st['seeds']}: {st['spearman_mean']:.3f} (min {st['spearman_min']:.3f}).")
    for check, field, title in (("lds", "lds", "LDS"), ("lopo", "spearman", "LOPO ρ per query")):
        if check in results and any(results["methods"][n]["damping"] != 0.1 and results["methods"][n]["gradients"]
                                    not in ("ekfac", "tfidf", "bm25") for n in results[check]["methods"]):
            parts.append(f"{title} by method and damping α:\n\n{grid_table(results, check, field)}")
    return "\n\n".join(parts) + "\n"
