"""New candidates from the strategy: duplicates answered from the book, an optional pre-screen.

One job: :meth:`Proposer.next` returns up to ``wanted`` encodings never trained before and not
running now. A candidate already evaluated is not trained again: the strategy hears its known
score. With a ``network_key`` (a space's ``equivalent`` hook), candidates that build the same
network count as the same candidate. With a pre-screen, the strategy fills pools and only the
top of each comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.space import Encoding
from nas_plugin.strategies import Strategy

log = logging.getLogger(__name__)

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
        network_key: Callable[[Encoding], Hashable] | None = None,
    ) -> None:
        self.strategy = strategy
        self.seen = seen
        self.screen = screen
        self.network_key = network_key
        self._keys: dict[Encoding, Hashable] = {}  # network_key of every encoding met

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
        key = self._key
        seen = {key(encoding): record for encoding, record in self.seen.items()}
        taken = {key(encoding) for encoding in running or ()}
        batch: list[Encoding] = []
        duplicates = 0
        while len(batch) < wanted and duplicates < MAX_DUPLICATE_PROPOSALS:
            candidate = self.strategy.ask()
            if candidate is None:
                break
            network = key(candidate)
            if network in seen or network in taken:
                # One network is never trained twice: the strategy hears the known score.
                duplicates += 1
                if network in seen:
                    known = seen[network]
                    if known.encoding != candidate:
                        log.info(
                            "A proposal builds the same network as trial %d: not trained, the "
                            "strategy hears its score",
                            known.number,
                        )
                    self.strategy.tell(candidate, known.score)
                continue
            duplicates = 0
            batch.append(candidate)
            taken.add(network)
        return batch

    def _key(self, encoding: Encoding) -> Hashable:
        if self.network_key is None:
            return encoding
        if encoding not in self._keys:
            self._keys[encoding] = self.network_key(encoding)
        return self._keys[encoding]
