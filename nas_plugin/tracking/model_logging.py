"""Log a trained PyTorch model to the active MLflow run, ready to load with ``mlflow.pyfunc``."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from nas_plugin.hardware.device import on_cpu

MODEL_URI_TAG = "nas.model_uri"

log = logging.getLogger(__name__)


def log_model(
    model: torch.nn.Module, input_example: np.ndarray | torch.Tensor, name: str = "model"
) -> str:
    """Log ``model`` to the active MLflow run and return its model URI.

    Call this at the end of your training function, inside the trial's run (the NAS sweeper
    starts one for every trial), with a small batch of real inputs::

        from nas_plugin.tracking.model_logging import log_model

        uri = log_model(model, x_val[:4])  # x_val: float32 array (N, C, H, W)
        # later, anywhere: mlflow.pyfunc.load_model(uri).predict(x) -> (N, num_classes)

    What it does:

    - runs ``model`` in eval mode, without gradients, on ``input_example`` (a batch of at least
      2 inputs) and stores the inferred input/output signature and the example with the model;
    - saves the model, in eval mode, with ``mlflow.pytorch.log_model`` as a ``torch.export``
      graph ("pt2"): it loads without your model's Python classes, and accepts any batch size
      with the example's other dimensions. A model that ``torch.export`` cannot trace (e.g.
      Python control flow on tensor values) is pickled instead, with a warning: loading it then
      needs its classes importable. A model class with ``supports_torch_export = False`` (our
      detectors: NMS keeps a data-dependent number of boxes) is pickled without the attempt;
    - pins pip requirements without resolving anything over the network: MLflow's defaults
      (torch, cloudpickle), plus, for a pickled model, the installed distributions that define
      its layer classes (e.g. timm);
    - tags the run with ``nas.model_uri`` = the returned URI, which is how the sweeper finds
      each trial's model to register the best one.

    The model's own train/eval state is restored afterwards.

    Raises:
        RuntimeError: no MLflow run is active.
        ValueError: ``input_example`` has fewer than 2 inputs.
    """
    if mlflow.active_run() is None:
        raise RuntimeError(
            "log_model needs an active MLflow run: call it inside a trial launched by the NAS "
            "sweeper, or inside `with mlflow.start_run():`"
        )
    example = _as_numpy(input_example)
    if example.ndim == 0 or example.shape[0] < 2:
        # torch.export makes a size-1 dimension static: the model would only take batches of 1.
        raise ValueError(
            f"input_example has shape {example.shape}: pass a batch of at least 2 inputs "
            "(first dimension) so that the logged model accepts any batch size"
        )
    # Saved in eval mode: MLflow's pyfunc predict does not switch a model to eval itself. From
    # the CPU: MLflow traces torch.export with the example on the CPU, and a pickled CUDA model
    # would not load on a machine without one; the model goes back to its device afterwards.
    with on_cpu(model), _eval_mode(model):
        with torch.no_grad():
            prediction = model(torch.from_numpy(example)).numpy()
        signature = infer_signature(example, prediction)
        if not getattr(model, "supports_torch_export", True):
            # Known untraceable: no attempt, which would cost a trace and print its graph.
            info = _log(model, name, signature, example, "pickle")
        else:
            try:
                info = _log(model, name, signature, example, "pt2")
            except Exception as err:  # torch.export's tracing errors have no common base
                log.warning(
                    "torch.export could not trace the model (%s: %s); logging it pickled "
                    "instead, which needs its classes importable where it is loaded",
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                info = _log(model, name, signature, example, "pickle")
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def _log(
    model: torch.nn.Module, name: str, signature: Any, example: np.ndarray, fmt: str
) -> ModelInfo:
    requirements = list(mlflow.pytorch.get_default_pip_requirements())
    if fmt == "pickle":
        requirements += _class_distributions(model, requirements)
    return mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=requirements,
        serialization_format=fmt,
        # MLflow would reload the saved model and predict the example again: for a torch.export
        # graph that is a third of the logging time of every trial, and its failure is only a
        # warning. A pickle reloads in milliseconds and is the one likelier to fail (its classes
        # must be importable), so it keeps the check; for it the keyword would go to torch.save.
        **({"validate_serving_input": False} if fmt == "pt2" else {}),
    )


def _as_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"input_example must be a numpy array or a tensor, not {type(value)}")
    # pyfunc callers send float32 arrays; a float64 example would give a float64 signature.
    return value.astype(np.float32) if value.dtype == np.float64 else value


class _eval_mode:
    """Eval mode inside the block; restores every submodule's own train/eval flag after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._states = [(m, m.training) for m in model.modules()]
        self._model = model

    def __enter__(self) -> None:
        self._model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self._states:
            module.training = training


def _class_distributions(model: torch.nn.Module, pinned: list[str]) -> list[str]:
    """``dist==version`` for the installed distributions defining the model's module classes."""
    seen = {req.split("==")[0].lower() for req in pinned}
    packages = {type(module).__module__.split(".")[0] for module in model.modules()}
    requirements = []
    for package in sorted(packages - {"torch", "__main__"} - set(sys.builtin_module_names)):
        for dist in _distributions().get(package, []):
            if dist.lower() in seen:
                continue
            seen.add(dist.lower())
            # Drop local labels such as "+cu130": pip cannot install them from an index.
            version = importlib.metadata.version(dist).split("+")[0]
            requirements.append(f"{dist}=={version}")
    return requirements


@functools.cache
def _distributions() -> dict[str, list[str]]:
    # Scanning every installed distribution takes about a second: do it once per process.
    return importlib.metadata.packages_distributions()
