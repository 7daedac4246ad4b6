"""New candidates from the strategy: duplicates answered from the book, an optional pre-screen.

One job: :meth:`Proposer.next` returns up to ``wanted`` encodings never trained before and not
running now. A candidate already evaluated is not trained again: the strategy hears its known
score. With a pre-screen, the strategy fills pools and only the top of each comes back.
"""

from __future__ import annotations

from collections.abc import Callable

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.space import Encoding
from nas_plugin.strategies import Strategy

# Consecutive already-seen proposals after which a strategy counts as exhausted.
MAX_DUPLICATE_PROPOSALS = 100

Propose = Callable[[int, set[Encoding]], list[Encoding]]
# (propose pools, wanted, reject) -> the screened candidates (see SearchAids.next_candidates).
Screen = Callable[[Propose, int, Callable[[Encoding], None]], list[Encoding]]


class Proposer:
    def __init__(
        self,
        strategy: Strategy,
        seen: dict[Encoding, TrialRecord],
        screen: Screen | None = None,
    ) -> None:
        self.strategy = strategy
        self.seen = seen
        self.screen = screen

    def next(self, wanted: int, running: set[Encoding] | None = None) -> list[Encoding]:
        if self.screen is None:
            return self.propose(wanted, running)
        # Pre-screen: pools from the strategy, only the top of each is trained; a screened-out
        # candidate is told as None, the answer for a failed trial.
        return self.screen(
            lambda pool, exclude: self.propose(pool, (running or set()) | exclude),
            wanted,
            lambda encoding: self.strategy.tell(encoding, None),
        )

    def propose(self, wanted: int, running: set[Encoding] | None = None) -> list[Encoding]:
        batch: list[Encoding] = []
        duplicates = 0
        running = running or set()
        while len(batch) < wanted and duplicates < MAX_DUPLICATE_PROPOSALS:
            candidate = self.strategy.ask()
            if candidate is None:
                break
            if candidate in self.seen or candidate in batch or candidate in running:
                # Identical candidates are never trained twice: the strategy hears the known score.
                duplicates += 1
                if candidate in self.seen:
                    self.strategy.tell(candidate, self.seen[candidate].score)
                continue
            duplicates = 0
            batch.append(candidate)
        return batch
