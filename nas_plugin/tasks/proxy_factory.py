"""Our tasks' zero-cost model factory (the default ``factory`` of ``estimator=zero_cost`` and of
the zero-cost pre-screen): the trial config's ``model.kind`` says which task's factory builds
the untrained network and its minibatches.

- ``autodeeplab``: segmentation (:func:`~nas_plugin.tasks.dense_proxy.segmentation_proxy_inputs`);
- ``spinenet``: detection (:func:`~nas_plugin.tasks.dense_proxy.detection_proxy_inputs`);
- any other: image classification (:func:`~nas_plugin.tasks.vision_proxy.proxy_inputs`).

An app with a task of its own names its own factory (see :mod:`nas_plugin.proxies.factory`).
"""

from __future__ import annotations

from typing import Any

from torch import nn


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
