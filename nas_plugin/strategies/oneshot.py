"""``darts``, ``gdas``, ``proxyless`` (gradient-based) and ``enas`` (an RL controller on shared
weights): one-shot search as a sweep's strategy.

These methods are not ask/tell searches: one optimisation over a supernet yields one
architecture. In a sweep they take two phases (see :mod:`nas_plugin.oneshot.job`):

1. the **search runs**: ``searches`` (an option, default 1) independent search jobs (search
   ``k`` seeded with the app's ``seed + k``), each running the bilevel search on the app's task
   and reporting its derived cell (MLflow child run ``search-<k>``, tag ``nas.role=search``).
   DARTS-family results vary a lot by seed, so "best of N searches" is the usual protocol;
2. the **derived trials**: the sweeper hands each search's cell to this strategy
   (:meth:`derive`, in search order); the distinct cells are its candidates, each trained from
   scratch once as a normal trial with the sweep's estimator (two searches that derive the same
   cell share its trial).

The space is NB201's cell (``search_space=nb201``) or Auto-DeepLab's (``search_space=autodeeplab``:
the cell, ``model.path.layer_<k>``, ``model.decoder.skip``), searched there by darts (first or
second order), gdas, proxyless and enas (no latency term there); the searched cell then also
holds the path and the app's decoder skip. On SpineNet's (``search_space=spinenet``: the block
levels, types and inputs and the pyramid's fusion) gdas, proxyless and enas search a single path
per step and darts (first or second order) the relaxation of every key at once; the cell then
holds every block's fields and the fusion.

Here, as for every strategy, only encodings and numbers: the options are validated before the
sweep starts and passed to the search jobs as plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nas_plugin.space import Encoding, SearchSpace, autodeeplab, spinenet
from nas_plugin.space.nb201 import DEFAULT_PREFIX, EDGE_KEYS, OPS
from nas_plugin.space.params import Categorical
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int


@dataclass
class SearchOptions:
    """The training options every one-shot search takes (the shared block of the strategy
    YAMLs); :meth:`from_options` validates them with errors that name the option."""

    # Independent searches per sweep (search k seeded with the app's seed + k). An option of
    # its own, not n_trials: an app's n_trials is sized for multi-trial strategies (100 in
    # conf/nb201.yaml), and 100 bilevel searches is never what switching strategy meant.
    searches: int = 1
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, strategy: str, options: Mapping[str, Any]) -> SearchOptions:
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise StrategyError(
                f"strategy '{strategy}': unknown option(s) {unknown}; shared one-shot options: "
                f"{list(cls.names())}"
            )
        values = {**asdict(cls()), **options}
        checks = {
            "searches": positive_int,
            "epochs": positive_int,
            "batch_size": positive_int,
            "lr": _positive,
            "weight_decay": _non_negative,
            "arch_lr": _positive,
            "arch_weight_decay": _non_negative,
        }
        return cls(**{k: checks[k](strategy, k, v) for k, v in values.items()})


class OneShotStrategy(Strategy):
    """Base of the one-shot strategies: the candidates are the searches' derived cells."""

    #: the sweeper runs the search jobs first and calls :meth:`derive` with each one's cell
    needs_search = True
    #: options taken by every one-shot strategy besides its own (``check_options`` allows them)
    shared_options = SearchOptions.names()

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__(space, seed)
        self.prefix = prefix
        self.space_kind = _check_space(self.name, space, prefix)
        self.options = SearchOptions.from_options(self.name, options)
        self.settings: dict[str, Any] = {"method": self.name, **asdict(self.options)}
        self._candidates: list[Encoding] = []
        self._asked = 0
        self._derived = False

    def search_settings(self) -> dict[str, Any]:
        """Plain settings of the search job (:class:`nas_plugin.oneshot.search.SearchSettings`);
        on ``search_space=spinenet`` also ``choices``: every searched key's values."""
        if self.space_kind == "spinenet":
            choices = {n: list(self.space[n].choices) for n in self.space.names}
            return {**self.settings, "choices": choices}
        return dict(self.settings)

    def derive(self, ops: Mapping[str, Any]) -> Encoding:
        """Add one search's cell ``{edge_j_i: op}`` to the candidates (once, however many
        searches derive it); returns its encoding. On ``search_space=autodeeplab`` the cell
        also holds ``path.layer_<k>`` and ``decoder.skip`` (the app's value, see
        :mod:`nas_plugin.space.autodeeplab`)."""
        if self.space_kind == "spinenet":  # the cell: every architecture key, under model
            model_prefix = self.prefix.rpartition(".")[0]
            values = {f"{model_prefix}.{k}": v for k, v in ops.items()}
            missing = [n for n in self.space.names if n not in values]
            if missing:
                raise StrategyError(
                    f"strategy '{self.name}': the search's architecture has no value for {missing}"
                )
            encoding = self.space.encode({n: values[n] for n in self.space.names})
        elif self.space_kind == "autodeeplab":
            model_prefix = self.prefix.rpartition(".")[0]
            values = autodeeplab.values_of(ops, model_prefix)
            missing = [n for n in self.space.names if n not in values]
            # A derived move the space has no key for would be lost: the trial would take the
            # app's move there instead (decoder.skip is the app's value anyway).
            unused = [n for n in values if n not in self.space.names and ".path." in n]
            if missing or unused:
                raise StrategyError(
                    f"strategy '{self.name}': the search's path (model.layers moves) does not "
                    f"match the search space's path keys: no value for {missing}, no key for "
                    f"{unused}"
                )
            encoding = self.space.encode({n: values[n] for n in self.space.names})
        else:
            encoding = self.space.encode({f"{self.prefix}.{k}": ops[k] for k in EDGE_KEYS})
        self._derived = True
        if encoding not in self._candidates:
            self._candidates.append(encoding)
        return encoding

    @property
    def n_candidates(self) -> int:
        """The distinct derived cells (the sweep's trials)."""
        return len(self._candidates)

    def ask(self) -> Encoding | None:
        if not self._derived:
            raise StrategyError(
                f"strategy '{self.name}' has no candidate: its search job has not run"
            )
        if self._asked >= len(self._candidates):
            return None
        self._asked += 1
        return self._candidates[self._asked - 1]


