"""The teaching notebooks: each runs top to bottom in a fresh kernel, uses only the public API,
and is committed with its outputs and in step with notebooks/build_notebooks.py.

Executing all twelve takes about three minutes on 2 cores; deselect with ``-m "not notebooks"``.
"""

import importlib.util
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import minigd

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900
THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
PRIVATE_NAMES = [
    re.compile(p) for p in (r"mg\._", r"from minigd\.", r"import minigd\.", r"\._[a-z]")
]


def ids(paths):
    return [p.name.split("_")[0] for p in paths]


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOK_DIR / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_environment():
    """The test process's environment, with the minigd it imported first on the kernel's path.

    BLAS/OpenMP/Numba threads default to 1, as in build_notebooks.py: the matrices are small
    and several threads per kernel only contend on a shared 2-core machine.
    """
    env = dict(os.environ)
    package_parent = str(Path(minigd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    for name in THREAD_VARIABLES:
        env.setdefault(name, "1")
    return env


def test_the_twelve_notebooks_are_there():
    assert ids(NOTEBOOKS) == [f"{i:02d}" for i in range(1, 13)]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in code_cells(nb):
        cell.outputs = []
        cell.execution_count = None
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=kernel_environment())  # a cell error raises CellExecutionError
    outputs = [o for cell in code_cells(nb) for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was drawn"
    assert [cell.execution_count for cell in code_cells(nb)] == list(
        range(1, len(code_cells(nb)) + 1)
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_uses_only_the_public_api(path):
    nb = nbformat.read(path, as_version=4)
    sources = [cell.source for cell in code_cells(nb)]
    assert any("import minigd as mg" in source for source in sources)
    for source in sources:
        for pattern in PRIVATE_NAMES:
            match = pattern.search(source)
            assert match is None, (
                f"{path.name} uses a private name ({pattern.pattern!r}): "
                f"...{source[max(0, match.start() - 40) : match.end() + 40]}..."
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_committed_notebook_carries_its_outputs(path):
    nb = nbformat.read(path, as_version=4)
    cells = code_cells(nb)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name} was not executed top to bottom: run notebooks/build_notebooks.py"
    )
    outputs = [o for cell in cells for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no plot"
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{path.name} printed warnings or errors: {stderr[0][:300]}"


def test_committed_notebooks_match_the_build_script():
    build = load_build_script()
    assert sorted(build.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        expected = build.make_notebook(build.NOTEBOOKS[path.name]())
        committed = nbformat.read(path, as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == [
            (c.cell_type, c.source) for c in expected.cells
        ], f"{path.name} differs from build_notebooks.py: run it to regenerate"


def test_private_name_patterns_catch_what_they_should():
    for source in (
        "mg._validation.real",
        "from minigd.kernels import reference",
        "import minigd.backend",
        "model._values",
    ):
        assert any(p.search(source) for p in PRIVATE_NAMES), source
    for source in ("import minigd as mg", "mg.plot.compare(runs)", "history.iterations"):
        assert not any(p.search(source) for p in PRIVATE_NAMES), source


# Notebooks that compare settings or make choices (issue 13): their claims are asserts the build
# runs, their comparisons have seeds, and the test set is touched once, at the end.
CHECKED = ("01", "02", "03", "04", "05", "07", "08", "09", "10", "11", "12")
SEEDED = ("02", "04", "05", "07", "11", "12")
CHOOSING = ("01", "02", "03", "04", "05", "07", "11", "12")


def built_cells(number):
    build = load_build_script()
    name = next(n for n in build.NOTEBOOKS if n.startswith(number))
    return build.make_notebook(build.NOTEBOOKS[name]()).cells


@pytest.mark.parametrize("number", CHECKED)
def test_claims_are_asserts_and_quoted_numbers_come_from_the_run(number):
    sources = [c.source for c in built_cells(number) if c.cell_type == "code"]
    assert any(re.search(r"^\s*assert ", s, re.M) for s in sources), f"{number}: no claim checked"
    assert any("say(f" in s for s in sources), f"{number}: no sentence built from the run"


@pytest.mark.parametrize("number", SEEDED)
def test_comparisons_run_five_seeds(number):
    sources = "\n".join(c.source for c in built_cells(number) if c.cell_type == "code")
    assert "range(5)" in sources and re.search(r"seeds=SEEDS|for seed in SEEDS", sources)


@pytest.mark.parametrize("number", CHOOSING)
def test_choices_use_validation_and_the_test_set_comes_last(number):
    cells = [c.source for c in built_cells(number) if c.cell_type == "code"]
    assert "X_val" in "\n".join(cells)
    uses = [i for i, s in enumerate(cells[1:], start=1) if "X_test" in s]
    assert len(uses) <= 1, f"{number}: the test set is used in {len(uses)} cells"
    if uses:
        later = "\n".join(cells[uses[0] + 1 :])
        assert "mg.sweep" not in later and "EvaluateEvery" not in later and "mg.fit" not in later


@pytest.mark.parametrize("number", CHECKED)
def test_every_built_code_cell_is_valid_python(number):
    import ast

    for cell in built_cells(number):
        if cell.cell_type == "code":
            ast.parse(
                "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            )
