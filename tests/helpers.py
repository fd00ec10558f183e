"""Paths and small helpers shared by every test layer."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECTS = Path(__file__).resolve().parent / "projects"
JAFFLE_SHOP = REPO / "examples" / "jaffle_shop"


def copy_project(name: str | Path, destination: Path) -> Path:
    """Copy a fixture project (tests/projects/<name>, or any path) into ``destination``, build output left behind."""
    source = Path(name) if Path(name).is_absolute() else PROJECTS / name
    target = destination / source.name
    ignored = shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml", "control")
    shutil.copytree(source, target, ignore=ignored)
    return target
