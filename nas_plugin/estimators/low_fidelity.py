"""``low_fidelity``: rank candidates by a cheaper training run.

Fewer epochs, a fraction of the training set, and/or a lower input resolution. Each setting is
written to a key of the app's config (``keys``), so a foreign app maps them onto its own names;
a setting left null is not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown

DEFAULT_KEYS = {
    "epochs": "train.epochs",
    "data_fraction": "train.train_fraction",
    "resolution": "task.resolution",
}


class LowFidelity(Estimator):
    name = "low_fidelity"

    def __init__(
        self,
        epochs: int | None = 1,
        data_fraction: float | None = None,
        resolution: int | None = None,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = {"epochs": epochs, "data_fraction": data_fraction, "resolution": resolution}
        self.keys = {**DEFAULT_KEYS, **dict(keys or {})}
        self._validate()

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> LowFidelity:
        reject_unknown(cls.name, options, ["epochs", "data_fraction", "resolution", "keys"])
        return cls(**options)

    def _validate(self) -> None:
        unknown = sorted(set(self.keys) - set(DEFAULT_KEYS))
        if unknown:
            raise EstimatorError(
                f"estimator 'low_fidelity': keys has unknown setting(s) {unknown}; "
                f"allowed: {sorted(DEFAULT_KEYS)}"
            )
        for setting in ("epochs", "resolution"):
            value = self.settings[setting]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise EstimatorError(
                    f"estimator 'low_fidelity': {setting}={value!r} must be a positive integer "
                    "or null"
                )
        fraction = self.settings["data_fraction"]
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction <= 1
        ):
            raise EstimatorError(
                f"estimator 'low_fidelity': data_fraction={fraction!r} must be in (0, 1] or null"
            )
        if all(v is None for v in self.settings.values()):
            raise EstimatorError(
                "estimator 'low_fidelity': epochs, data_fraction and resolution are all null; "
                "set at least one (or use estimator=full)"
            )

    def overrides(self) -> dict[str, Any]:
        return {
            self.keys[setting]: value
            for setting, value in self.settings.items()
            if value is not None
        }

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **{k: v for k, v in self.settings.items() if v is not None}}
