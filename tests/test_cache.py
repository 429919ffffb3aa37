"""The Numba kernel cache lives in a per-user directory, never inside the installed package.

Subprocess tests run a copy of the package made read-only, with its own ``MINIGD_CACHE_DIR``,
so they neither read nor write the cache of the checkout under test. They compile only the
small ``relu_forward`` kernel (a few seconds), never the training kernels.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import minigd
from minigd.cli import main
from minigd.kernels import jit_config

PACKAGE = Path(minigd.__file__).parent

RUN_KERNEL = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import minigd
    from minigd.kernels import jit, jit_config
    z = np.array([[-1.5, 0.0, 2.0], [3.0, -0.5, 1.0]], dtype=np.float32)
    out = np.empty_like(z)
    jit.relu_forward(z, out)
    stats = jit.relu_forward.stats
    print(json.dumps(dict(
        file=minigd.__file__, cache_dir=jit_config.CACHE_DIR, cache=jit_config.OPTIONS["cache"],
        hits=sum(stats.cache_hits.values()), misses=sum(stats.cache_misses.values()),
        correct=bool((out == np.maximum(z, 0)).all()))))
""")


def numba_files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix in (".nbi", ".nbc"))


def set_read_only(folder, read_only):
    for path in [folder, *Path(folder).rglob("*")]:
        mode = path.stat().st_mode
        if read_only:
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        else:
            path.chmod(mode | stat.S_IWUSR)


