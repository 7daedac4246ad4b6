"""An exact resume: a killed sweep's finished trials are replayed, not run again.

One job: :meth:`Replayer.fill` gives a freshly proposed trial the result it had last time (the
strategy, seeded the same, proposes the same candidates in the same order), and the
asynchronous refill takes finished trials in the order the strategy heard them last time.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.sweep.ledger import SweepAbortedError
from nas_plugin.tracking.resume import Replay


class Replayer:
    def __init__(self, replay: Replay | None = None) -> None:
        self.replay = replay

    def fill(self, record: TrialRecord) -> bool:
        """Fill ``record`` from the resumed sweep's finished trial of the same number, if any."""
        known = self.replay.finished.get(record.number) if self.replay else None
        if known is None:
            return False
        if known.encoding != record.encoding:
            raise SweepAbortedError(
                f"cannot resume exactly: trial {record.number} was {known.architecture}, but the "
                f"strategy now proposes {record.architecture}; run with "
                "hydra.sweeper.resume=never to start a new sweep"
            )
        for name in ("status", "value", "score", "metrics", "run_id", "error", "seconds"):
            setattr(record, name, getattr(known, name))
        record.pruned_step = known.pruned_step
        return True

    def tell_order(self) -> deque[int]:
        """Trial numbers in the order the strategy heard them last time (tag ``nas.told``)."""
        return deque(self.replay.tell_order() if self.replay else [])

    def was_told(self, number: int) -> bool:
        return self.replay is not None and number in self.replay.told

    @staticmethod
    def in_flight(in_flight: dict[Future, list[TrialRecord]], number: int) -> Future:
        """The in-flight (replayed, so already done) trial the strategy heard next last time."""
        for future, batch in in_flight.items():
            if batch[0].number == number:
                return future
        running = sorted(batch[0].number for batch in in_flight.values())
        raise SweepAbortedError(
            f"cannot resume exactly: the strategy heard trial {number} next last time, but "
            f"now trials {running} are in flight; run with hydra.sweeper.resume=never to start "
            "a new sweep"
        )
