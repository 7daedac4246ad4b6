"""The wheel carries what `pip install` alone needs for `hydra/sweeper=nas` in any app."""

import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_the_plugin_shim_and_the_config_groups(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nas_plugin-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hydra_plugins/nas_plugin_sweeper/nas_sweeper.py" in names
    assert "hydra_plugins/nas_plugin_sweeper/search_path.py" in names
    # hydra_plugins is a namespace package shared with other plugins: no __init__.py of ours.
    assert "hydra_plugins/__init__.py" not in names
    for group, option in [
        ("strategy", "evolution"),
        ("search_space", "mbconv"),
        ("estimator", "low_fidelity"),
    ]:
        assert f"nas_plugin/conf/plugin/hydra/sweeper/{group}/{option}.yaml" in names
    assert "nas_plugin/conf/task/digits.yaml" in names


def test_hydra_discovers_the_sweeper_and_its_groups():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    sweepers = {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    assert "NASSweeper" in sweepers
