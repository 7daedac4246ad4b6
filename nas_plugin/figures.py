"""Figures from plain numbers (matplotlib, the Agg canvas): what a sweep's plots look like.

Pure drawing: no MLflow, no torch. :mod:`nas_plugin.sweep.plots` feeds them a sweep's trials
and logs the PNGs on its parent run; :mod:`nas_plugin.proxies.report` draws its proxy scatter
with :func:`proxy_scatter`. Every function returns a ``matplotlib.figure.Figure`` built with the
object API, never pyplot: no global backend switch, nothing left open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

HIGHLIGHT = "tab:red"


def new_figure(width: float, height: float, constrained: bool = False) -> Any:
    """A figure on the Agg canvas. Fixed margins by default: the constrained layout doubles
    the drawing time, and a sweep's plots must cost well under a second together."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    if not constrained:
        figure.subplots_adjust(left=0.6 / width, right=0.97, bottom=0.5 / height, top=0.88)
        figure.subplots_adjust(wspace=0.35)
    FigureCanvasAgg(figure)
    return figure


def proxy_scatter(
    table: Sequence[Mapping[str, Any]],
    trial_rows: Sequence[Mapping[str, Any]],
    proxies: Sequence[str],
    metric: str,
) -> Any:
    """One panel per proxy: its score (x) against the trained ``metric`` (y); ``table`` holds
    each proxy's ``spearman`` and ``kendall`` (the panel titles), in ``proxies`` order."""
    columns = min(3, len(proxies))
    rows = math.ceil(len(proxies) / columns)
    figure = new_figure(4 * columns, 3.2 * rows, constrained=True)
    truth = [row[metric] for row in trial_rows]
    for index, (proxy, stats) in enumerate(zip(proxies, table, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 1)
        values = [row[proxy] for row in trial_rows]
        axes.scatter(values, truth, s=12, alpha=0.7)
        finite = [v for v in values if math.isfinite(v)]
        # synflow spans many orders of magnitude: a log axis keeps the points apart.
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            axes.set_xscale("log")
        else:
            axes.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        axes.set_title(f"{proxy}: rho={stats['spearman']:.2f}, tau={stats['kendall']:.2f}")
        axes.set_xlabel(proxy)
        axes.set_ylabel(metric)
    return figure


def trajectory(
    numbers: Sequence[int], values: Sequence[float], best: Sequence[float], metric: str
) -> Any:
    """Each trial's ``metric`` (dots) and the best so far (a step line) against the trial
    number: how fast the search found its best."""
    figure = new_figure(6, 3.5)
    axes = figure.add_subplot()
    axes.scatter(numbers, values, s=14, alpha=0.6, label="trial")
    axes.step(numbers, best, where="post", color=HIGHLIGHT, label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title(f"Search trajectory: {metric}")
    axes.legend(loc="best")
    return figure


def objective_vs_costs(
    points: Mapping[str, Sequence[tuple[float, float]]],
    front: Sequence[bool],
    metric: str,
) -> Any:
    """One panel per cost (``params``, ``latency_ms``, another objective): the trials' cost
    (x) against ``metric`` (y); trials where ``front`` is true (the Pareto front of a
    multi-objective sweep) are highlighted."""
    names = list(points)
    figure = new_figure(4 * len(names), 3.4)
    for index, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), index + 1)
        xy = points[name]
        rest = [p for p, on in zip(xy, front, strict=True) if not on]
        top = sorted(p for p, on in zip(xy, front, strict=True) if on)
        if rest:
            axes.scatter(*zip(*rest, strict=True), s=14, alpha=0.6, label="trial")
        if top:
            axes.plot(*zip(*top, strict=True), "o-", color=HIGHLIGHT, ms=5, label="Pareto front")
            axes.legend(loc="best")
        xs = [x for x, _ in xy if x > 0]
        if xs and max(xs) / min(xs) > 100:
            axes.set_xscale("log")
        axes.set_xlabel(name)
        axes.set_ylabel(metric)
    return figure


def predicted_vs_actual(
    predicted: Sequence[float], actual: Sequence[float], title: str = "Predictor"
) -> Any:
    """The predictor's prediction of each trial (made before it learned the trial) against
    the score the trial reached. The predictor works on its own (rank-warped) scale, so what
    counts is the order, not a diagonal: the title carries the rank correlation."""
    figure = new_figure(4.5, 4)
    axes = figure.add_subplot()
    axes.scatter(predicted, actual, s=14, alpha=0.7)
    axes.set_xlabel("predicted (the predictor's scale)")
    axes.set_ylabel("actual score")
    axes.set_title(title)
    return figure


def rung_diagram(brackets: Mapping[int, Sequence[tuple[float, int]]], budget_key: str) -> Any:
    """Hyperband: trials per rung (y) against the rung's budget (x), one line per bracket."""
    figure = new_figure(5.5, 3.5)
    axes = figure.add_subplot()
    budgets: set[float] = set()
    for bracket, rungs in sorted(brackets.items()):
        xs = [budget for budget, _ in rungs]
        budgets.update(xs)
        axes.plot(xs, [count for _, count in rungs], "o-", label=f"bracket {bracket}")
        for budget, count in rungs:
            axes.annotate(str(count), (budget, count), textcoords="offset points", xytext=(4, 4))
    if budgets and min(budgets) > 0 and max(budgets) / min(budgets) >= 4:
        axes.set_xscale("log")  # budgets grow geometrically (by eta)
    axes.set_xticks(sorted(budgets), [f"{b:g}" for b in sorted(budgets)])
    axes.minorticks_off()
    axes.set_xlabel(f"budget ({budget_key})")
    axes.set_ylabel("trials")
    axes.set_title("Hyperband rungs")
    axes.legend(loc="best")
    return figure
