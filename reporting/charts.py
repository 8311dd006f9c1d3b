"""The report's charts as inline SVG, so the HTML page is one self-contained file without scripts.

Figures are made without pyplot: no global figure state, safe to call from a flow's worker threads.
"""

from __future__ import annotations

import io
import math
import re
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

from .model import ProviderReport, ScoreHistogram

MAX_PROVIDERS = 24  # beyond this a chart stops being readable; the tables list everyone

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: the page looks the same whatever fonts the reader has
    "svg.hashsalt": "dataworth",  # fixed element ids: the same report renders to the same bytes
    "text.parse_math": False,  # provider names are untrusted; "$" must not start mathtext
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_BAR = "#3b6ea8"
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    # Inline SVG in HTML needs neither the XML prolog nor the DOCTYPE; the RDF metadata only
    # carries third-party namespace URLs.
    return _METADATA.sub("", text[text.index("<svg") :])


def shares_chart(providers: list[ProviderReport]) -> str:
    """Horizontal bars of each provider's share of the help, the bootstrap band as error bars, the
    rank range in the label.

    `providers` in display order (largest first); only the first MAX_PROVIDERS are drawn.
    """
    shown = providers[:MAX_PROVIDERS][::-1]  # barh draws bottom-up
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7.5, 0.8 + 0.32 * max(len(shown), 1)))
        ax = fig.add_subplot()
        shares = [p.share for p in shown]
        # Percentiles of a bootstrap need not bracket the point estimate; never draw a negative bar.
        below = [max(p.share - p.share_low, 0.0) for p in shown]
        above = [max(p.share_high - p.share, 0.0) for p in shown]
        y = range(len(shown))
        ax.barh(y, shares, xerr=[below, above], color=_BAR, ecolor="#222222", capsize=3, height=0.6)
        ax.set_yticks(list(y), [f"{p.provider}  ({p.rank_range})" for p in shown])
        for i, p in enumerate(shown):
            ax.text(p.share_high if p.share_high > p.share else p.share, i, f"  {p.share:.1%}", va="center")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlim(0, max([p.share_high for p in shown] + [p.share for p in shown] + [0.01]) * 1.18)
        ax.set_xlabel("share of the help, each query weighing the same (bars: 5-95% bootstrap band over queries; "
                      "label: rank)")
        return _svg(fig)


def distributions_chart(histogram: ScoreHistogram, order: list[str]) -> str:
    """One small histogram per provider (in `order`, the first MAX_PROVIDERS), on a shared score axis.

    Separate panels rather than overlaid curves: providers differ in size by orders of magnitude.
    """
    shown = [name for name in order if name in histogram.counts][:MAX_PROVIDERS]
    columns = min(3, max(len(shown), 1))
    rows = max(math.ceil(len(shown) / columns), 1)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(2.6 * columns + 0.4, 1.7 * rows + 0.5), layout="constrained")
        axes = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
        for ax, name in zip(axes, shown):
            ax.stairs(histogram.counts[name], histogram.bin_edges, fill=True, color=_BAR)
            ax.axvline(0.0, color="#b03030", linewidth=0.8)  # right of it: examples that helped
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of examples
            ax.set_title(name, fontsize=9, loc="left")
        for ax in axes[len(shown) :]:
            ax.set_visible(False)
        fig.supxlabel(f"{histogram.label} (red line: 0; right of it the example helped)", fontsize=9)
        fig.supylabel("examples", fontsize=9)
        return _svg(fig)
