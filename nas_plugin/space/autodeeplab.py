"""Auto-DeepLab's two-level architecture as plain values: an NB201 cell, a path of moves and the
decoder's skip (the keys ``model.cell.edge_<j>_<i>``, ``model.path.layer_<k>``,
``model.decoder.skip`` of ``search_space=autodeeplab``).

A one-shot search reports its derived architecture as a *cell* mapping with the cell's edges
(``edge_1_0`` ...), ``path.layer_<k>`` and ``decoder.skip``, and tags its run with the string
:func:`to_arch_str` writes::

    <NB201 string> path=down,down,same,same skip=true

Pure Python: the strategies and the resume of a sweep read it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas_plugin.space import nb201
from nas_plugin.space.params import SearchSpaceError

MOVES: tuple[str, ...] = ("down", "same", "up")
SKIP_KEY = "decoder.skip"


def path_key(layer: int) -> str:
    """``path.layer_<layer>`` (1-based), relative to ``model``."""
    return f"path.layer_{layer}"


def derived_cell(ops: Sequence[str], moves: Sequence[str], skip: bool) -> dict[str, Any]:
    """The search result's cell mapping: edges, ``path.layer_<k>`` moves, ``decoder.skip``."""
    cell: dict[str, Any] = dict(zip(nb201.EDGE_KEYS, ops, strict=True))
    cell.update({path_key(k): str(m) for k, m in enumerate(moves, start=1)})
    cell[SKIP_KEY] = bool(skip)
    return cell


def to_arch_str(ops: Sequence[str], moves: Sequence[str], skip: bool) -> str:
    """The NB201 string of the cell, then ``path=<moves>`` and ``skip=<true|false>``."""
    bad = [m for m in moves if m not in MOVES]
    if bad or not moves:
        raise SearchSpaceError(f"path {list(moves)!r}: expected one or more moves from {MOVES}")
    return f"{nb201.to_arch_str(ops)} path={','.join(moves)} skip={str(bool(skip)).lower()}"


def is_arch_str(text: str) -> bool:
    """Whether ``text`` is an Auto-DeepLab string (not a bare NB201 cell)."""
    return " path=" in text


def from_arch_str(text: str) -> dict[str, Any]:
    """The cell mapping (:func:`derived_cell`) of a :func:`to_arch_str` string."""
    parts = text.strip().split()
    if len(parts) != 3 or not parts[1].startswith("path=") or not parts[2].startswith("skip="):
        raise SearchSpaceError(
            f"Auto-DeepLab string {text!r} must be '<NB201 cell> path=<move>,... skip=<true|false>'"
        )
    ops = nb201.from_arch_str(parts[0])
    moves = parts[1].removeprefix("path=").split(",")
    skip = parts[2].removeprefix("skip=")
    if any(m not in MOVES for m in moves) or skip not in ("true", "false"):
        raise SearchSpaceError(
            f"Auto-DeepLab string {text!r}: moves must be from {MOVES}, skip true or false"
        )
    return derived_cell(ops, moves, skip == "true")


def values_of(cell: Mapping[str, Any], model_prefix: str) -> dict[str, Any]:
    """``{model_prefix}.cell.<edge>``, ``{model_prefix}.path.layer_<k>``,
    ``{model_prefix}.decoder.skip`` of a cell mapping (its keys relative to the model)."""
    out = {f"{model_prefix}.cell.{k}": cell[k] for k in nb201.EDGE_KEYS}
    out.update({f"{model_prefix}.{k}": v for k, v in cell.items() if k not in nb201.EDGE_KEYS})
    return out
