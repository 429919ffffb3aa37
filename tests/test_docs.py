"""The documentation: the site builds strictly, renders in a real browser, and every file path
and code example in the docs matches the code.

The site tests need the docs extra (``python -m pip install -e ".[docs]"``) and the browser
test needs Chromium at /usr/bin/chromium (Debian's ``chromium`` package); ``.ci/run`` installs
both. Without them those tests skip and say why.
"""

import ast
import glob
import html
import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import minigd as mg

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
DOCS_MODULES = (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "mkdocs_jupyter",
)


def _missing_docs_modules():
    missing = []
    for name in DOCS_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


needs_docs = pytest.mark.skipif(
    bool(_missing_docs_modules()),
    reason=f"the docs extra is not installed (missing {', '.join(_missing_docs_modules())}): "
    f'python -m pip install -e ".[docs]"',
)
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: apt-get install chromium (what .ci/run does)",
)


# ---- the site ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once with ``mkdocs build --strict``; the output directory."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "mkdocs build printed warnings:\n" + "\n".join(warnings)
    return out


@needs_docs
def test_site_builds_strictly_with_every_page(site):
    pages = {
        "index.html",
        "mechanics.html",
        "extending.html",
        "architecture.html",
        "performance.html",
        "changelog.html",
        "api/training.html",
        "api/model.html",
        "guides/lr_range.html",
        "guides/sweeps.html",
        "guides/checkpoint.html",
    }
    pages |= {
        f"notebooks/{pathlib.Path(p).stem}.html" for p in glob.glob(str(ROOT / "notebooks/*.ipynb"))
    }
    missing = sorted(p for p in pages if not (site / p).is_file())
    assert not missing, f"pages missing from the built site: {missing}"
    # every image the pages use was copied
    for name in os.listdir(ROOT / "docs" / "img"):
        assert (site / "img" / name).is_file(), name


def _page_text(markup):
    markup = re.sub(r"<(script|style)\b.*?</\1>", " ", markup, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup)))


