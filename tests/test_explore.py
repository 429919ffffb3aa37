"""mg.explore: widgets set from Python retrain and change the plot; ipywidgets stays optional."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minigd as mg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def explorer():
    pytest.importorskip("ipywidgets")
    return mg.explore(n_train=200, n_val=100, epochs=2, batch_size=32, lr=0.1, seed=0)


def ydata(explorer, name):
    return np.asarray(explorer.lines[name].get_ydata(), dtype=float)


def test_first_view_shows_the_first_run(explorer):
    h = explorer.history
    assert explorer.retrains == 1
    assert h.n_iterations == 2 * 7 and h.n_epochs == 2  # ceil(200 / 32) = 7
    np.testing.assert_allclose(ydata(explorer, "loss"), h.iterations["loss"])
    np.testing.assert_allclose(ydata(explorer, "lr"), h.iterations["lr"])
    np.testing.assert_allclose(ydata(explorer, "train_loss"), h.epochs["train_loss"])
    np.testing.assert_allclose(ydata(explorer, "val_loss"), h.epochs["val_loss"])
    np.testing.assert_allclose(ydata(explorer, "val_accuracy"), h.epochs["val_accuracy"])
    np.testing.assert_array_equal(explorer.lines["epoch_train_loss"].get_xdata(), [7, 14])
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    assert "held-out accuracy" in explorer.status.value


def test_setting_widgets_retrains_and_redraws(explorer):
    w = explorer.widgets
    before_loss, before_image = ydata(explorer, "loss"), bytes(explorer.image.value)

    w["lr"].value = 1.0
    assert explorer.retrains == 2
    np.testing.assert_allclose(ydata(explorer, "lr"), 1.0)
    assert not np.allclose(ydata(explorer, "loss")[1:], before_loss[1:])
    assert bytes(explorer.image.value) != before_image

    w["batch_size"].value = 8
    assert explorer.retrains == 3 and len(ydata(explorer, "loss")) == 2 * 25

    w["epochs"].value = 4
    assert explorer.retrains == 4 and len(ydata(explorer, "val_accuracy")) == 4

    w["schedule"].value = "cosine"
    lr = ydata(explorer, "lr")
    assert lr[0] == pytest.approx(1.0) and lr[-1] < 0.01 and np.all(np.diff(lr) <= 0)

    before = ydata(explorer, "loss")
    w["optimizer"].value = "Adam"
    assert not np.allclose(ydata(explorer, "loss")[1:], before[1:])
    w["hidden"].value = 8
    w["activation"].value = "Tanh"
    assert explorer.retrains == 8
    assert explorer.settings["hidden"] == 8 and explorer.history.n_epochs == 4


def test_same_settings_give_the_same_run(explorer):
    first = ydata(explorer, "loss")
    explorer.widgets["lr"].value = 0.5
    explorer.widgets["lr"].value = 0.1
    np.testing.assert_array_equal(ydata(explorer, "loss"), first)


def test_own_data_and_divergence_is_reported_not_raised(rng):
    pytest.importorskip("ipywidgets")
    X = (rng.normal(size=(300, 20)) * 1e4).astype(np.float32)  # far from unit scale
    y = rng.integers(0, 3, size=300)
    explorer = mg.explore((X, y), n_train=200, n_val=100, epochs=2, lr=10.0)
    assert explorer.n_classes == 3 and explorer.history.diverged
    assert "diverged" in explorer.status.value and "smaller lr" in explorer.status.value
    explorer.widgets["lr"].value = 1e-4
    assert not explorer.history.diverged and "held-out accuracy" in explorer.status.value


def test_arguments_are_checked():
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="batch_size"):
        mg.explore(batch_size=3)
    with pytest.raises(ValueError, match="n_train"):
        mg.explore(n_train=8000, n_val=500)
    with pytest.raises(ValueError, match="schedule"):
        mg.explore(schedule="linear")


def test_missing_ipywidgets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    with pytest.raises(ImportError, match=r'pip install "minigd\[notebook\]"'):
        mg.explore()


def test_importing_minigd_does_not_import_ipywidgets():
    code = (
        "import sys, minigd; "
        "print(sorted(m for m in ('ipywidgets', 'IPython', 'matplotlib') "
        "if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
