"""Fixed-length numeric vectors for the encodings of a search space (surrogates' input)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from nas_plugin.space import Categorical, Encoding, FloatRange, IntRange, SearchSpace


class OneHotFeatures:
    """A fixed-length numeric vector for every encoding of a space.

    Categorical decisions become one column per choice (all zero while inactive); integer and
    float decisions become one column scaled to [0, 1] (on a log scale for log intervals), and,
    when they are conditional, a second column that is 1 while they are active.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.columns: dict[str, int] = {}  # parameter -> its first column
        self._choice_index: dict[str, dict[object, int]] = {}
        width = 0
        for param in space.params:
            self.columns[param.name] = width
            if isinstance(param, Categorical):
                self._choice_index[param.name] = {v: i for i, v in enumerate(param.choices)}
                width += len(param.choices)
            else:
                width += 1 if param.condition is None else 2
        self.width = width
        self._params = {param.name: param for param in space.params}

    def transform(self, encodings: Sequence[Encoding]) -> np.ndarray:
        features = np.zeros((len(encodings), self.width))
        for row, encoding in enumerate(encodings):
            for key, value in encoding:
                column = self.columns[key]
                param = self._params[key]
                if isinstance(param, Categorical):
                    features[row, column + self._choice_index[key][value]] = 1.0
                    continue
                features[row, column] = _scaled(param, value)
                if param.condition is not None:
                    features[row, column + 1] = 1.0
        return features


def _scaled(param: IntRange | FloatRange, value: float) -> float:
    low, high = float(param.low), float(param.high)
    if isinstance(param, FloatRange) and param.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return 0.5 if high == low else (value - low) / (high - low)


# Operations that cut a path through a cell (its edge contributes nothing).
CUT_OPS = ("none", "zero")
_EDGE = re.compile(r"(?:^|\.)edge_(\d+)_(\d+)$")


class PathFeatures:
    """BANANAS' path encoding (White et al., 2021) of a cell space, plus one-hots of the rest.

    A cell space has categorical parameters named ``edge_<j>_<i>`` (node ``j`` reads node
    ``i``, as ``nb201`` has). A path is a route from the cell's input (the lowest node) to its
    output (the highest) whose edges all carry an operation other than ``none``; the feature
    vector has one column per sequence of operations along a path (4 + 16 + 64 = 84 on NB201),
    1 when the cell has such a path. Cells that compute the same function through different
    dead edges get the same vector, which is what lets a surrogate share what it learned
    between them. Other parameters are one-hot encoded (:class:`OneHotFeatures`);
    ``with_onehot`` appends the one-hot of the edges too.
    """

    def __init__(self, space: SearchSpace, with_onehot: bool = False) -> None:
        edges: dict[tuple[int, int], Categorical] = {}
        for param in space.params:
            match = _EDGE.search(param.name)
            if match and isinstance(param, Categorical) and param.condition is None:
                edges[(int(match.group(1)), int(match.group(2)))] = param
        if not edges:
            raise ValueError(
                "path features need a cell space: categorical parameters named "
                "edge_<j>_<i> (as the nb201 search space has)"
            )
        nodes = sorted({n for edge in edges for n in edge})
        source, sink = nodes[0], nodes[-1]
        self._routes = _routes(edges, source, sink)  # each a list of edge parameter names
        ops: list[object] = []
        for param in edges.values():
            ops.extend(c for c in param.choices if c not in ops and str(c) not in CUT_OPS)
        self._op_index = {op: i for i, op in enumerate(ops)}
        lengths = sorted({len(route) for route in self._routes})
        self._offset, width = {}, 0
        for length in lengths:
            self._offset[length] = width
            width += len(ops) ** length
        self.path_width = width
        edge_names = {param.name for param in edges.values()}
        rest = [p for p in space.params if p.name not in edge_names or with_onehot]
        self._rest = OneHotFeatures(SearchSpace(rest)) if rest else None
        self._rest_names = {p.name for p in rest}
        self.width = width + (self._rest.width if self._rest else 0)

    def transform(self, encodings: Sequence[Encoding]) -> np.ndarray:
        features = np.zeros((len(encodings), self.width))
        for row, encoding in enumerate(encodings):
            values = dict(encoding)
            for route in self._routes:
                ops = [values.get(name) for name in route]
                if any(op not in self._op_index for op in ops):
                    continue  # cut (none) or inactive
                index = 0
                for op in ops:
                    index = index * len(self._op_index) + self._op_index[op]
                features[row, self._offset[len(route)] + index] = 1.0
        if self._rest is not None:
            rest = [
                tuple((k, v) for k, v in encoding if k in self._rest_names)
                for encoding in encodings
            ]
            features[:, self.path_width :] = self._rest.transform(rest)
        return features


def _routes(edges: dict[tuple[int, int], Categorical], source: int, sink: int) -> list[list[str]]:
    """Every route from ``source`` to ``sink`` as the names of its edges, input side first."""
    outgoing: dict[int, list[tuple[int, str]]] = {}
    for (j, i), param in sorted(edges.items()):
        outgoing.setdefault(i, []).append((j, param.name))
    routes: list[list[str]] = []

    def walk(node: int, route: list[str]) -> None:
        if node == sink:
            routes.append(route)
            return
        for target, name in outgoing.get(node, []):
            walk(target, [*route, name])

    walk(source, [])
    return routes


FEATURES = ("onehot", "path", "path+onehot")


def make_features(space: SearchSpace, kind: str = "onehot") -> OneHotFeatures | PathFeatures:
    """The feature map ``kind`` names (one of :data:`FEATURES`)."""
    if kind == "onehot":
        return OneHotFeatures(space)
    return PathFeatures(space, with_onehot=kind == "path+onehot")