def _chromium(url, tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
        *args,
        url,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed on {url}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _in_order(text, words):
    """True when every word occurs in text, each after the previous one."""
    position = 0
    for word in words:
        match = re.compile(rf"\b{re.escape(word)}\b").search(text, position)
        if match is None:
            return False
        position = match.end()
    return True


def _has(text, *phrases):
    """True when every phrase occurs in text, ignoring whitespace (highlighting splits words)."""
    squeezed = re.sub(r"\s+", "", text)
    return all(re.sub(r"\s+", "", phrase) in squeezed for phrase in phrases)


def _fit_signature_shown(text):
    text = re.sub(r"\s+", "", text)
    # the rendered signature carries annotations: "fit(model: Sequential, X: ArrayLike, ..."
    start = text.find("fit(model:")
    names = list(inspect.signature(mg.fit).parameters)
    return start >= 0 and _in_order(text[start : start + 3000], names)


PAGES = {
    "index.html": lambda t: _has(
        t, "What it does not do", "python -m pytest -q", "minigd train", "The schedule wins"
    ),
    "api/training.html": _fit_signature_shown,
    "notebooks/01_epochs_iterations_batches.html": lambda t: _has(t, "iterations per epoch"),
    "extending.html": lambda t: _has(t, "class LeakyReLU(Layer)", "class SignSGD(Optimizer)"),
}


@needs_docs
@needs_chromium
@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_in_chromium(site, tmp_path, page):
    url = (site / page).as_uri()
    shot = tmp_path / "page.png"
    _chromium(url, tmp_path, f"--screenshot={shot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1280), pixels.shape
    rgb = np.round(pixels[..., :3] * 255).astype(np.uint32)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert colours.size > 100, f"{page}: screenshot looks blank ({colours.size} colours)"
    background = np.all(rgb == rgb[1000, 1270], axis=-1).mean()
    assert background < 0.97, f"{page}: {background:.1%} of the screenshot is background"

    markup = _chromium(url, tmp_path, "--dump-dom")
    text = _page_text(markup)
    assert PAGES[page](text), f"{page}: expected text not found in:\n{text[:3000]}"
    if page.startswith("notebooks/"):
        assert "data:image/png" in markup, "the notebook's committed plots are not rendered"


@needs_docs
def test_fit_signature_on_api_page_matches_code(site):
    text = _page_text((site / "api" / "training.html").read_text())
    assert _fit_signature_shown(text)


# ---- file paths the docs refer to ---------------------------------------------------------------

REFERENCE = re.compile(r"(?<![\w./*-])((?:docs|benchmarks|notebooks|tests|minigd)/[\w./*-]*[\w*])")


def referenced_paths(text):
    """Repo-relative paths such as ``docs/img/x.png`` or ``minigd/kernels/jit*.py`` in text."""
    return [m.group(1).rstrip(".") for m in REFERENCE.finditer(text)]


def test_reference_pattern_finds_paths():
    text = (
        "see docs/readme_x.md), (benchmarks/epoch.py --quick) `notebooks/01_a.ipynb`; "
        "every minigd/kernels/jit*.py file; not ~/.cache/minigd/mnist nor benchmarks/<name>.py"
    )
    assert referenced_paths(text) == [
        "docs/readme_x.md",
        "benchmarks/epoch.py",
        "notebooks/01_a.ipynb",
        "minigd/kernels/jit*.py",
    ]


def _documentation_files():
    patterns = [
        "minigd/**/*.py",
        "minigd/**/*.md",
        "docs/**/*.md",
        "docs/**/*.py",
        "benchmarks/*.py",
        "notebooks/*.py",
        "*.md",
    ]
    for pattern in patterns:
        yield from sorted(ROOT.glob(pattern))


def test_every_referenced_file_exists():
    stale = []
    for path in _documentation_files():
        for ref in referenced_paths(path.read_text(encoding="utf-8")):
            if not glob.glob(str(ROOT / ref)):
                stale.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not stale, "files referred to but missing:\n" + "\n".join(sorted(set(stale)))


# ---- code in the README and on the site --------------------------------------------------------


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def _code_blocks():
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]:
        for i, code in enumerate(_python_blocks(path)):
            yield pytest.param(code, id=f"{path.relative_to(ROOT)}#{i}")


def _resolve(node, names):
    """The object an expression like ``mg.plot.history`` or ``StepDecay`` names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    obj = names[node.id]
    for part in reversed(parts):
        assert hasattr(obj, part), f"{getattr(obj, '__name__', obj)} has no attribute {part!r}"
        obj = getattr(obj, part)
    return obj


def test_readme_has_code_blocks():
    blocks = _python_blocks(ROOT / "README.md")
    assert blocks and any("mg.fit(" in b for b in blocks)


@pytest.mark.parametrize("code", list(_code_blocks()))
def test_code_blocks_use_real_names_and_arguments(code):
    """Every minigd name a code block uses exists, and every keyword it passes is accepted."""
    tree = ast.parse(code)
    names = {"mg": mg}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "minigd":
                    names[alias.asname or alias.name] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minigd":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node, names)
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, names)
        if target is None or not callable(target):
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        params = signature.parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        for keyword in node.keywords:
            if keyword.arg is not None:
                assert keyword.arg in accepted, (
                    f"{ast.unparse(node.func)}() takes no argument {keyword.arg!r}"
                )
        checked += 1
    assert checked or "mg." not in code


def test_extending_examples_train(tmp_path):
    """docs/extending.md's layer, optimizer and schedule work in fit, clone and checkpoints."""
    # the page's classes register names; the same module name as tests/test_extending.py makes a
    # second run of the page replace its classes instead of clashing with them
    namespace = {"__name__": "extending_md"}
    for code in _python_blocks(ROOT / "docs" / "extending.md"):
        exec(compile(code, "docs/extending.md", "exec"), namespace)
    LeakyReLU, SignSGD, InverseTime = (
        namespace[n] for n in ("LeakyReLU", "SignSGD", "InverseTime")
    )
    layer = LeakyReLU(0.1)
    model = mg.Sequential(mg.Dense(4, 3), layer, mg.Dense(3, 2), seed=0)
    z = np.array([[-1.0, 2.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(layer.forward(z), [[-0.1, 2.0, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(layer.backward(np.ones_like(z)), [[0.1, 1.0, 1.0]], rtol=1e-6)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    with mg.use_backend("numpy"):
        opt = SignSGD(model.parameters(), lr=0.01)
        before = model.state_dict()
        history = mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=2,
            batch_size=16,
            seed=0,
            verbose=0,
            schedule=InverseTime(0.01, 1.0),
        )
        assert history.iterations["lr"][0] == 0.01 and history.iterations["lr"][-1] == 0.005
        assert not np.array_equal(before["0.weight"], model.state_dict()["0.weight"])
        mg.save_checkpoint(tmp_path / "c.npz", model, opt, history=history)
        other = mg.Sequential(mg.Dense(4, 3), LeakyReLU(0.1), mg.Dense(3, 2), seed=1)
        mg.load_checkpoint(tmp_path / "c.npz").restore(other, SignSGD(other.parameters(), lr=0.01))
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(other.state_dict()[key], value)


def test_plot_history_returns_a_figure_that_saves(tmp_path):
    """The docs say: fig = mg.plot.history(history); fig.savefig(path)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    history = mg.History()
    for step in range(1, 5):
        history.record_iteration(
            epoch=1, iteration=step, step=step, batch_size=8, lr=0.1, loss=2.0 / step
        )
    history.record_epoch(
        epoch=1,
        train_loss=1.0,
        val_loss=None,
        val_accuracy=None,
        seconds=1.0,
        samples_per_second=32.0,
    )
    fig = mg.plot.history(history)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 1000
