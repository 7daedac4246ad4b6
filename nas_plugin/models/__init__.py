"""Model builders: turn a trial's ``model`` config into a randomly initialised ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from nas_plugin.models.autodeeplab import build_autodeeplab
from nas_plugin.models.compound import build_compound
from nas_plugin.models.hierarchical import build_hierarchical
from nas_plugin.models.mbconv import build_mbconv
from nas_plugin.models.nb201 import build_nb201
from nas_plugin.models.spinenet import build_spinenet
from nas_plugin.models.timm_family import build_timm, build_timm_family
from nas_plugin.models.transformer import build_transformer

Builder = Callable[[Mapping[str, Any], int, int], nn.Module]

BUILDERS: dict[str, Builder] = {
    "mbconv": build_mbconv,
    "timm_family": build_timm_family,
    "timm": build_timm,
    "nb201": build_nb201,
    "transformer": build_transformer,
    "hierarchical": build_hierarchical,
    "compound": build_compound,
    "autodeeplab": build_autodeeplab,
    "spinenet": build_spinenet,
}


def build_model(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build the model ``model_cfg["kind"]`` names; ``model_cfg`` is a DictConfig or a dict."""
    kind = model_cfg.get("kind")
    if kind not in BUILDERS:
        raise ValueError(
            f"model.kind = {kind!r} is not allowed: expected one of {', '.join(BUILDERS)}"
        )
    return BUILDERS[kind](model_cfg, num_classes, in_chans)


__all__ = ["BUILDERS", "build_model"]
