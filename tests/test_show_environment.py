"""show_environment.py end to end (in this process; real processes for Ctrl-C and for no display) and the pygame
renderer it shares with show_results.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from PIL import Image

from metarl import envs
from metarl.analysis.render import MASSES, TORQUE, VIEW_MARGIN, Renderer, play, save_animation
from metarl.errors import UserError

SCRIPT = Path(__file__).resolve().parents[1] / "show_environment.py"
SIZE = 480  # the renderer's default width and height


def script_env() -> dict[str, str]:
    return {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python3 show_environment.py args`` from ``cwd``, in this process (`conftest.run_script`)."""
    return conftest.run_script("show_environment.py", *args, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------- the script

@pytest.mark.parametrize("name, args, frames", [
    ("Pendulum", ["--seconds", "0.5"], 10),  # default dt 0.05
    ("DoublePendulum", ["--seconds", "0.4", "--set", "env.dt=0.02", "--random", "--seed", "3"], 20),
])
def test_save_gif_has_one_frame_per_step(tmp_path: Path, name: str, args: list[str], frames: int) -> None:
    result = run_script(name, *args, "--save", "anim.gif", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote anim.gif" in result.stdout
    with Image.open(tmp_path / "anim.gif") as gif:
        assert gif.format == "GIF" and gif.size == (SIZE, SIZE)
        assert gif.n_frames == frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]  # no temporary file left


def test_save_png_shows_the_configured_initial_state(tmp_path: Path) -> None:
    result = run_script("Pendulum", "--seconds", "0.3", "--set", "env.init=down", "--save", "down.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote down.png" in result.stdout
    with Image.open(tmp_path / "down.png") as png:
        assert png.format == "PNG" and png.size == (SIZE, SIZE)
        pixels = np.asarray(png.convert("RGB"))
    # Hanging at rest: the mass is one rod length (1 m) straight below the pivot at the centre.
    below = round(SIZE / 2 + SIZE / 2 / VIEW_MARGIN)
    assert tuple(pixels[below, SIZE // 2]) == MASSES[0]
    assert tuple(pixels[SIZE - below, SIZE // 2]) != MASSES[0]


def test_unknown_env_name_is_a_one_line_error_listing_names(tmp_path: Path) -> None:
    line = assert_one_line_error(run_script("Cartpole", "--save", "x.gif", cwd=tmp_path))
    assert "Cartpole" in line and "Pendulum" in line and "DoublePendulum" in line
    assert not (tmp_path / "x.gif").exists()


def test_bad_set_key_is_a_one_line_error_naming_the_key(tmp_path: Path) -> None:
    result = run_script("DoublePendulum", "--set", "env.params.lenght1=2", "--save", "x.gif", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert "env.params.lenght1" in line and "length1" in line


def test_window_mode_runs_under_the_dummy_driver(tmp_path: Path) -> None:
    result = run_script("DoublePendulum", "--seconds", "0.3", "--torque", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "showing DoublePendulum" in result.stdout
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.slow
def test_ctrl_c_exits_130_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "Pendulum", "--seconds", "60"], cwd=tmp_path,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "showing Pendulum" in proc.stdout.readline()  # the animation loop has started
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr


# ---------------------------------------------------------------------------- the renderer

def test_headless_frames_follow_the_state_without_a_display() -> None:
    env = envs.make("DoublePendulum", 2, init="down")
    renderer = Renderer(320, 240, headless=True)
    surface = renderer.draw(env, 1, "hello\nworld")
    hanging = renderer.frame()
    assert surface.get_size() == (320, 240)
    assert hanging.shape == (240, 320, 3) and hanging.dtype == np.uint8
    assert renderer.extent == pytest.approx(2 * VIEW_MARGIN)  # two 1 m rods
    assert renderer.poll() is True
    renderer.present(1000.0)  # no window: nothing to wait for
    env.state = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]])
    renderer.draw(env, 1, "hello\nworld")
    assert not np.array_equal(renderer.frame(), hanging)
    renderer.draw(env, 1, "hello\nworld", action=1.0)
    with_arrow = renderer.frame()
    assert (with_arrow == TORQUE).all(axis=2).sum() > 20 and not (hanging == TORQUE).all(axis=2).any()
    assert not pygame_display_initialised()
    renderer.close()
    with pytest.raises(IndexError):
        renderer.draw(env, 2)


def pygame_display_initialised() -> bool:
    import pygame

    return pygame.display.get_init()


def test_window_poll_and_present_under_the_dummy_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import pygame

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = envs.make("Pendulum", 1)
    with Renderer(160, 120, title="test") as renderer:
        assert renderer.poll() is True
        start = time.perf_counter()
        for _ in range(6):
            renderer.draw(env)
            renderer.present(50.0)
        assert time.perf_counter() - start >= 5 / 50  # paced to real time
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
        assert renderer.poll() is False
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        assert renderer.poll() is False
    assert not pygame.display.get_init()


def test_play_records_one_frame_per_step() -> None:
    env = envs.make("Pendulum", 1, init="down")
    actions = []
    frames = play(env, 7, lambda step: actions.append(step) or 1.0, Renderer(64, 64, headless=True), record=True)
    assert len(frames) == 7 and actions == list(range(7))
    assert env.state[0, 1] > 0  # the constant positive torque was applied


def test_save_animation_formats_and_atomic_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(5)]
    save_animation(frames, tmp_path / "a.gif", fps=20)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (16, 12) and gif.info["duration"] == 50
    (tmp_path / "b.png").write_bytes(b"old")
    save_animation(frames, tmp_path / "b.png", fps=20)  # replaces an existing file
    with Image.open(tmp_path / "b.png") as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), frames[-1])
    with pytest.raises(UserError, match=r"\.mp4"):
        save_animation(frames, tmp_path / "c.mp4", fps=20)
    with pytest.raises(ValueError):
        save_animation([frames[0].astype(np.float32)], tmp_path / "d.gif", fps=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "b.png"]


@pytest.mark.slow
def test_no_display_is_one_line_instead_of_an_unseen_window(tmp_path: Path) -> None:
    # No SDL_VIDEODRIVER and no display: pygame would fall back to a driver that draws nowhere.
    done = conftest.run_script(str(SCRIPT), "Pendulum", "--seconds", "60", cwd=tmp_path, env=conftest.NO_DISPLAY)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open a window"), done.stderr
    assert "--save" in lines[0] and "close the window" not in done.stdout