@pytest.fixture
def installed(tmp_path):
    """A read-only copy of the package in tmp_path/site, and a way to run Python against it."""
    site = tmp_path / "site"
    shutil.copytree(
        PACKAGE, site / "minigd", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    )
    set_read_only(site, True)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR")}
    env.update(PYTHONPATH=str(site), MINIGD_CACHE_DIR=str(cache))

    def run(*args, cache_dir=None, check=True):
        run_env = dict(env) if cache_dir is None else dict(env, MINIGD_CACHE_DIR=str(cache_dir))
        result = subprocess.run(
            [sys.executable, *args],
            env=run_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    yield site / "minigd", cache, run
    set_read_only(site, False)  # let tmp_path be cleaned up


def test_user_cache_root_follows_the_platform(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIGD_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit_config.user_cache_root() == str(tmp_path / "xdg" / "minigd")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says ignore
    assert jit_config.user_cache_root() == str(tmp_path / ".cache" / "minigd")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert jit_config.user_cache_root() == str(tmp_path / "Library" / "Caches" / "minigd")
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert jit_config.user_cache_root() == os.path.join(str(tmp_path / "Local"), "minigd", "Cache")
    monkeypatch.setenv("MINIGD_CACHE_DIR", "rel/cache")
    monkeypatch.chdir(tmp_path)
    assert jit_config.user_cache_root() == str(tmp_path / "rel" / "cache")
    assert jit_config.kernels_root() == str(tmp_path / "rel" / "cache" / "kernels")


def test_this_checkout_caches_outside_the_package():
    assert jit_config.OPTIONS["cache"] and jit_config.CACHE_DIR is not None
    package = os.path.realpath(PACKAGE) + os.sep
    assert not os.path.realpath(jit_config.CACHE_DIR).startswith(package)
    assert os.path.dirname(jit_config.CACHE_DIR) == jit_config.kernels_root()


def test_read_only_install_compiles_into_the_user_cache_and_loads_from_it(installed):
    package, cache, run = installed
    first = json.loads(run("-c", RUN_KERNEL).stdout)
    assert first["file"] == str(package / "__init__.py")
    assert first["correct"] and first["cache"]
    assert first["misses"] == 1 and first["hits"] == 0
    assert Path(first["cache_dir"]).parent == cache / "kernels"
    assert numba_files(first["cache_dir"]), "nothing was cached"
    assert numba_files(package) == []
    assert not (package / "kernels" / "__pycache__").exists()

    second = json.loads(run("-c", RUN_KERNEL).stdout)
    assert second["hits"] == 1 and second["misses"] == 0 and second["correct"]

    # One stamp for all kernel sources: editing jit_gemm.py invalidates relu_forward (jit.py).
    gemm = package / "kernels" / "jit_gemm.py"
    gemm.chmod(0o644)
    with gemm.open("a") as f:
        f.write("\n# an edit\n")
    gemm.chmod(0o444)
    third = json.loads(run("-c", RUN_KERNEL).stdout)
    assert third["misses"] == 1 and third["hits"] == 0 and third["correct"]
    assert numba_files(package) == []


def test_two_locations_get_two_cache_folders(installed):
    package, cache, run = installed
    theirs = run(
        "-c", "from minigd.kernels import jit_config; print(jit_config.CACHE_DIR)"
    ).stdout.strip()
    assert os.path.dirname(theirs) == str(cache / "kernels")
    # Same Numba, another source location: another folder name under the kernels root.
    assert os.path.basename(theirs) != os.path.basename(jit_config.CACHE_DIR)
    assert (
        os.path.basename(theirs).split("-")[:2]
        == os.path.basename(jit_config.CACHE_DIR).split("-")[:2]
    )


def test_unwritable_cache_warns_once_and_still_runs(installed, tmp_path):
    package, cache, run = installed
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run("-c", RUN_KERNEL, cache_dir=blocker / "cache")
    out = json.loads(result.stdout)
    assert out["correct"] and out["cache"] is False and out["cache_dir"] is None
    assert result.stderr.count("kernel cache is off") == 1, result.stderr
    assert "MINIGD_CACHE_DIR" in result.stderr and str(blocker) in result.stderr
    assert numba_files(package) == [] and numba_files(tmp_path) == []

    info = run("-m", "minigd", "cache", "info", cache_dir=blocker / "cache").stdout
    assert "kernel cache: off" in info and "compiled for this CPU" in info


def test_user_functions_keep_numbas_own_cache(installed, tmp_path):
    package, cache, run = installed
    user = tmp_path / "user"
    user.mkdir()
    (user / "mycode.py").write_text(
        textwrap.dedent("""
        import numba
        @numba.njit(cache=True)
        def double(x):
            return 2 * x
    """)
    )
    script = (
        "import sys, numba; sys.path.insert(0, %r)\n"
        "from minigd.kernels import jit_config\n"
        "import mycode; assert mycode.double(21) == 42\n"
        "print(repr(numba.config.CACHE_DIR))" % str(user)
    )
    assert run("-c", script).stdout.strip() == "''"
    assert [p.name for p in numba_files(user / "__pycache__")][0].startswith("mycode.double")
    assert not (cache / "kernels").exists() or not list((cache / "kernels").rglob("mycode*"))


def test_cache_info_and_clear_commands(installed):
    package, cache, run = installed
    before = run("-m", "minigd", "cache", "info").stdout
    assert "this install: 0 files" in before
    assert "compiled for this CPU" in before and ": no," in before

    run("-c", RUN_KERNEL)
    n_files = len(numba_files(cache))
    assert n_files >= 2
    info = run("-m", "minigd", "cache", "info").stdout
    folder = next((cache / "kernels").iterdir())
    assert f"kernel cache: {folder}" in info
    assert f"this install: {n_files} files" in info
    assert f"all installs: 1 folders, {n_files} files" in info
    assert ": no," in info  # relu_forward only: the training kernel is not compiled

    cleared = run("-m", "minigd", "cache", "clear").stdout
    assert f"removed {n_files} files" in cleared and str(cache / "kernels") in cleared
    assert numba_files(cache) == []
    assert "this install: 0 files" in run("-m", "minigd", "cache", "info").stdout
    again = json.loads(run("-c", RUN_KERNEL).stdout)  # the folder is recreated on demand
    assert again["misses"] == 1 and again["correct"] and numba_files(cache)


def test_clear_removes_only_numbas_files_under_kernels(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    install = root / "kernels" / "numba-x-abc"
    install.mkdir(parents=True)
    ours = [
        install / "jit.relu_forward-90.py311.nbi",
        install / "jit.relu_forward-90.py311.1.nbc",
        install / "jit.f-1.py311.nbi.tmp.0123abcd",
    ]
    kept = [install / "notes.txt", root / "elsewhere.nbi", root / "mnist" / "train.gz"]
    outside = tmp_path / "outside"
    outside.mkdir()
    kept.append(outside / "precious.nbi")
    for path in ours + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    empty = root / "kernels" / "numba-y-def"
    empty.mkdir()
    link = root / "kernels" / "link"
    link.symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("MINIGD_CACHE_DIR", str(root))

    assert main(["cache", "clear"]) == 0
    assert f"removed 3 files (0.0 MB) from {root / 'kernels'}" in capsys.readouterr().out
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in kept)
    assert install.is_dir() and not empty.exists() and link.is_symlink()


def test_cache_info_in_process(capsys):
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {jit_config.CACHE_DIR}" in out
    assert "compiled for this CPU" in out and "MINIGD_CACHE_DIR" in out


def test_kernels_compiled_for_each_blas_live_in_their_own_folder(tmp_path):
    """Without a BLAS, jit_gemm compiles product functions that ignore the BLAS choice, and a
    caller's cached code embeds them; a process with a BLAS must never load that code (it ran
    the own loops without their row padding: garbage rows in a short batch). Code compiled to
    call NumPy's BLAS and code compiled to call SciPy's are kept apart the same way."""
    code = (
        "import sys, importlib.abc, warnings\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'scipy' or name.startswith('scipy.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "if sys.argv[1] == 'block':\n"
        "    sys.meta_path.insert(0, Block())\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from minigd.kernels import jit_config, jit_gemm\n"
        "print(jit_gemm.BLAS_AVAILABLE, jit_config.BLAS_LIBRARY, jit_config.CACHE_DIR,\n"
        "      sum('was not found' in str(w.message) for w in caught))\n"
    )
    runs = {
        "normal": ("normal", "auto"),
        "scipy": ("normal", "scipy"),
        "none": ("normal", "none"),
        "scipy blocked": ("block", "scipy"),
    }
    dirs = {}
    for name, (mode, library) in runs.items():
        env = dict(os.environ, MINIGD_CACHE_DIR=str(tmp_path), MINIGD_BLAS=library)
        done = subprocess.run(
            [sys.executable, "-c", code, mode], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        dirs[name] = done.stdout.split()
    found = dirs["normal"][1]
    assert found in ("numpy", "scipy")  # NumPy's wheels bundle OpenBLAS; SciPy is installed here
    assert dirs["normal"][0] == "True" and dirs["normal"][2].endswith(f"-blas-{found}")
    assert dirs["scipy"][:2] == ["True", "scipy"] and dirs["scipy"][2].endswith("-blas-scipy")
    assert dirs["none"][:2] == ["False", "None"] and dirs["none"][2].endswith("-noblas")
    # asked for SciPy's BLAS without SciPy: no BLAS, said so once, and its own folder
    assert dirs["scipy blocked"][:2] == ["False", "None"]
    assert dirs["scipy blocked"][2].endswith("-noblas") and dirs["scipy blocked"][3] == "1"
    assert dirs["none"][3] == dirs["normal"][3] == "0"
    assert len({d[2] for d in dirs.values()}) == 3
    assert len({os.path.dirname(d[2]) for d in dirs.values()}) == 1


def test_a_bad_blas_choice_is_refused():
    env = dict(os.environ, MINIGD_BLAS="mkl")
    done = subprocess.run(
        [sys.executable, "-c", "import minigd.kernels.jit_config"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "MINIGD_BLAS='mkl'" in done.stderr and "expected 'numpy', 'scipy'" in done.stderr
