"""A latency look-up table of each NB201 operation measured on this machine's CPU (FBNet's
LUT): the expected latency of a cell is then a differentiable sum over its edges.

Only the cells' operations are in the table; the fixed skeleton (stem, reductions, head) adds
the same time to every architecture and has no gradient w.r.t. the architecture.

The table is always measured on the CPU (batch 1, one thread), wherever the search trains
(``train.device``): it models the deployment cost the latency term trades accuracy against,
which for these cells is CPU inference (as the NB201 table's ``lat_ms_*`` columns), and a
saved table (``search.latency_table``) then means the same on any machine. On a GPU, a
single NB201 operation at batch 1 takes about one kernel launch whatever it is, so a GPU table
would not tell the operations apart. The search moves the table's costs to its device.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from nas_plugin.models.nb201 import STAGES, make_op
from nas_plugin.space.nb201 import OPS


@torch.no_grad()
def measure_lut(
    channels: int, resolution: int, repeats: int = 50, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """``{stage: {op: median microseconds}}`` of one operation on one image (batch 1, one
    thread), at each stage's width (C, 2C, 4C) and resolution (halved per stage)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table: dict[str, dict[str, float]] = {}
        for stage in range(STAGES):
            width, size = channels * 2**stage, max(1, resolution // 2**stage)
            x = torch.randn(1, width, size, size)
            row = {"none": 0.0}
            for op in OPS[1:]:
                module = make_op(op, width)
                assert module is not None
                module.eval()
                for _ in range(warmup):
                    module(x)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    module(x)
                    times.append(time.perf_counter() - start)
                row[op] = statistics.median(times) * 1e6
            table[str(stage)] = row
        return table
    finally:
        torch.set_num_threads(threads)


def op_costs(lut: dict[str, dict[str, float]], cells_per_stage: int) -> torch.Tensor:
    """Microseconds each operation adds to the network when placed on one edge of the cell
    (every cell shares the architecture): a vector over :data:`OPS`."""
    return torch.tensor(
        [cells_per_stage * sum(lut[str(s)][op] for s in range(STAGES)) for op in OPS]
    )


def expected_latency(weights: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """The cells' latency in microseconds under edge weights (6 x 5; probabilities or one-hot
    with a straight-through gradient)."""
    return (weights * costs).sum()


def load_lut(path: str) -> dict[str, dict[str, float]]:
    """A table saved by :func:`measure_lut` (``search/latency_lut.json`` of a search run)."""
    table = json.loads(Path(path).read_text())
    for stage in range(STAGES):
        row = table.get(str(stage)) if isinstance(table, dict) else None
        if not isinstance(row, dict) or any(not isinstance(row.get(op), int | float) for op in OPS):
            raise ValueError(
                f"latency table {path!r}: expected {{stage: {{op: microseconds}}}} for stages "
                f"0-{STAGES - 1} and operations {list(OPS)}"
            )
    return {str(s): {op: float(table[str(s)][op]) for op in OPS} for s in range(STAGES)}
