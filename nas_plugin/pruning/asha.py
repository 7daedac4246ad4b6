"""Asynchronous successive halving (ASHA; Li et al., 2020), in its stopping form.

Rungs sit at ``min_step * eta**k``. When a trial's reports cross a rung, it continues only if
its value there is in the top ``1/eta`` (at least the top one) of all values recorded at that
rung so far, its own included; otherwise it stops. There is no batch barrier: a trial is judged
as soon as it reaches a rung, against whoever got there before it, so the first trials to reach
a rung always go on and the cut tightens as results accumulate.
"""

from __future__ import annotations

from collections.abc import Sequence

from nas_plugin.pruning.base import (
    CONTINUE,
    Curve,
    Decision,
    PruningRule,
    check_int,
    check_optional_int,
    first_at_or_after,
)


class ASHARule(PruningRule):
    name = "asha"

    def __init__(self, min_step: int = 1, eta: int = 3, max_step: int | None = None) -> None:
        # The first rung (in the steps the trial reports: epochs for our pipelines).
        self.min_step = check_int(self.name, "min_step", min_step, 1)
        # Keep the top 1/eta at each rung; rungs are eta times apart.
        self.eta = check_int(self.name, "eta", eta, 2)
        # The step budget; rungs at or past it are not judged (the trial is done there).
        # null: the budget the trial's loop reports (report(..., max_step=)), if any.
        self.max_step = check_optional_int(self.name, "max_step", max_step, 1)

    def rungs_crossed(self, previous: int | None, step: int) -> list[int]:
        """Rung steps in ``(previous, step]``."""
        out, rung = [], self.min_step
        while rung <= step:
            if previous is None or rung > previous:
                out.append(rung)
            rung *= self.eta
        return out

    def decide(self, own: Curve, others: Sequence[Curve], max_step: int | None) -> Decision:
        step, value = own[-1]
        previous = own[-2][0] if len(own) > 1 else None
        budget = self.max_step or max_step
        crossed = [r for r in self.rungs_crossed(previous, step) if budget is None or r < budget]
        if not crossed:
            return CONTINUE
        rung = crossed[-1]  # reports that jump several rungs are judged at the highest
        peers = [v for curve in others if (v := first_at_or_after(curve, rung)) is not None]
        keep = max(1, (len(peers) + 1) // self.eta)
        better = sorted((v for v in peers if v > value), reverse=True)
        if len(better) >= keep:
            return Decision(
                True,
                f"asha: {value:.4g} at rung step {rung} is not in the top {keep} of "
                f"{len(peers) + 1} (cut-off {better[keep - 1]:.4g})",
            )
        return CONTINUE
