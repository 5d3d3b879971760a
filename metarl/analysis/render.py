"""Pygame drawing of a batched pendulum environment, in a window or off screen.

`Renderer` draws one batch element (rods, masses, pivot, a torque arrow and overlay text)
into a surface; `save_animation` writes recorded frames as a GIF or PNG; `play` animates an
environment under a fixed policy (used by ``show_environment.py``).
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# pygame prints a banner on import unless told not to; the scripts' output should stay clean.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def _runtime_dir() -> None:
    """Without ``XDG_RUNTIME_DIR`` (ssh, containers, cron) SDL prints ``error: XDG_RUNTIME_DIR is invalid ...``,
    which reads like an error of metarl's: give it a private directory instead."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"metarl-runtime-{os.getuid() if hasattr(os, 'getuid') else 0}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = str(path)


_runtime_dir()
import pygame  # noqa: E402
import torch  # noqa: E402

from ..errors import UserError  # noqa: E402

if TYPE_CHECKING:
    from ..envs.base import BatchedEnv

BACKGROUND = (250, 250, 247)
REACH = (220, 220, 215)
ROD = (60, 60, 70)
MASSES = ((38, 110, 200), (225, 120, 40))
PIVOT = (20, 20, 20)
TORQUE = (200, 40, 40)
TEXT = (30, 30, 30)
# Default view: the whole reach of the chain plus a margin, in units of the total rod length.
VIEW_MARGIN = 1.15
ANIMATION_SUFFIXES = (".gif", ".png")


# SDL's video drivers that draw nowhere; pygame falls back to one of them where no display can open.
UNSEEN_DRIVERS = ("offscreen", "dummy")


def open_window(width: int, height: int, instead: str, *, endless: bool = False) -> pygame.Surface:
    """A pygame window, or a `UserError` naming ``instead`` (the option that writes a file) where none can
    open: an error from SDL, or a fall-back to a driver that draws nowhere (``offscreen``/``dummy``)
    which the user did not ask for with ``SDL_VIDEODRIVER`` (tests and scripted runs do ask). ``endless``: a
    window that only closing ends (the live replay) is refused on such a driver even when asked for: nobody
    could close it."""
    try:
        pygame.display.init()
        driver = pygame.display.get_driver()
        asked = os.environ.get("SDL_VIDEODRIVER", "").strip().lower()
        if driver in UNSEEN_DRIVERS and driver != asked:
            raise pygame.error(f"no display: SDL fell back to its {driver} driver")
        if driver in UNSEEN_DRIVERS and endless:
            raise pygame.error(f"SDL_VIDEODRIVER={driver} draws nowhere, and this window runs until it is closed")
        return pygame.display.set_mode((width, height))
    except pygame.error as e:
        pygame.display.quit()
        raise UserError(f"cannot open a window ({e}); write a file instead ({instead})") from None


