"""The ``correlate`` report's command-line options.

Below both :mod:`nas_plugin.cli` and :mod:`nas_plugin.proxies.report`, which share them: the CLI
builds its parser without importing the report (and torch), and the report no longer imports
the CLI (that was an import cycle).
"""

from __future__ import annotations

import argparse

CORRELATE_DESCRIPTION = (
    "Correlate zero-cost proxies with the trained metric of an experiment's latest NAS sweep; "
    "print the table and log it (CSV) and a scatter plot (PNG) to the sweep's parent run."
)


def add_correlate_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options (no torch import here: building the parser must stay instant)."""
    parser.add_argument("--experiment", required=True, help="MLflow experiment of the sweep")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: MLflow's (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--metric", default="val_accuracy", help="default: val_accuracy")
    parser.add_argument(
        "--proxies",
        nargs="+",
        default=None,
        help="names, space- or comma-separated; default: every proxy and the ensemble",
    )
    parser.add_argument(
        "--factory",
        default=None,
        help="'module:function' that rebuilds a trial's model and batch; default: our "
        "pipelines' (nas_plugin.tasks.proxy_factory:proxy_inputs)",
    )
    parser.add_argument("--max-trials", type=int, default=None, help="default: every trial")
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
