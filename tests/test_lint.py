"""The code passes ruff (lint and format) and mypy, as configured in pyproject.toml.

Each check runs the tool from the repository root with this interpreter
(``python -m ruff ...``, ``python -m mypy``) and is skipped, saying why, when the tool is not
installed (``pip install -e .[test]`` brings both).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(module, *args):
    """Run ``python -m module args`` in the repository root; skip when the module is missing."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e .[test])")
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{module} {' '.join(args)} failed:\n{output}"
    return output


def test_ruff_check_is_clean():
    run_tool("ruff", "check", ".")


def test_ruff_format_check_is_clean():
    run_tool("ruff", "format", "--check", ".")


def test_mypy_is_clean_on_the_package():
    output = run_tool("mypy")
    assert "Success" in output
