"""A warm start around any strategy: earlier observations told first, given candidates asked first.

Transfer between searches (TransferNAS-style) needs two things from a strategy and nothing
strategy-specific: being told results it did not propose (``tell`` already takes any encoding:
evolution adds them to its population, BO to its surrogate's data, local search climbs from the
best), and proposing given candidates before its own. This wrapper does both, so every strategy
gets warm starts without knowing about them. Encodings and numbers only, like every strategy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from nas_plugin.space import Encoding
from nas_plugin.strategies.base import Score, Strategy


class WarmStarted(Strategy):
    """``inner`` told ``observations`` (in order) at once; ``first`` asked before ``inner``."""

    def __init__(
        self,
        inner: Strategy,
        observations: Sequence[tuple[Encoding, Score | None]] = (),
        first: Sequence[Encoding] = (),
    ) -> None:
        super().__init__(inner.space, inner.seed)
        self.inner = inner
        # Reported as the inner strategy in every tag and param: the wrapper is no strategy.
        self.name = inner.name
        self.multi_objective = inner.multi_objective
        for encoding, score in observations:
            inner.tell(encoding, score)
        self._first = deque(first)

    def ask(self) -> Encoding | None:
        if self._first:
            return self._first.popleft()
        return self.inner.ask()

    def tell(self, encoding: Encoding, score: Score | None) -> None:
        super().tell(encoding, score)
        self.inner.tell(encoding, score)
