"""A real MLflow tracking server over HTTP, restarted in the middle of a sweep."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import clean_env, run_app

pytestmark = pytest.mark.e2e

READY = "Application startup complete"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_command(root: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]


def _wait_ready(proc: subprocess.Popen, deadline_s: float = 120) -> None:
    """Read the server's log until it says it is up (no polling, no sleeping)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            break
        if READY in line:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return
    proc.kill()
    raise RuntimeError("mlflow server did not start")


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = _free_port()
    command = _server_command(tmp_path, port)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    _wait_ready(proc)
    pid_file = tmp_path / "restarted.pid"
    yield f"http://127.0.0.1:{port}", command, proc.pid, pid_file
    proc.terminate()
    proc.wait(timeout=30)
    restarted = pid_file.read_text().split() if pid_file.exists() else []
    for pid in map(int, restarted):
        try:
            os.killpg(pid, signal.SIGTERM)  # the trial started it in a session of its own
        except ProcessLookupError:
            pass


# Trial 1 restarts the tracking server under the running sweep: it stops it and starts a new
# one on the same port and store, then returns at once; its final logging, and the sweep's next
# calls, meet a server that is still starting.
APP = """
import json
import os
import signal
import subprocess

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    mlflow.log_metric("before_restart", 1.0)
    if HydraConfig.get().job.num == 1:
        os.kill(cfg.server.pid, signal.SIGTERM)
        new = subprocess.Popen(json.loads(cfg.server.command), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(cfg.server.pid_file, "a") as handle:
            handle.write(f"{new.pid}\\n")
    return {"score": -abs(cfg.x - 5)}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
x: 0
server: {{pid: {pid}, pid_file: '{pid_file}', command: '{command}'}}
hydra:
  sweeper:
    n_trials: 4
    objective: {{metric: score}}
    mlflow: {{tracking_uri: '{uri}', experiment: over-http}}
    params:
      x: {{low: 0, high: 9}}
"""


def test_sweep_over_http_survives_a_server_restart(write_app, mlflow_server):
    import json

    uri, command, pid, pid_file = mlflow_server
    cwd = write_app(
        APP, CONFIG.format(pid=pid, pid_file=pid_file, uri=uri, command=json.dumps(command))
    )
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    assert pid_file.exists(), "the server was not restarted"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("over-http")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "nas.trial" in r.data.tags]
    assert sorted(int(r.data.tags["nas.trial"]) for r in children) == [0, 1, 2, 3]
    for child in children:
        assert child.data.tags["nas.status"] == "ok"
        assert {"score", "before_restart"} <= set(child.data.metrics)
        files = {a.path for a in client.list_artifacts(child.info.run_id, "trial")}
        assert "trial/config.yaml" in files  # artifacts travel over HTTP too
    parent = next(r for r in runs if r.data.tags.get("nas.sweep") == "parent")
    assert parent.info.status == "FINISHED"
    assert not (cwd / "mlflow.db").exists(), "nothing may fall back to a local store"


# Trial 2 takes the server down for good (SIGKILL of its whole process group) the first time
# round. MLflow's retry window is made short, as a user would export it.
GONE_APP = """
import os

os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                  MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
import pathlib
import signal

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    mlflow.log_metric("before", 1.0)
    marker = pathlib.Path(cfg.marker)
    if HydraConfig.get().job.num == 2 and not marker.exists():
        marker.write_text("server killed")
        os.killpg(int(pathlib.Path(cfg.server_pid).read_text()), signal.SIGKILL)
    return {"score": -abs(cfg.x - 5)}


if __name__ == "__main__":
    main()
"""

GONE_CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
x: 0
marker: '{marker}'
server_pid: '{server_pid}'
hydra:
  sweeper:
    n_trials: 4
    objective: {{metric: score}}
    mlflow: {{tracking_uri: '{uri}', experiment: server-gone}}
    params:
      x: {{low: 0, high: 9}}
"""


def test_server_gone_for_good_stops_the_sweep_clearly_and_keeps_finished_trials(
    write_app, tmp_path_factory
):
    from mlflow.tracking import MlflowClient

    store = tmp_path_factory.mktemp("store")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    pid_file = store / "server.pid"
    proc = subprocess.Popen(
        _server_command(store, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        cwd=store,
        start_new_session=True,  # the trial kills the server with all its workers
    )
    try:
        _wait_ready(proc)
        pid_file.write_text(str(proc.pid))
        marker = store / "killed"
        cwd = write_app(GONE_APP, GONE_CONFIG.format(marker=marker, server_pid=pid_file, uri=uri))
        first = run_app(cwd, "train.py", "-m")
        assert marker.exists(), first.output
        assert first.proc.returncode != 0
        assert (
            f"MLflow tracking store '{uri}' (hydra.sweeper.mlflow.tracking_uri) stopped "
            "answering during the sweep" in first.output
        ), first.output
        assert "Connection refused" in first.output
        assert "the 2 trial(s) that finished before are in the store" in first.output
        assert "Traceback" not in first.output

        # What reached the server before it died is all in its store (read back directly:
        # restarting the server on it and resuming was checked too, but costs half a minute).
        client = MlflowClient(f"sqlite:///{store / 'server.db'}")
        exp = client.get_experiment_by_name("server-gone")
        runs = client.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("nas.sweep") == "parent"]
        assert parent.info.status == "RUNNING"  # so the same command resumes it
        done = {int(r.data.tags["nas.trial"]): r for r in runs if "nas.trial" in r.data.tags}
        assert sorted(done) == [0, 1, 2], "no trial may be launched into a dead store"
        for number in (0, 1):
            assert done[number].info.status == "FINISHED"
            assert done[number].data.tags["nas.status"] == "ok"
            assert {"score", "before"} <= set(done[number].data.metrics)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