class Renderer:
    """Draws batch elements of an environment; ``headless`` renders off screen only."""

    def __init__(self, width: int = 480, height: int = 480, *, headless: bool = False,
                 extent: float | None = None, title: str = "metarl") -> None:
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be >= 1, got {width}x{height}")
        if extent is not None and not extent > 0:
            raise ValueError(f"extent must be > 0 metres, got {extent}")
        self.width, self.height = width, height
        self.headless = headless
        self.extent = extent
        # Fonts and surfaces need no display, so headless rendering never touches the video driver.
        pygame.font.init()
        self._font = pygame.font.Font(None, max(14, height // 24))
        self._surface = pygame.Surface((width, height))
        self._surface.fill(BACKGROUND)
        self._window: pygame.Surface | None = None
        self._next_present: float | None = None
        if not headless:
            self._window = open_window(width, height, "--save FILE")
            pygame.display.set_caption(title)

    # ------------------------------------------------------------------ drawing

    def draw(self, env: BatchedEnv, index: int = 0, text: str = "", *, action: float | None = None
             ) -> pygame.Surface:
        """Draw batch element ``index`` of ``env``; ``action`` in [-1, 1] adds a torque arrow."""
        if not 0 <= index < env.batch_size:
            raise IndexError(f"index {index} out of range for batch size {env.batch_size}")
        points = env.geometry(index)
        total = sum(math.dist(a, b) for a, b in zip(points, points[1:], strict=False))
        if self.extent is None:
            self.extent = VIEW_MARGIN * total if total > 0 else 1.0
        surface = self._surface
        surface.fill(BACKGROUND)
        scale = self._scale()
        pivot = self._to_screen(points[0])
        pygame.draw.circle(surface, REACH, pivot, max(1, round(total * scale)), width=1)
        if action is not None:
            self._draw_torque(pivot, float(action), 0.2 * self.extent * scale)
        rod_width = max(2, round(0.02 * min(self.width, self.height)))
        screen = [self._to_screen(p) for p in points]
        for a, b in zip(screen, screen[1:], strict=False):
            pygame.draw.line(surface, ROD, a, b, rod_width)
        mass_radius = max(3, round(0.035 * min(self.width, self.height)))
        for i, p in enumerate(screen[1:]):
            pygame.draw.circle(surface, MASSES[i % len(MASSES)], p, mass_radius)
        pygame.draw.circle(surface, PIVOT, pivot, max(2, rod_width))
        self._draw_text(text)
        return surface

    def _scale(self) -> float:
        """Pixels per metre (the extent is set by the first `draw`)."""
        extent = self.extent if self.extent is not None else 1.0
        return 0.5 * min(self.width, self.height) / extent

    def _to_screen(self, point: tuple[float, float]) -> tuple[int, int]:
        # World y points up, screen y points down; the pivot sits at the centre.
        scale = self._scale()
        return (round(self.width / 2 + point[0] * scale), round(self.height / 2 - point[1] * scale))

    def _draw_torque(self, centre: tuple[int, int], action: float, radius: float) -> None:
        """An arc around the pivot, counter-clockwise for positive torque (theta increases)."""
        action = max(-1.0, min(1.0, action))
        if abs(action) < 1e-3 or radius < 4:
            return
        # Starts below the pivot and sweeps up to 3/4 of a turn at full torque.
        start, sweep = -math.pi / 2, 1.5 * math.pi * action
        n = max(2, int(abs(sweep) * 12))
        arc = [(centre[0] + radius * math.cos(start + sweep * k / n),
                centre[1] - radius * math.sin(start + sweep * k / n)) for k in range(n + 1)]
        pygame.draw.lines(self._surface, TORQUE, False, arc, 3)
        end = start + sweep
        tip = arc[-1]
        # Unit tangent in screen coordinates, pointing along the sweep.
        direction = math.copysign(1.0, sweep)
        tx, ty = -math.sin(end) * direction, -math.cos(end) * direction
        nx, ny = -ty, tx
        head = 0.35 * radius
        pygame.draw.polygon(self._surface, TORQUE, [
            (tip[0] + tx * head, tip[1] + ty * head),
            (tip[0] + nx * head * 0.5, tip[1] + ny * head * 0.5),
            (tip[0] - nx * head * 0.5, tip[1] - ny * head * 0.5),
        ])

    def _draw_text(self, text: str) -> None:
        y = 6
        for line in text.splitlines():
            image = self._font.render(line, True, TEXT)
            self._surface.blit(image, (8, y))
            y += image.get_height() + 2

    # ------------------------------------------------------------------ output

    def frame(self) -> np.ndarray:
        """The last drawn frame, ``(H, W, 3)`` uint8."""
        # surfarray indexes pixels as (x, y); images are (row, column).
        return np.ascontiguousarray(pygame.surfarray.array3d(self._surface).transpose(1, 0, 2))

    def poll(self) -> bool:
        """Handle window events; False once the window is closed or Esc / q is pressed."""
        if self._window is None:
            return True
        return window_open()

    def present(self, fps: float) -> None:
        """Show the last frame and wait so that frames follow each other at ``fps``."""
        if self._window is None:
            return
        self._window.blit(self._surface, (0, 0))
        pygame.display.flip()
        now = time.perf_counter()
        period = 1.0 / fps
        # A deadline per frame (not a fixed sleep) keeps real time despite drawing costs;
        # when far behind (e.g. the window was dragged) restart the clock instead of racing.
        if self._next_present is None or now - self._next_present > period:
            self._next_present = now
        self._next_present += period
        wait = self._next_present - time.perf_counter()
        if wait > 0:
            time.sleep(wait)

    def close(self) -> None:
        """Close the window, if any (safe to call twice)."""
        if self._window is not None:
            self._window = None
            pygame.display.quit()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_animation_path(path: str | Path) -> Path:
    """``path`` as a `Path` if `save_animation` can write its format, else `UserError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise UserError(f"{path}: cannot save an animation as {suffix or 'a file without suffix'!r}; "
                        f"use {' or '.join(ANIMATION_SUFFIXES)}")
    return path


def save_animation(frames: Sequence[np.ndarray], path: str | Path, fps: float) -> None:
    """Write ``frames`` (each ``(H, W, 3)`` uint8) as an animated ``.gif`` or the last one as ``.png``.

    The file is written atomically. GIF delays are whole centiseconds, and GIF encoders merge
    identical consecutive frames (adding their delays), so the playing time stays right.
    """
    from PIL import Image

    path = check_animation_path(path)
    if not frames:
        raise ValueError("save_animation needs at least one frame")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    # A unique name in the target folder, so that os.replace is atomic and readers never see
    # half a file; opened with "x" (not mkstemp) so the file gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "xb")
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with f:
            if path.suffix.lower() == ".png":
                Image.fromarray(frames[-1]).save(f, format="PNG")
            else:
                images = [Image.fromarray(frame) for frame in frames]
                images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                               duration=max(10, round(1000 / fps)), loop=0)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({e.strerror or e.__class__.__name__})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def play(env: BatchedEnv, steps: int, policy: Callable[[int], float], renderer: Renderer, *,
         record: bool = False, label: str = "") -> list[np.ndarray]:
    """Step ``env`` ``steps`` times with action ``policy(step)`` for every element, drawing element 0.

    Each step is drawn once, then shown at real time (``1/dt`` frames per second) unless
    ``record``, which collects the frames instead. Stops early when the window is closed.
    Returns the recorded frames (empty unless ``record``).
    """
    dt = env.dt if isinstance(env.dt, float) else float(env.dt[0])  # element 0's step (a dt range: its draw)
    frames: list[np.ndarray] = []
    for step in range(steps):
        if not renderer.poll():
            break
        action = float(policy(step))
        env.step(torch.full((env.batch_size,), action, device=env.device, dtype=env.dtype))
        text = f"{label}\nt = {(step + 1) * dt:.2f} s   action = {action:+.2f}".lstrip("\n")
        renderer.draw(env, 0, text, action=action)
        if record:
            frames.append(renderer.frame())
        else:
            renderer.present(1.0 / dt)
    return frames


def window_open() -> bool:
    """Handle pygame window events; False once the window is closed or Esc / q is pressed."""
    for event in pygame.event.get():
        if event.type == pygame.QUIT:
            return False
        if event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_q):
            return False
    return True
