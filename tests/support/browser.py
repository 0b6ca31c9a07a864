"""A real browser for pages we make: Debian's headless Chromium takes a screenshot,
and the bars it drew are found in the picture by their colours."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CHROMIUM = "chromium"


def screenshot(html_path: Path, png_path: Path, width: int = 1000, height: int = 1200) -> Path:
    """What Chromium draws of ``html_path`` in a window of this size."""
    binary = shutil.which(CHROMIUM)
    assert binary, "Debian's chromium is missing: make test installs it (scripts/get_chromium.sh)"
    proc = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",  # the suite runs as root
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and png_path.exists(), proc.stdout + proc.stderr
    return png_path


@dataclass(frozen=True)
class DrawnBar:
    """A solid horizontal run of one colour, as tall as ``height`` rows."""

    colour: str
    top: int
    left: int
    length: int
    height: int


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def drawn_bars(png_path: Path, colours: set[str], min_height: int = 4) -> list[DrawnBar]:
    """The bars of these colours in the picture, top to bottom: each row's longest run
    of a colour, and rows with the same run merged into one bar."""
    image = Image.open(png_path).convert("RGB")
    width, height = image.size
    pixels = image.load()
    rows: list[tuple[int, str, int, int]] = []
    for y in range(height):
        x = 0
        while x < width:
            colour = _hex(pixels[x, y])
            if colour not in colours:
                x += 1
                continue
            start = x
            while x < width and _hex(pixels[x, y]) == colour:
                x += 1
            rows.append((y, colour, start, x - start))
    bars: list[DrawnBar] = []
    for y, colour, left, length in rows:
        last = bars[-1] if bars else None
        if (
            last
            and (last.colour, last.left, last.length) == (colour, left, length)
            and last.top + last.height == y
        ):
            bars[-1] = DrawnBar(colour, last.top, left, length, last.height + 1)
        else:
            bars.append(DrawnBar(colour, y, left, length, 1))
    return [bar for bar in bars if bar.height >= min_height]
