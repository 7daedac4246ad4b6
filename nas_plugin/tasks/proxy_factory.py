"""Our tasks' zero-cost model factory (the default ``factory`` of ``estimator=zero_cost`` and of
the zero-cost pre-screen): the trial config's ``model.kind`` says which task's factory builds
the untrained network and its minibatches.

- ``autodeeplab``: segmentation (:func:`~nas_plugin.tasks.dense_proxy.segmentation_proxy_inputs`);
- ``spinenet``: detection (:func:`~nas_plugin.tasks.dense_proxy.detection_proxy_inputs`);
- any other: image classification (:func:`~nas_plugin.tasks.vision_proxy.proxy_inputs`).

An app with a task of its own names its own factory (see :mod:`nas_plugin.proxies.factory`).

:func:`recommended_proxy` is the pre-screen's ``proxy: auto`` for these tasks.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# The proxy with the best measured rank correlation with the trained objective, per model.kind:
# NASWOT on segmentation (rho 0.64) and detection (0.70), where synflow is useless or backwards
# (0.05, -0.29; tests/benchmarks/dense_proxies.py); synflow on classification (0.77 on the
# NB201 CIFAR-10 table, nas_plugin/data/README.md).
RECOMMENDED_PROXY = {"autodeeplab": "naswot", "spinenet": "naswot"}
CLASSIFICATION_PROXY = "synflow"


def recommended_proxy(cfg: Any) -> str:
    """The zero-cost proxy to rank this trial config's task by (its ``model.kind``)."""
    kind = (cfg.get("model") or {}).get("kind")
    return RECOMMENDED_PROXY.get(kind, CLASSIFICATION_PROXY)


def proxy_inputs(
    cfg: Any, batch_size: int, batches: int, seed: int
) -> tuple[nn.Module, list[Any], list[Any]]:
    """(model, input batches, target batches) of the trial config ``cfg``, from its task's
    factory."""
    kind = (cfg.get("model") or {}).get("kind")
    # Imported on use: the detection factory pulls in torchmetrics and pycocotools.
    if kind == "autodeeplab":
        from nas_plugin.tasks.dense_proxy import segmentation_proxy_inputs as build
    elif kind == "spinenet":
        from nas_plugin.tasks.dense_proxy import detection_proxy_inputs as build
    else:
        from nas_plugin.tasks.vision_proxy import proxy_inputs as build
    return build(cfg, batch_size, batches, seed)
