"""Hierarchical representations (Liu et al., ICLR 2018): motifs of motifs, with motif sharing.

Three levels, each a small DAG whose node ``j`` sums one operation applied to every earlier node
``i`` (node 0 is the input, the last node the output):

- level 1: primitives (:data:`PRIMITIVES`): ``none`` (no edge), ``identity``, ``conv_1x1``,
  ``dw_conv_3x3``, ``sep_conv_3x3``, ``max_pool_3x3``, ``avg_pool_3x3``;
- level 2: motifs ``m0``, ``m1``, ... over primitives, keys ``<prefix>.motifs.m<k>.e_<j>_<i>``;
- level 3: the cell, a DAG over level-2 motifs (or ``none``), keys ``<prefix>.cell.e_<j>_<i>``
  with values ``none`` / ``m<k>``.

Each level-2 motif is defined once and referenced by id from every level-3 edge that uses it
(motif sharing: shared structure, each use has its own weights). An encoding is the usual tuple
of ``(key, value)`` pairs, made canonical by one rule: a motif that no level-3 edge references
does not change the network, so its keys are inactive and dropped (like a conditional
parameter's). Two candidates that differ only in unused motifs are the same encoding, and the
sweeper, which skips encodings it has seen, never trains the network twice. (Relabelled motifs
and isomorphic DAGs are not merged: rare in a space this large.)

:meth:`HierarchicalSpace.mutate` is the paper's mutation: pick a level (2 or 3), at level 2 one
of the motifs in use, then one of its edges, and replace that edge's operation by another one of
the level below. A level-3 edge that starts using a motif which was unused draws its edges at
random (its previous content was never part of the network). Pure Python, as every space.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from nas_plugin.space.params import Categorical, Param, SearchSpaceError, Value
from nas_plugin.space.space import Encoding, SearchSpace

PRIMITIVES: tuple[str, ...] = (
    "none",
    "identity",
    "conv_1x1",
    "dw_conv_3x3",
    "sep_conv_3x3",
    "max_pool_3x3",
    "avg_pool_3x3",
)
NONE = "none"
DEFAULT_PREFIX = "model"
_CELL = re.compile(r"^(?P<prefix>.+)\.cell\.e_(?P<j>\d+)_(?P<i>\d+)$")
_MOTIF = re.compile(r"^(?P<prefix>.+)\.motifs\.m(?P<k>\d+)\.e_(?P<j>\d+)_(?P<i>\d+)$")


def edges(nodes: int) -> list[tuple[int, int]]:
    """A DAG's edges ``(j, i)``, ``i < j``, node by node: ``1<-0, 2<-0, 2<-1, 3<-0, ...``."""
    return [(j, i) for j in range(1, nodes) for i in range(j)]


def motif_id(k: int) -> str:
    return f"m{k}"


def search_space(
    motifs: int = 4, motif_nodes: int = 4, cell_nodes: int = 5, prefix: str = DEFAULT_PREFIX
) -> HierarchicalSpace:
    """The space as code (the same as ``search_space=hierarchical`` with these sizes)."""
    cell_ops = (NONE, *(motif_id(k) for k in range(motifs)))
    params: list[Param] = [
        Categorical(f"{prefix}.cell.e_{j}_{i}", cell_ops) for j, i in edges(cell_nodes)
    ]
    for k in range(motifs):
        for j, i in edges(motif_nodes):
            params.append(Categorical(f"{prefix}.motifs.m{k}.e_{j}_{i}", PRIMITIVES))
    return HierarchicalSpace(params)


