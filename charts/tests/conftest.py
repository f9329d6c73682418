"""Shared helpers of the chart and image tests: paths, the portwarden binary, YAML loading."""

import os
import pathlib
import shutil

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "portwarden"
EXAMPLES = ROOT / "examples"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def portwarden_bin() -> pathlib.Path:
    """The binary under test: $PORTWARDEN_BIN, else the freshest cargo build in the repo."""
    env = os.environ.get("PORTWARDEN_BIN")
    if env:
        return pathlib.Path(env)
    targets = [os.environ.get("CARGO_TARGET_DIR"), str(ROOT / "target")]
    found = [
        pathlib.Path(t) / profile / "portwarden"
        for t in targets
        if t
        for profile in ("release", "debug")
        if (pathlib.Path(t) / profile / "portwarden").is_file()
    ]
    if not found:
        on_path = shutil.which("portwarden")
        if on_path:
            return pathlib.Path(on_path)
        pytest.fail("no portwarden binary: build it (cargo build -p portwarden) or set PORTWARDEN_BIN")
    return max(found, key=lambda p: p.stat().st_mtime)


def load_docs(path: pathlib.Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]
