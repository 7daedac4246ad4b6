"""PostgreSQL as the MLflow backend: parallel trials log straight into a real PostgreSQL server.

The fixture creates a throwaway cluster (initdb) in a temp dir and starts it on a free port on
127.0.0.1. PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user
(Debian's package creates it), else ``nobody``. The test skips only when the PostgreSQL server
binaries are absent (``.ci/run`` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e


def _server_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(p.split("/")[-2]))]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> dict:
    """subprocess arguments that drop root for PostgreSQL ("cannot be run as root")."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists")


@pytest.fixture
def postgres_uri():
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them")
    import psycopg  # SQLAlchemy's driver for postgresql:// URIs

    as_user = _run_as()
    # Not under pytest's tmp_path: that is private to root, and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, port = root / "data", _free_port()

    def pg(*args: str) -> None:
        out = subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
            **as_user,
        )
        assert out.returncode == 0, f"{args[0]} failed:\n{out.stdout}\n{out.stderr}"

    # A throwaway cluster: durability settings off for speed; only TCP on 127.0.0.1.
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
    try:
        pg("initdb", "-D", str(data), "-U", "nas", "--auth=trust", "-E", "UTF8", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        with psycopg.connect(
            host="127.0.0.1", port=port, user="nas", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://nas@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


APP = """
import hydra
import mlflow


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    for epoch in range(5):
        mlflow.log_metric("val_loss", 1.0 / (epoch + 1 + cfg.x), step=epoch)
    return {"score": -abs(cfg.x - 7)}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/launcher: joblib
  - _self_
x: 0
hydra:
  launcher: {{n_jobs: 2}}
  sweeper:
    n_trials: 4
    batch_size: 2
    objective: {{metric: score}}
    mlflow: {{tracking_uri: '{uri}', experiment: on-postgres}}
    params:
      x: {{low: 0, high: 20}}
"""


def test_parallel_sweep_on_postgresql_loses_no_write(write_app, postgres_uri):
    cwd = write_app(APP, CONFIG.format(uri=postgres_uri))
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    assert not (cwd / "mlflow.db").exists(), "nothing may fall back to a local store"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(postgres_uri)
    exp = client.get_experiment_by_name("on-postgres")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("nas.sweep") == "parent")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_finished"] == 4
    children = [r for r in runs if "nas.trial" in r.data.tags]
    assert sorted(int(c.data.tags["nas.trial"]) for c in children) == list(range(4))
    # Two trials wrote at a time from two processes: every write of every trial is there.
    assert len({c.data.tags["nas.worker"] for c in children}) >= 2
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["nas.status"] == "ok"
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
        assert "score" in child.data.metrics
        files = {a.path for a in client.list_artifacts(child.info.run_id, "trial")}
        assert "trial/config.yaml" in files
