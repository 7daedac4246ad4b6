"""Pareto dominance, non-dominated sorting, crowding distance and hypervolume (pure numpy).

Convention for every function here: ``points`` is an ``(n, m)`` array-like of ``n`` points with
``m`` objectives, and **higher is better on every axis** (negate an objective that is minimised,
e.g. pass ``-latency``). Point ``a`` dominates ``b`` when ``a >= b`` on every axis and ``a > b`` on
at least one. Equal points do not dominate each other, so duplicates share a front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def _as_points(points: ArrayLike) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(f"points must be an (n, m) array of n points, got shape {array.shape}")
    return array


def dominates(a: ArrayLike, b: ArrayLike) -> bool:
    """Whether ``a`` dominates ``b`` (higher is better): no worse anywhere, better somewhere."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a >= b) and np.any(a > b))


def _front_of(points: np.ndarray, indices: np.ndarray) -> list[int]:
    """The non-dominated members of ``points[indices]``, as indices into ``points``."""
    # In descending lexicographic order every dominator of a point comes before it, and a
    # dominated dominator is itself dominated by a front member: comparing each point with the
    # front found so far is enough (O(n * front size) instead of O(n^2)).
    subset = points[indices]
    order = indices[np.lexsort(subset.T[::-1])[::-1]]
    front: list[int] = []
    front_points = np.empty((len(indices), points.shape[1]))
    for index in order:
        point = points[index]
        kept = front_points[: len(front)]
        if np.any(np.all(kept >= point, axis=1) & np.any(kept > point, axis=1)):
            continue
        front_points[len(front)] = point
        front.append(int(index))
    return sorted(front)


def pareto_front(points: ArrayLike) -> list[int]:
    """Indices (ascending) of the points no other point dominates; higher is better on every axis.

    Duplicated non-dominated points are all kept.
    """
    array = _as_points(points)
    if len(array) == 0:
        return []
    return _front_of(array, np.arange(len(array)))


def non_dominated_sort(points: ArrayLike) -> list[list[int]]:
    """Split the points into fronts (Deb et al., 2002); higher is better on every axis.

    ``fronts[0]`` is the Pareto front, ``fronts[1]`` the front of what remains without it, and so
    on. Every index appears in exactly one front; each front's indices are ascending.
    """
    array = _as_points(points)
    remaining = np.arange(len(array))
    fronts: list[list[int]] = []
    while len(remaining):
        front = _front_of(array, remaining)
        fronts.append(front)
        remaining = np.setdiff1d(remaining, front, assume_unique=True)
    return fronts


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II's crowding distance of each point within its set (usually one front).

    For every objective the points are sorted; the two extremes get ``inf`` and every other point
    adds the gap between its two neighbours, divided by that objective's range (an objective on
    which all points are equal adds nothing). Larger means more isolated, so preferred. Sets of
    one or two points are all ``inf``. Direction does not matter here, only gaps.
    """
    array = _as_points(points)
    n = len(array)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for column in array.T:
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        span = ordered[-1] - ordered[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / span
    return distance


def hypervolume(points: ArrayLike, reference: Sequence[float] | np.ndarray) -> float:
    """The volume dominated by ``points`` and bounded by ``reference``; higher is better.

    ``reference`` is a point that every point of interest dominates (worse on every axis, e.g. the
    worst value of each objective); the result is the measure of the union of the boxes
    ``[reference, p]``. Points that are not strictly better than the reference on every axis add
    nothing and are ignored; dominated points and duplicates are harmless.

    Exact for any number of objectives: two objectives by one sweep (O(n log n)); more by slicing
    along the last objective and recursing (HSO, While et al. 2006), exponential in the number of
    objectives, so meant for fronts of a few hundred points and up to about 4 objectives.
    """
    array = _as_points(points)
    ref = np.asarray(reference, dtype=float)
    if len(array) == 0:
        return 0.0
    if ref.shape != (array.shape[1],):
        raise ValueError(
            f"reference has shape {ref.shape}, but the points have {array.shape[1]} objectives"
        )
    array = array[np.all(array > ref, axis=1)]
    if len(array) == 0:
        return 0.0
    # Only the front contributes, and pruning keeps the recursion small.
    array = array[pareto_front(array)]
    return float(_hypervolume(array - ref))


def _hypervolume(points: np.ndarray) -> float:
    """Hypervolume of positive points with respect to the origin."""
    m = points.shape[1]
    if m == 1:
        return float(points[:, 0].max())
    if m == 2:
        order = np.argsort(-points[:, 0], kind="stable")
        x = points[order, 0]
        best_y = np.maximum.accumulate(points[order, 1])
        widths = x - np.append(x[1:], 0.0)
        return float(np.sum(widths * best_y))
    # Slices between consecutive distinct values of the last objective, top down: the slice
    # below level z is the (m-1)-D volume of every point reaching at least z.
    levels = np.unique(points[:, -1])[::-1]
    volume = 0.0
    for level, below in zip(levels, np.append(levels[1:], 0.0), strict=True):
        upper = points[points[:, -1] >= level, :-1]
        upper = upper[pareto_front(upper)]
        volume += (level - below) * _hypervolume(upper)
    return volume


__all__ = ["crowding_distance", "dominates", "hypervolume", "non_dominated_sort", "pareto_front"]
