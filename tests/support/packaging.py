"""The project as users install it: an sdist and a wheel built with ``python -m build``,
and fresh venvs of a given Python with the wheel and a given Metaflow installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


# Not part of a release, and never to be written into by a build.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".metaflow",
    "*.egg-info",
    "build",
    "dist",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


def build_dist(out_dir: Path) -> Dist:
    """``python -m build`` of a copy of the repository, as a release would make it.

    A copy, because setuptools writes ``metaflow_nomad.egg-info`` into the tree it
    builds: in the repository, next to the editable install, Metaflow would then
    find the extension twice in any process started there.
    """
    source = out_dir / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_COPIED)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out_dir), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [wheel] = out_dir.glob("*.whl")
    [sdist] = out_dir.glob("*.tar.gz")
    return Dist(wheel, sdist)


def interpreter(version: str) -> str:
    """The pyenv-installed ``python<version>`` (the machines have 3.9 to 3.13)."""
    found = sorted(
        glob.glob(str(PYENV_ROOT / "versions" / f"{version}.*" / "bin" / f"python{version}"))
    )
    assert found, f"no Python {version} under {PYENV_ROOT}/versions (pyenv install {version})"
    return found[-1]


@dataclass(frozen=True)
class InstalledVenv:
    root: Path
    install_output: str

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)


def fresh_venv(root: Path, python: str, *requirements: str) -> InstalledVenv:
    """A new venv of ``python`` with ``requirements`` installed by pip, as a user would."""
    created = subprocess.run([python, "-m", "venv", str(root)], capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    pip = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", *requirements],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stdout[-4000:] + pip.stderr[-4000:]
    return InstalledVenv(root, pip.stdout + pip.stderr)
