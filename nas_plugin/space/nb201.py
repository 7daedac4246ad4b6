"""The NAS-Bench-201 cell space (Dong & Yang, 2020): a 4-node DAG with 6 edges x 5 operations.

Node ``j`` sums one operation applied to every earlier node ``i``; the six edges in the standard
order are ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``, and the standard architecture string lists them
node by node::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

In a config the cell is six keys, one per edge (``model.cell.edge_1_0`` ...), so that a strategy
changes one edge at a time. 5**6 = 15,625 cells. Pure Python: strategies and the tabular
estimator use it without torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

from nas_plugin.space.params import Categorical, SearchSpaceError
from nas_plugin.space.space import SearchSpace

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGE_KEYS: tuple[str, ...] = tuple(f"edge_{j}_{i}" for j, i in EDGES)
DEFAULT_PREFIX = "model.cell"


def to_arch_str(ops: Sequence[str]) -> str:
    """The standard string of a cell given its six operations in edge order."""
    if len(ops) != len(EDGES):
        raise SearchSpaceError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} operations")
    for op in ops:
        if op not in OPS:
            raise SearchSpaceError(f"NB201 operation {op!r} is unknown; allowed: {list(OPS)}")
    nodes = []
    for node in (1, 2, 3):
        parts = [f"{ops[k]}~{i}" for k, (j, i) in enumerate(EDGES) if j == node]
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


def from_arch_str(arch_str: str) -> tuple[str, ...]:
    """The six operations (edge order) of a standard NB201 string; a clear error if malformed."""
    nodes = arch_str.strip().split("+")
    expected = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
    if len(nodes) != 3:
        raise SearchSpaceError(f"NB201 string {arch_str!r} must have 3 nodes: {expected}")
    ops = []
    for node, text in enumerate(nodes, start=1):
        parts = [p for p in text.split("|") if p]
        if len(parts) != node:
            raise SearchSpaceError(f"NB201 string {arch_str!r}: node {node} needs {node} edges")
        for source, part in enumerate(parts):
            op, _, index = part.partition("~")
            if op not in OPS or index != str(source):
                raise SearchSpaceError(
                    f"NB201 string {arch_str!r}: {part!r} should be <op>~{source} with op in "
                    f"{list(OPS)}"
                )
            ops.append(op)
    return tuple(ops)


def search_space(prefix: str = DEFAULT_PREFIX, ops: Sequence[str] = OPS) -> SearchSpace:
    """The cell as a search space: one categorical parameter per edge under ``prefix``."""
    return SearchSpace([Categorical(f"{prefix}.{key}", tuple(ops)) for key in EDGE_KEYS])


def arch_str_from_values(values: Mapping[str, object], prefix: str = DEFAULT_PREFIX) -> str:
    """The string of a cell given as ``{prefix.edge_j_i: op}`` (a decoded candidate)."""
    try:
        return to_arch_str([str(values[f"{prefix}.{key}"]) for key in EDGE_KEYS])
    except KeyError as err:
        raise SearchSpaceError(f"NB201 cell is missing edge {err.args[0]!r}") from err


def arch_str_from_cell(cell: Mapping[str, object]) -> str:
    """The string of a cell config ``{edge_j_i: op}`` (e.g. ``cfg.model.cell``)."""
    try:
        return to_arch_str([str(cell[key]) for key in EDGE_KEYS])
    except KeyError as err:
        raise SearchSpaceError(f"NB201 cell is missing edge {err.args[0]!r}") from err


def all_arch_strs() -> Iterator[str]:
    """All 15,625 cells, in the order of ``itertools.product`` over the edges."""
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        yield to_arch_str(ops)
