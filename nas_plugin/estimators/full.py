"""``full``: train every candidate to the budget the app's config gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas_plugin.estimators.base import Estimator, reject_unknown


class FullTraining(Estimator):
    name = "full"

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> FullTraining:
        reject_unknown(cls.name, options, [])
        return cls()
