"""The strict tooling is part of the suite: lint, format, types and layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        (str(BIN / "ruff"), "check", "server", "tests", "bench"),
        (str(BIN / "ruff"), "format", "--check", "server", "tests", "bench"),
        (str(BIN / "mypy"),),
        (str(BIN / "lint-imports"),),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "import-layers"],
)
def test_the_code_passes_the_project_tooling(command: tuple[str, ...]) -> None:
    completed = run(*command)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_only_telemetry_py_touches_the_opentelemetry_sdk() -> None:
    offenders = []
    for path in sorted((ROOT / "server" / "parallel_dispatch").rglob("*.py")):
        if path.name == "telemetry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {name}"
                for name in names
                if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))
            ]
    assert offenders == []