class Darts(OneShotStrategy):
    name = "darts"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        order: int = 1,
        warmup_epochs: int = 0,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__(space, seed, prefix, **options)
        self.settings["warmup_epochs"] = _warmup(self.name, warmup_epochs, self.options.epochs)
        if isinstance(order, bool) or order not in (1, 2):
            raise StrategyError(f"strategy 'darts': order={order!r} must be 1 or 2")
        self.settings["order"] = order


class Gdas(OneShotStrategy):
    name = "gdas"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        tau_max: float = 10.0,
        tau_min: float = 0.1,
        latency_weight: float = 0.0,
        latency_beta: float = 0.6,
        latency_table: str | None = None,
        warmup_epochs: int = 0,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__(space, seed, prefix, **options)
        self.settings["warmup_epochs"] = _warmup(self.name, warmup_epochs, self.options.epochs)
        if latency_weight != 0 and self.space_kind != "nb201":
            raise StrategyError(_no_latency_term(self.name, latency_weight))
        tau_max = _positive(self.name, "tau_max", tau_max)
        tau_min = _positive(self.name, "tau_min", tau_min)
        if tau_min > tau_max:
            raise StrategyError(
                f"strategy 'gdas': tau_min={tau_min} must not exceed tau_max={tau_max}"
            )
        self.settings.update(
            tau_max=tau_max,
            tau_min=tau_min,
            latency_weight=_non_negative(self.name, "latency_weight", latency_weight),
            latency_beta=_non_negative(self.name, "latency_beta", latency_beta),
            latency_table=_table(self.name, latency_table),
        )


class Proxyless(OneShotStrategy):
    name = "proxyless"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        latency_weight: float = 0.0,
        latency_table: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__(space, seed, prefix, **options)
        if latency_weight != 0 and self.space_kind != "nb201":
            raise StrategyError(_no_latency_term(self.name, latency_weight))
        self.settings["latency_weight"] = _non_negative(self.name, "latency_weight", latency_weight)
        self.settings["latency_table"] = _table(self.name, latency_table)


# ENAS's reward: auto (loss on search_space=autodeeplab, else score), the task's score, or
# exp(-loss) (see nas_plugin/oneshot/settings.py).
REWARDS = ("auto", "score", "loss")


