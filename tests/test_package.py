"""The installable package: a wheel built from the repository runs from outside it; the shipped configs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

import metarl
from metarl import config as C

ENTRY_POINTS = ("metarl-train", "metarl-show-env", "metarl-show-results")


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, target dir) of ``pip install --no-deps --target`` of a wheel built without network."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build the wheel without network")
    if int(importlib.metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("setuptools < 77 (pyproject.toml needs >= 77): cannot build the wheel without network")
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(ROOT / "metarl", source / "metarl", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("configs", "experiments"):  # their YAML files are package data
        shutil.copytree(ROOT / folder, source / folder)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    built = pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(source),
                cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("metarl-*.whl")
    target = tmp / "site"
    done = pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp)
    assert done.returncode == 0, done.stderr
    return wheel, target


@pytest.mark.slow
def test_wheel_has_the_version_the_kernel_source_and_entry_points(installed):
    wheel, _ = installed
    assert wheel.name.startswith(f"metarl-{metarl.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = z.read(entry).decode()
    assert "metarl/backends/kernel/driver.cpp" in names and "metarl/backends/kernel/rule.h" in names
    assert "metarl/cli/train.py" in names
    assert all(f"{name} = " in scripts for name in ENTRY_POINTS)


@pytest.mark.slow
@pytest.mark.long(60)
def test_installed_commands_run_outside_the_repository_and_find_shipped_files_by_name(installed, tmp_path):
    wheel, target = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {"metarl/configs/base.yaml", "metarl/experiments/pendulum_swingup/model.yaml",
            "metarl/experiments/pendulum_balance/pendulum_balance.yaml"} <= names
    env = dict(os.environ, PYTHONPATH=str(target), SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg")

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(target / "bin" / args[0]), *args[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    code = ("import metarl; print(metarl.__file__); print(metarl.envs.make('Pendulum', 1).state.shape); "
            "print(metarl.shipped.config('configs/base.yaml'))")
    lazy = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert lazy.returncode == 0, lazy.stderr
    where, _, base = lazy.stdout.splitlines()
    assert Path(where).parent == target / "metarl" and base == str(target / "metarl" / "configs" / "base.yaml")
    train = command("metarl-train", "tiny", "--out", "run", "--generations", "2")  # a shipped config by name
    assert train.returncode == 0, train.stderr
    assert "done: 2 generations" in train.stdout and (tmp_path / "run" / "best_model.yaml").is_file()
    show = command("metarl-show-results", "run", "--plot", "curve.png")
    assert show.returncode == 0, show.stderr
    assert (tmp_path / "curve.png").is_file()
    shown = command("metarl-show-results", "pendulum_swingup", "--evaluate", "--episodes", "2", "--steps", "20")
    assert shown.returncode == 0, shown.stderr
    assert "learned" in shown.stdout
    helped = command("metarl-train", "--help")
    assert "metarl-train base" in helped.stdout and "python3 run_config.py" not in helped.stdout
    usage = command("metarl-show-env", "--seconds", "-1", "Pendulum")
    assert usage.returncode == 2 and usage.stderr.strip() == "error: --seconds must be > 0, got -1.0 (see --help)"


def test_base_config_is_the_swingup_recipe_and_original_configs_agree():
    base = C.load(ROOT / "configs/base.yaml")
    swingup = C.load(ROOT / "experiments/pendulum_swingup/pendulum_swingup.yaml")
    assert base.replace(device=swingup.device, runtime=swingup.runtime) == swingup
    assert base.runtime.native is None  # runs (with a warning) where no compiler is installed
    nested, flat = C.load(ROOT / "configs/original.yaml"), C.load(ROOT / "configs/original_flat.yaml")
    # The flat file is the original's, unchanged: device cuda, seed null, parameters at their defaults.
    assert (flat.device, flat.seed) == ("cuda", None)
    assert nested.replace(device="cuda", seed=None, env=flat.env) == flat
    assert flat.env.params == {} and nested.env.params == {"length": 1.0, "mass": 1.0, "gravity": 9.81,
                                                           "damping": 0.1}  # Pendulum's defaults
    assert nested.ga.population_size == 10000 and nested.ga.lifetime_steps == 2000
