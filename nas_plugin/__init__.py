"""nas_plugin: Neural Architecture Search as a Hydra sweeper, with every trial in MLflow.

Heavy libraries (torch, mlflow) are imported by the modules that need them, never here, so that
Hydra's plugin discovery and the pure-Python strategies stay fast to import.
"""

from pathlib import Path

__version__ = "0.1.0"


def config_dir() -> Path:
    """The folder holding our config groups: inside the wheel, or the repo's ``conf/``."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


def log_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy re-export
    """Log a torch model to the active trial run so the sweep can register it.

    See :func:`nas_plugin.tracking.model_logging.log_model`.
    """
    from nas_plugin.tracking.model_logging import log_model as _log_model

    return _log_model(*args, **kwargs)


def report(step, value, *, max_step=None) -> bool:  # noqa: ANN001 - thin lazy re-export
    """Report a trial's intermediate value (per epoch); True if the sweep's pruner says stop.

    A no-op returning False outside a NAS sweep. See :func:`nas_plugin.pruning.channel.report`.
    """
    from nas_plugin.pruning.channel import report as _report

    return _report(step, value, max_step=max_step)