class Enas(OneShotStrategy):
    """ENAS (Pham et al. 2018): an LSTM controller trained by REINFORCE on the shared supernet
    (see :mod:`nas_plugin.oneshot.enas`); ``arch_lr`` is the controller's Adam lr."""

    name = "enas"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        lstm_size: int = 64,
        tanh_constant: float = 1.1,
        temperature: float = 5.0,
        entropy_weight: float = 1e-4,
        baseline_decay: float = 0.99,
        controller_steps: int = 20,
        derive_samples: int = 100,
        reward: str = "auto",
        prefix: str = DEFAULT_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__(space, seed, prefix, **options)
        name = self.name
        if reward not in REWARDS:
            raise StrategyError(
                f"strategy 'enas': reward={reward!r} is not allowed: expected one of "
                f"{', '.join(REWARDS)}"
            )
        if reward == "auto":
            # A segmentation child's minibatch mIoU sits at what predicting background scores
            # until the shared weights learn the shapes, so it gives the controller no signal:
            # measured, 3 seeds, the derived nets' test mIoU 0.388 with "loss", 0.319 with "score".
            reward = "loss" if self.space_kind == "autodeeplab" else "score"
        if isinstance(baseline_decay, bool) or not (
            isinstance(baseline_decay, int | float) and 0 <= baseline_decay < 1
        ):
            raise StrategyError(
                f"strategy 'enas': baseline_decay={baseline_decay!r} must be a number in [0, 1)"
            )
        self.settings.update(
            lstm_size=positive_int(name, "lstm_size", lstm_size),
            tanh_constant=_positive(name, "tanh_constant", tanh_constant),
            temperature=_positive(name, "temperature", temperature),
            entropy_weight=_non_negative(name, "entropy_weight", entropy_weight),
            baseline_decay=float(baseline_decay),
            controller_steps=positive_int(name, "controller_steps", controller_steps),
            derive_samples=positive_int(name, "derive_samples", derive_samples),
            reward=reward,
        )


def _check_space(name: str, space: SearchSpace, prefix: str) -> str:
    """``nb201`` (the cell's six edges under ``prefix``) or ``autodeeplab`` (those, the
    ``path.layer_<k>`` moves next to them, optionally ``decoder.skip``); else a StrategyError."""
    wanted = [f"{prefix}.{key}" for key in EDGE_KEYS]

    def categorical(n: str, choices: set[Any]) -> bool:
        return isinstance(space[n], Categorical) and set(space[n].choices) == choices

    has_cell = all(n in space.names for n in wanted) and all(
        categorical(n, set(OPS)) for n in wanted
    )
    if has_cell and sorted(space.names) == sorted(wanted):
        return "nb201"
    model = prefix.rpartition(".")[0]
    rest = [n for n in space.names if n not in wanted]
    layers = [n for n in rest if n.startswith(f"{model}.path.layer_")]
    path_keys = [f"{model}.path.layer_{k}" for k in range(1, len(layers) + 1)]
    skip = f"{model}.decoder.skip"
    if (
        has_cell
        and layers
        and sorted(layers) == sorted(path_keys)
        and all(categorical(n, set(autodeeplab.MOVES)) for n in layers)
        and set(rest) - set(layers) <= {skip}
        and (skip not in rest or categorical(skip, {False, True}))
    ):
        return "autodeeplab"
    if space.names and all(
        spinenet.ARCH_KEY.fullmatch(n) and isinstance(space[n], Categorical) for n in space.names
    ):
        return "spinenet"
    raise StrategyError(
        f"strategy '{name}' searches through a supernet: it needs "
        f"hydra/sweeper/search_space=nb201 (keys {wanted[0]} ... {wanted[-1]}, operations "
        f"from {list(OPS)}) or search_space=autodeeplab (those, {model}.path.layer_1 ... "
        f"with moves from {list(autodeeplab.MOVES)}, optionally {skip}) and nothing else, or "
        f"search_space=spinenet ({model}.blocks.block_<k>.{{level,type,"
        f"input_1,input_2}}, {model}.pyramid.fusion); the search space has {list(space.names)}"
    )


def _no_latency_term(strategy: str, value: Any) -> str:
    return (
        f"strategy '{strategy}': latency_weight={value!r} is not allowed with "
        "search_space=autodeeplab or spinenet (the latency table is the NB201 classification "
        "network's): expected 0"
    )


def _warmup(strategy: str, value: Any, epochs: int) -> int:
    """Epochs of weight training before the first architecture step: at least one epoch must
    be left to search."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < epochs:
        raise StrategyError(
            f"strategy '{strategy}': warmup_epochs={value!r} must be an integer from 0 to "
            f"epochs - 1 = {epochs - 1} (the epochs that only train the weights)"
        )
    return value


def _positive(strategy: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise StrategyError(f"strategy '{strategy}': {key}={value!r} must be a number > 0")
    return float(value)


def _non_negative(strategy: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise StrategyError(f"strategy '{strategy}': {key}={value!r} must be a number >= 0")
    return float(value)


def _table(strategy: str, path: Any) -> str | None:
    """A saved latency table: checked to exist before the sweep (read by the search job)."""
    if path is None:
        return None
    if not isinstance(path, str) or not Path(path).is_file():
        raise StrategyError(
            f"strategy '{strategy}': latency_table={path!r} must be null (measure the table on "
            "this machine) or the path of a saved search/latency_lut.json"
        )
    return str(Path(path).resolve())
