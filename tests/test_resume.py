"""Exact resume: SIGKILL the sweep mid-trial, run the same command again, lose nothing."""

from __future__ import annotations

import signal

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e

# Trial 3 kills the whole sweep (the basic launcher runs trials in the sweeper's process) the
# first time round: a real SIGKILL in the middle of a sweep, at a known point, with no waiting.
APP = """
import os
import pathlib
import signal

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    marker = pathlib.Path(cfg.kill_marker)
    if HydraConfig.get().job.num == 3 and not marker.exists():
        marker.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return -((cfg.model.width - 40) ** 2) / 100 + cfg.model.depth


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/strategy: evolution
  - _self_
model: {{width: 8, depth: 1}}
kill_marker: {marker}
hydra:
  sweeper:
    n_trials: 9
    seed: 5
    strategy: {{population_size: 3, sample_size: 2}}
    mlflow: {{experiment: resumable}}
    params:
      model.width: {{low: 4, high: 96, step: 4}}
      model.depth: {{low: 1, high: 6}}
"""


def _trials(result):
    parent, children = result.runs("resumable")
    by_status: dict[str, list] = {}
    for child in children:
        by_status.setdefault(child.data.tags["nas.status"], []).append(child)
    return parent, by_status


def test_killed_sweep_resumes_exactly_where_it_stopped(write_app, tmp_path_factory):
    cwd = write_app(APP, CONFIG.format(marker=tmp_path_factory.mktemp("m") / "killed"))
    sweep_dir = cwd / "sweep"
    first = run_app(cwd, "train.py", "-m", f"hydra.sweep.dir={sweep_dir}")
    assert first.proc.returncode == -signal.SIGKILL
    parent, trials = _trials(first)
    assert parent.info.status == "RUNNING"
    assert sorted(int(c.data.tags["nas.trial"]) for c in trials["ok"]) == [0, 1, 2]
    (killed,) = trials["running"]
    assert killed.data.tags["nas.trial"] == "3"
    # The killed sweep's directory gets damaged too: a truncated multirun.yaml, a half-written
    # job dir, one of a trial that never started, junk. Resume reads MLflow, not this dir.
    saved = (sweep_dir / "multirun.yaml").read_text()
    (sweep_dir / "multirun.yaml").write_text(saved[: len(saved) // 3])
    killed_job = sweep_dir / "3" / ".hydra" / "config.yaml"
    killed_job.write_text("model:\n  width: [unclosed")
    (sweep_dir / "5" / ".hydra").mkdir(parents=True)
    (sweep_dir / "5" / ".hydra" / "overrides.yaml").write_text("- model.wid")
    (sweep_dir / "core.1234").write_bytes(b"\x00\xff garbage")

    second = run_app(cwd, "train.py", "-m", f"hydra.sweep.dir={sweep_dir}")  # the same command
    assert second.proc.returncode == 0, second.output
    assert (sweep_dir / "multirun.yaml").read_text() == saved
    assert "unclosed" not in killed_job.read_text()
    assert (sweep_dir / "5" / ".hydra" / "config.yaml").exists()
    assert "Resuming the unfinished sweep" in second.output
    resumed_parent, trials = _trials(second)  # still exactly one parent run
    assert resumed_parent.info.run_id == parent.info.run_id
    assert resumed_parent.info.status == "FINISHED"
    ok = trials["ok"]
    numbers = sorted(int(c.data.tags["nas.trial"]) for c in ok)
    assert numbers == list(range(9)), "every trial exactly once, numbering continued"
    assert len({c.data.tags["nas.encoding"] for c in ok}) == 9, "no candidate trained twice"
    (interrupted,) = trials["interrupted"]
    assert interrupted.info.run_id == killed.info.run_id
    assert interrupted.info.status == "KILLED"
    client = second.client()
    rerun = next(c for c in ok if c.data.tags["nas.trial"] == "3")

    def overrides(run):
        return open(client.download_artifacts(run.info.run_id, "trial/overrides.txt")).read()

    assert overrides(rerun) == overrides(killed)
    # Runs 0-2 were not trained again: they are the same MLflow runs as before the kill.
    before = {c.info.run_id for c in _trials(first)[1]["ok"]}
    assert before <= {c.info.run_id for c in ok}

    # The search continued rather than restarted: an uninterrupted sweep with the same seed
    # proposes exactly the same candidates in the same order.
    marker = tmp_path_factory.mktemp("m2") / "killed"
    marker.write_text("never kill")
    reference_cwd = tmp_path_factory.mktemp("reference")
    (reference_cwd / "train.py").write_text((cwd / "train.py").read_text())
    (reference_cwd / "config.yaml").write_text(CONFIG.format(marker=marker))
    reference = run_app(reference_cwd, "train.py", "-m")
    assert reference.proc.returncode == 0, reference.output
    _, reference_trials = _trials(reference)

    def sequence(runs):
        return [
            c.data.tags["nas.encoding"]
            for c in sorted(runs, key=lambda c: int(c.data.tags["nas.trial"]))
        ]

    assert sequence(ok) == sequence(reference_trials["ok"])


def test_resume_never_starts_afresh_and_must_fails_without_a_sweep(write_app, tmp_path_factory):
    cwd = write_app(APP, CONFIG.format(marker=tmp_path_factory.mktemp("m") / "killed"))
    assert run_app(cwd, "train.py", "-m").proc.returncode == -signal.SIGKILL
    fresh = run_app(cwd, "train.py", "-m", "hydra.sweeper.resume=never")
    assert fresh.proc.returncode == 0, fresh.output
    client = fresh.client()
    exp = client.get_experiment_by_name("resumable")
    parents = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("nas.sweep") == "parent"
    ]
    assert sorted(p.info.status for p in parents) == ["FINISHED", "RUNNING"]

    # A sweep dir that cannot be one stops the sweep before any trial, saying why.
    blocked = cwd / "blocked"
    blocked.write_text("a file, not a directory")
    third = run_app(cwd, "train.py", "-m", f"hydra.sweep.dir={blocked}")
    assert third.proc.returncode != 0
    assert f"hydra.sweep.dir='{blocked}' exists and is not a directory" in third.output
    assert "Traceback" not in third.output

    other = write_app(APP, CONFIG.format(marker=tmp_path_factory.mktemp("m3") / "x"))
    must = run_app(
        other,
        "train.py",
        "-m",
        "hydra.sweeper.resume=must",
        "hydra.sweeper.mlflow.experiment=nothing-here",
    )
    assert must.proc.returncode != 0
    assert "hydra.sweeper.resume=must, but no unfinished sweep" in must.output


# Asynchronous refill with 2 joblib workers: results arrive in an order set by timing (trial 0
# is slow, so trial 1 finishes first). Trial 7 kills the whole sweep the first time round:
# the sweeper's process, then its workers (this one last), as when the machine is lost.
ASYNC_APP = """
import os
import pathlib
import signal
import time

import hydra
from hydra.core.hydra_config import HydraConfig

os.environ.setdefault("SWEEPER_PID", str(os.getpid()))  # the joblib workers inherit it


def descendants(pid):
    parents = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_the_sweep():
    sweeper = int(os.environ["SWEEPER_PID"])
    others = descendants(sweeper)
    os.kill(sweeper, signal.SIGKILL)
    for pid in others:
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    number = HydraConfig.get().job.num
    time.sleep(1.0 if number == 0 else 0.05 * ((cfg.model.width // 4 + cfg.model.depth) % 5))
    marker = pathlib.Path(cfg.kill_marker)
    if number == 7 and not marker.exists():
        marker.write_text("killed once")
        kill_the_sweep()
    return -((cfg.model.width - 40) ** 2) / 100 + cfg.model.depth


if __name__ == "__main__":
    main()
"""

ASYNC_ARGS = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.batch_size=2")


def test_killed_async_sweep_replays_results_in_the_order_the_strategy_heard_them(
    write_app, tmp_path_factory
):
    cwd = write_app(ASYNC_APP, CONFIG.format(marker=tmp_path_factory.mktemp("m") / "killed"))
    first = run_app(cwd, "train.py", "-m", *ASYNC_ARGS)
    assert first.proc.returncode == -signal.SIGKILL, first.output
    parent, trials = _trials(first)
    finished = {int(c.data.tags["nas.trial"]): c for c in trials["ok"]}
    # A trial that finished as the sweep died was never heard, so it has no position.
    heard = sorted(
        (int(c.data.tags["nas.told"]), n) for n, c in finished.items() if "nas.told" in c.data.tags
    )
    assert [position for position, _ in heard] == list(range(len(heard)))
    assert len(heard) >= 5
    order = [n for _, n in heard]
    assert order != sorted(order), "results must have arrived out of trial order"
    assert 7 not in finished

    second = run_app(cwd, "train.py", "-m", *ASYNC_ARGS)  # the same command
    assert second.proc.returncode == 0, second.output
    assert "Resuming the unfinished sweep" in second.output
    resumed_parent, trials = _trials(second)
    assert resumed_parent.info.run_id == parent.info.run_id
    ok = trials["ok"]
    assert sorted(int(c.data.tags["nas.trial"]) for c in ok) == list(range(9))
    assert len({c.data.tags["nas.encoding"] for c in ok}) == 9, "no candidate trained twice"
    # Finished trials were replayed, not run again; had the strategy heard them in another
    # order, it would have proposed other candidates for them and the sweep would have stopped.
    assert {c.info.run_id for c in finished.values()} <= {c.info.run_id for c in ok}
    told = sorted(int(c.data.tags["nas.told"]) for c in ok)
    assert told == list(range(9)), "every result heard exactly once, in a recorded order"
