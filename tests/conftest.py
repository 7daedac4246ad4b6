"""Shared helpers: run a Hydra app as a real subprocess and read back what MLflow stored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests where CUDA is not available (CI, CPU machines)."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run nox -s gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _mlflow_state_per_test(monkeypatch: pytest.MonkeyPatch):
    """Undo what an in-process test leaves in MLflow's globals: ``set_tracking_uri`` and
    ``set_experiment`` (which also export MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID) would
    otherwise point the next test on the same xdist worker at an experiment its store lacks."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@dataclass
class AppRun:
    cwd: Path
    proc: subprocess.CompletedProcess

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.cwd / 'mlflow.db'}"

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def runs(self, experiment: str):
        """(parent run, trial runs sorted by trial number) of the experiment's only sweep."""
        parent, _, trials = sweep_runs(self.client(), experiment, self.output)
        return parent, trials


def sweep_runs(client, experiment: str, output: str = ""):
    """(parent run, search runs by index then start, trial runs by number) of the experiment's
    only sweep; search runs are one-shot strategies' (tag ``nas.role=search``)."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing; output:\n{output}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nas.sweep") == "parent"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    searches = sorted(
        (r for r in kids if r.data.tags.get("nas.role") == "search"),
        key=lambda r: (int(r.data.tags["nas.search_index"]), r.info.start_time),
    )
    trials = sorted(
        (r for r in kids if "nas.trial" in r.data.tags), key=lambda r: int(r.data.tags["nas.trial"])
    )
    assert len(searches) + len(trials) == len(kids), [r.data.tags for r in kids]
    return parents[0], searches, trials


def assert_plots(client, run_id: str, *names: str) -> None:
    """The parent run has these PNGs under ``plots/`` (nas_plugin.sweep.plots), each a valid
    image: the PNG signature, and PIL reads it."""
    from PIL import Image

    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    assert set(names) <= logged, logged
    for name in names:
        path = Path(client.download_artifacts(run_id, f"plots/{name}"))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100, (name, image.size)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["HYDRA_FULL_ERROR"] = "0"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_without_gpu(code: str, cwd: Path, timeout: int = 300):
    """Run ``code`` in a fresh Python process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``), as
    a CPU-only user's machine would; returns the JSON its last output line prints."""
    import json

    env = {**clean_env(), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_only_predictions(tracking_uri: str, model_uri: str, inputs, cwd: Path) -> dict:
    """Load ``model_uri`` in a fresh process that sees no GPU, with mlflow.pyfunc and with
    mlflow.pytorch (map_location cpu), and predict ``inputs`` with both: their output shapes,
    how often their argmax agree, and mlflow.pytorch's argmax per input."""
    import numpy as np

    np.save(cwd / "inputs.npy", np.asarray(inputs, dtype=np.float32))
    check = (
        "import json, mlflow, mlflow.pytorch, numpy as np, torch\n"
        "assert not torch.cuda.is_available()\n"
        f"mlflow.set_tracking_uri({tracking_uri!r})\n"
        "x = np.load('inputs.npy')\n"
        f"pyfunc = np.asarray(mlflow.pyfunc.load_model({model_uri!r}).predict(x))\n"
        # A torch.export (pt2) module refuses .eval(); log_model saved it in eval mode already.
        f"net = mlflow.pytorch.load_model({model_uri!r}, map_location='cpu')\n"
        "with torch.no_grad():\n"
        "    torch_out = net(torch.from_numpy(x)).numpy()\n"
        "print(json.dumps({'pyfunc': list(pyfunc.shape), 'torch': list(torch_out.shape),\n"
        "    'agree': float((pyfunc.argmax(1) == torch_out.argmax(1)).mean()),\n"
        "    'argmax': torch_out.argmax(1).tolist()}))\n"
    )
    return run_without_gpu(check, cwd)


def run_app(cwd: Path, script: str, *args: str, timeout: int = 600) -> AppRun:
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return AppRun(cwd, proc)


def run_app_in_process(cwd: Path, script: str, *args: str) -> AppRun:
    """Run ``script`` (a Hydra app) as ``python script *args`` would, in this process: for runs
    the sweeper must refuse before any trial, and sweeps of a few trivial trials on the basic
    launcher. It is the same Hydra command line, config composition, plugin discovery, sweeper
    and MLflow store; only a new interpreter's seconds of imports are saved. Hydra's exit status
    and everything printed or logged come back as an ``AppRun``."""
    import contextlib
    import io
    import logging
    import runpy

    from hydra.core.global_hydra import GlobalHydra
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    stdout, stderr = io.StringIO(), io.StringIO()
    argv, workdir = sys.argv, os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLFLOW_")}
    os.environ["HYDRA_FULL_ERROR"], status = "0", 0
    # As a new interpreter starts: no Hydra left initialised by an earlier test's compose(), no
    # tracking URI or experiment set by an earlier in-process test.
    GlobalHydra.instance().clear()
    mlflow_state = utils._tracking_uri, fluent._active_experiment_id
    utils._tracking_uri, fluent._active_experiment_id = None, None
    try:
        os.chdir(cwd)
        sys.argv = [str(script), *args]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(workdir)
        sys.argv = argv
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level  # Hydra configures logging per run
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.update(env)
        utils._tracking_uri, fluent._active_experiment_id = mlflow_state
    done = subprocess.CompletedProcess(sys.argv, status, stdout.getvalue(), stderr.getvalue())
    return AppRun(Path(cwd), done)


def predict_in_new_process(
    tracking_uri: str, model_uri: str, inputs, labels, cwd: Path
) -> tuple[tuple[int, ...], float]:
    """(output shape, accuracy) of ``model_uri`` loaded with ``mlflow.pyfunc`` in a fresh Python
    process (nothing of the sweep imported), predicting ``inputs`` against ``labels``."""
    import json

    import numpy as np

    np.save(cwd / "inputs.npy", np.asarray(inputs, dtype=np.float32))
    np.save(cwd / "labels.npy", np.asarray(labels))
    check = (
        "import json, mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model({model_uri!r})\n"
        "out = np.asarray(model.predict(np.load('inputs.npy')))\n"
        "hits = out.argmax(1) == np.load('labels.npy')\n"
        "print(json.dumps([list(out.shape), float(hits.mean())]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=cwd,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    shape, accuracy = json.loads(out.stdout.strip().splitlines()[-1])
    return tuple(shape), accuracy


def boxes_from_registry(tracking_uri: str, model_uri: str, images, cwd: Path):
    """``model_uri`` (a detection model) loaded with ``mlflow.pyfunc`` in a fresh Python process,
    predicting ``images``: (its raw N x D x 6 output as a tensor, its rows as torchmetrics-style
    predictions {boxes, scores, labels} per image, padding dropped)."""
    import numpy as np
    import torch

    np.save(cwd / "images.npy", np.asarray(images, dtype=np.float32))
    code = (
        "import mlflow.pyfunc, numpy as np\n"
        f"mlflow.set_tracking_uri({tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model({model_uri!r})\n"
        "np.save('out.npy', np.asarray(model.predict(np.load('images.npy'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = torch.from_numpy(np.load(cwd / "out.npy"))
    found = out[..., 5] >= 0
    predictions = [
        {"boxes": rows[keep, :4], "scores": rows[keep, 4], "labels": rows[keep, 5].long()}
        for rows, keep in zip(out, found, strict=True)
    ]
    return out, predictions


def perturb_supernet(net) -> None:
    """Give an elastic supernet non-trivial weights in place: random kernel transforms and
    BatchNorm statistics and affines (fresh ones are identities, which hide slicing bugs)."""
    import torch

    with torch.no_grad():
        for transform in net.transforms.values():
            transform.add_(0.1 * torch.randn_like(transform))
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()


@pytest.fixture
def write_app(tmp_path: Path):
    """Write a foreign Hydra app (``train.py`` + ``config.yaml``) into a fresh temp dir."""

    def write(code: str, config: str) -> Path:
        (tmp_path / "train.py").write_text(textwrap.dedent(code))
        (tmp_path / "config.yaml").write_text(textwrap.dedent(config))
        return tmp_path

    return write


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models (and our search jobs, train.num_threads: 1)
    run fastest so; several threads compete with each other on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
