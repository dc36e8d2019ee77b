"""Charts as PNG or SVG (matplotlib, headless): spend over time, top spenders, budget utilisation.

The format follows the file's suffix (``.png`` or ``.svg``). Figures are drawn from the exact
report figures; money becomes a float only at the moment it is plotted. Install
``tokenward[charts]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenward.errors import ConfigError, MissingDependency
from tokenward.observe.reports.chargeback import ChargebackReport
from tokenward.observe.reports.utilisation import Utilisation

__all__ = ["budget_utilisation_chart", "spend_over_time_chart", "top_spenders_chart"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("matplotlib", "charts") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, output: str | Path) -> Path:
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ConfigError(f"{path}: charts are written as .png or .svg")
    fig.tight_layout()
    fig.savefig(
        path, format=suffix[1:], dpi=120, metadata={"Software": "tokenward"} if suffix == ".png" else None
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _label(key: Sequence[str | None]) -> str:
    # A call without a value for a dimension (no user, say) reads "unknown", as in the report tables.
    return " / ".join("unknown" if k is None else str(k) for k in key) or "(all)"


def _instants(labels: list[str]) -> list[datetime] | None:
    """Period labels (``2025-11-18``, ``2025-11-18T22:00``, ``2025-11``) as datetimes, or None."""
    out = []
    for label in labels:
        for fmt in ("%Y-%m-%dT%H:00", "%Y-%m-%d", "%Y-%m"):
            try:
                out.append(datetime.strptime(label, fmt))
                break
            except ValueError:
                continue
        else:
            return None
    return out


def spend_over_time_chart(report: ChargebackReport, output: str | Path, *, title: str | None = None) -> Path:
    """A line per series of a chargeback report grouped by a period first (``["day"]`` or
    ``["day", "user"]``): spend in USD per period.

    Raises:
        ConfigError: a report not grouped by a period first, or a bad suffix.
    """
    plt = _pyplot()
    if not report.dimensions:
        raise ConfigError("spend over time needs a report grouped by a period (day, hour, week, month)")
    series: dict[str, dict[str, Decimal]] = {}
    periods: set[str] = set()
    for line in report.lines:
        period = str(line.key[0])
        periods.add(period)
        name = _label(line.key[1:]) if len(line.key) > 1 else "spend"
        series.setdefault(name, {})[period] = series.get(name, {}).get(period, Decimal(0)) + line.cost_usd
    ordered = sorted(periods)
    instants = _instants(ordered)
    fig, ax = plt.subplots(figsize=(10, 5))
    top = sorted(series, key=lambda n: -sum(series[n].values()))[:10]
    for name in top:
        xs = instants if instants is not None else ordered
        ys = [float(series[name].get(p, 0)) for p in ordered]
        # stems, not lines: a period without calls is not interpolated as if it had spent
        (marker,) = ax.plot(xs, ys, marker="o", markersize=4, linestyle="", label=name)
        ax.vlines(xs, 0, ys, colors=marker.get_color(), alpha=0.6)
    ax.set_title(title or f"spend per {report.dimensions[0]} (USD)")
    ax.set_ylabel("USD")
    if instants is not None:
        fig.autofmt_xdate()  # a time axis: gaps between periods show as gaps
    else:
        ax.tick_params(axis="x", rotation=45)
    if len(top) > 1:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, output)


def top_spenders_chart(
    report: ChargebackReport, output: str | Path, *, n: int = 15, title: str | None = None
) -> Path:
    """Horizontal bars of the ``n`` most expensive lines of a chargeback report."""
    plt = _pyplot()
    lines = report.lines[:n][::-1]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.4 * len(lines) + 1)))
    ax.barh([_label(line.key) for line in lines], [float(line.cost_usd) for line in lines], color="#3b6ea5")
    ax.set_xlabel("USD")
    ax.set_title(title or f"top spenders by {' / '.join(report.dimensions) or 'total'}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, output)


def budget_utilisation_chart(
    lines: Sequence[Utilisation], output: str | Path, *, n: int = 20, title: str | None = None
) -> Path:
    """Horizontal bars of budget instances' utilisation in percent (red past 100%, a marker at
    the projected end of window)."""
    plt = _pyplot()
    shown = [u for u in lines if u.ratio is not None][:n][::-1]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.4 * len(shown) + 1)))
    labels = [f"{u.budget.name} [{u.subject_id}]" for u in shown]
    values = [float(u.ratio or 0) * 100 for u in shown]
    colors = ["#c0392b" if v >= 100 else "#e67e22" if v >= 80 else "#27ae60" for v in values]
    ax.barh(labels, values, color=colors)
    projected = [
        float(u.projected / u.budget.limit) * 100 if u.projected is not None and u.budget.limit else None
        for u in shown
    ]
    for index, value in enumerate(projected):
        if value is not None:
            ax.plot([value], [index], marker="|", color="black", markersize=14)
    ax.axvline(100, color="black", linewidth=0.8)
    ax.set_xlabel("% of limit used (| = projected at window end)")
    ax.set_title(title or "budget utilisation")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, output)