class HierarchicalSpace(SearchSpace):
    """A search space whose ``*.cell.e_j_i`` and ``*.motifs.m<k>.e_j_i`` keys form the hierarchy.

    Other keys (a learning rate, say) may sit beside them as ordinary, always-active decisions.
    """

    def __init__(self, params: list[Param]) -> None:
        cell: list[Param] = []
        motif: dict[int, list[Param]] = {}
        other: list[Param] = []
        prefixes: set[str] = set()
        for param in params:
            if (match := _CELL.match(param.name)) is not None:
                cell.append(param)
            elif (match := _MOTIF.match(param.name)) is not None:
                motif.setdefault(int(match["k"]), []).append(param)
            else:
                other.append(param)
                continue
            prefixes.add(match["prefix"])
            self._check_edge(param, int(match["j"]), int(match["i"]))
        if not cell:
            raise SearchSpaceError(
                "search_space=hierarchical needs level-3 keys '<prefix>.cell.e_<j>_<i>' (values "
                "none / m<k>); none were given"
            )
        if len(prefixes) > 1:
            raise SearchSpaceError(
                f"hierarchical keys must share one prefix, got {sorted(prefixes)}"
            )
        self.prefix = prefixes.pop()
        self.motif_keys: dict[str, tuple[str, ...]] = {
            motif_id(k): tuple(p.name for p in motif[k]) for k in sorted(motif)
        }
        allowed_cell = (NONE, *self.motif_keys)
        for param in cell:
            bad = [v for v in param.values() if v not in allowed_cell]
            if bad:
                raise SearchSpaceError(
                    f"search space key '{param.name}': {bad} are not level-2 motifs of this "
                    f"space; allowed: {list(allowed_cell)} (each motif m<k> needs keys "
                    f"'{self.prefix}.motifs.m<k>.e_<j>_<i>')"
                )
        for keys in motif.values():
            for param in keys:
                bad = [v for v in param.values() if v not in PRIMITIVES]
                if bad:
                    raise SearchSpaceError(
                        f"search space key '{param.name}': {bad} are not level-1 primitives; "
                        f"allowed: {list(PRIMITIVES)}"
                    )
        self.cell_keys = tuple(p.name for p in cell)
        self._motif_of = {name: m for m, names in self.motif_keys.items() for name in names}
        # Level 3 first: a motif's keys are active only once the cell's edges are decided.
        ordered = cell + [p for k in sorted(motif) for p in motif[k]] + other
        super().__init__(ordered)

    @staticmethod
    def _check_edge(param: Param, j: int, i: int) -> None:
        if not isinstance(param, Categorical) or param.condition is not None:
            raise SearchSpaceError(
                f"search space key '{param.name}': a hierarchical edge is a plain list of "
                f"operations, got {param.describe()}"
            )
        if not i < j:
            raise SearchSpaceError(
                f"search space key '{param.name}': edge e_{j}_{i} must go from an earlier node "
                f"to a later one (e_<j>_<i> with i < j)"
            )

    # -- structure ------------------------------------------------------------------------------

    def used_motifs(self, decided: Mapping[str, Value]) -> set[str]:
        """The motifs some level-3 edge references."""
        return {str(decided[k]) for k in self.cell_keys if k in decided} - {NONE}

    def is_active(self, param: Param, decided: Mapping[str, Value]) -> bool:
        motif = self._motif_of.get(param.name)
        if motif is None:
            return super().is_active(param, decided)
        return any(decided.get(k) == motif for k in self.cell_keys)

    def size(self) -> float:
        """Distinct networks: level-3 assignments times the contents of the motifs they use."""
        hierarchy = set(self.cell_keys) | set(self._motif_of)
        others = [p for p in self.params if p.name not in hierarchy]
        if not all(p.is_discrete for p in others):
            return float("inf")
        motifs = list(self.motif_keys)
        contents = []
        for m in motifs:
            count = 1
            for key in self.motif_keys[m]:
                count *= len(self[key].values())
            contents.append(count)
        # Count level-3 assignments by the set of motifs they use (a bit mask).
        counts = {0: 1}
        for key in self.cell_keys:
            grown: dict[int, int] = {}
            for mask, n in counts.items():
                for value in self[key].values():
                    bit = 0 if value == NONE else 1 << motifs.index(value)
                    grown[mask | bit] = grown.get(mask | bit, 0) + n
            counts = grown
        total = 0
        for mask, n in counts.items():
            for index, count in enumerate(contents):
                if mask >> index & 1:
                    n *= count
            total += n
        for param in others:
            total *= len(param.values())
        return float(total)

    # -- mutation -------------------------------------------------------------------------------

    def mutate(self, encoding: Encoding, rng: random.Random) -> Encoding:
        """Liu et al.'s mutation: one edge of one motif at one level gets another operation."""
        current = dict(encoding)
        used = self.used_motifs(current)
        # Per level, the motifs (as their edge keys) that have an edge with another choice.
        level3 = [k for k in self.cell_keys if len(self[k].values()) > 1]
        level2 = [
            [k for k in keys if len(self[k].values()) > 1]
            for m, keys in self.motif_keys.items()
            if m in used
        ]
        levels = [
            level for level in ([level3] if level3 else [], [m for m in level2 if m]) if level
        ]
        hierarchy = set(self.cell_keys) | set(self._motif_of)
        others = [
            p
            for p in self.params
            if p.name in current
            and p.name not in hierarchy
            and (not p.is_discrete or len(p.values()) > 1)
        ]
        if not levels and not others:
            return encoding
        if rng.randrange(len(levels) + len(others)) >= len(levels):
            # A key beside the hierarchy (a learning rate, say): changed as any decision is.
            param = rng.choice(others)
            if param.is_discrete:
                current[param.name] = rng.choice(
                    [v for v in param.values() if v != current[param.name]]
                )
            else:
                current[param.name] = param.sample(rng)
            return self._resolve(current, rng)
        motif = rng.choice(rng.choice(levels))
        key = rng.choice(motif)
        current[key] = rng.choice([v for v in self[key].values() if v != current[key]])
        return self._resolve(current, rng)


__all__ = ["PRIMITIVES", "HierarchicalSpace", "edges", "motif_id", "search_space"]
