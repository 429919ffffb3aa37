"""The README's two set-up commands, in the README's order, leave a working install.

One fresh venv; step 1 (``python -m pip install . && minigd train``) then step 2
(``python -m pip install -e ".[test]"``), both read from README.md and run as written, from a
copy of this checkout (the working tree is never written to). Afterwards, from another
directory, ``import minigd`` and ``minigd train`` must work. This failed when Numba cached the
kernels in ``site-packages/minigd/kernels/__pycache__``: pip left that folder behind when the
editable install replaced the regular one, and it shadowed the editable install as a namespace
package.

Needs a package index (PyPI or a mirror; pip's cache is used) and takes minutes, so it is one
test, marked ``install``: it runs by default; ``-m "not install"`` deselects it.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
PYTEST_STEP = " && python -m pytest -q"
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "minigd-run",
    "runs",
    ".pytest_cache",
    ".hypothesis",
    ".ipynb_checkpoints",
    "*.nbi",
    "*.nbc",
)


def readme_setup_commands():
    """The shell commands of the README's "Set-up" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set-up.*?(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section.group(0), re.S)]


def numba_files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_readme_install_order_leaves_a_working_install(tmp_path):
    commands = readme_setup_commands()
    # the two commands come first; a later block shows what CI installs on top of them
    assert len(commands) >= 2, commands
    install, editable = commands[:2]
    assert editable.endswith(PYTEST_STEP), editable
    # Step 2 of the README ends by running the test suite. Running it here would run this test
    # again inside itself; the suite is what is running now, so stop after the install.
    editable = editable[: -len(PYTEST_STEP)]

    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    cache = tmp_path / "minigd-cache"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "NUMBA_CACHE_DIR")
    }
    env.update(
        PATH=str(bindir) + os.pathsep + env.get("PATH", ""),
        VIRTUAL_ENV=str(venv),
        MINIGD_CACHE_DIR=str(cache),
        MINIGD_WARM_START="0",
    )  # compile in the foreground: the cache is full on exit

    def sh(command, cwd):
        result = subprocess.run(
            command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
        )
        assert result.returncode == 0, (
            f"`{command}` failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result.stdout

    purelib = Path(
        sh(
            "python -c \"import sysconfig; print(sysconfig.get_paths()['purelib'])\"", tmp_path
        ).strip()
    )
    assert purelib.is_relative_to(venv)

    out = sh(install, source)  # python -m pip install . && minigd train
    assert "test accuracy:" in out
    installed = purelib / "minigd"
    assert (installed / "kernels" / "jit.py").is_file()
    assert numba_files(installed) == [], "Numba cached its code inside the installed package"
    assert numba_files(cache / "kernels"), "the kernels were not cached in MINIGD_CACHE_DIR"
    assert ": yes," in sh("minigd cache info", tmp_path)

    sh(editable, source)  # python -m pip install -e ".[test]"
    # pip removed the regular install: nothing may be left to shadow the editable one.
    assert not installed.exists(), sorted(map(str, installed.rglob("*")))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = sh('python -c "import minigd as mg; mg.fit; print(mg.__file__)"', elsewhere)
    assert Path(where.strip()) == source / "minigd" / "__init__.py"
    assert "test accuracy:" in sh("minigd train --epochs 1", elsewhere)
    assert numba_files(source / "minigd") == []
    # The regular and the editable install compiled into two folders of the one cache.
    assert "all installs: 2 folders" in sh("minigd cache info", elsewhere)
