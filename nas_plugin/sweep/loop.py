"""The plain sweep loop: ask a batch -> launch it -> tell its results, until ``n_trials``.

Knows no Hydra and no MLflow: candidates come from a :class:`~nas_plugin.sweep.proposals.Proposer`,
run through a :class:`~nas_plugin.sweep.trials.Trials`, and are booked in a
:class:`~nas_plugin.sweep.ledger.Ledger`.
"""

from __future__ import annotations

from nas_plugin.sweep.ledger import Ledger
from nas_plugin.sweep.proposals import Proposer
from nas_plugin.sweep.trials import Trials


def run_batches(ledger: Ledger, proposer: Proposer, trials: Trials, batch_size: int) -> None:
    """Batches of up to ``batch_size``; the strategy hears a batch before the next is asked."""
    while ledger.remaining > 0:
        batch = proposer.next(min(batch_size, ledger.remaining))
        if not batch:
            ledger.log_exhausted()
            return
        ledger.conclude(trials.launch(batch, len(ledger.records)))
