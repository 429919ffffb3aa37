"""mg.plot.compare: one curve per run, against updates or epochs, from scripted histories."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minigd as mg  # noqa: E402


def scripted(losses_per_epoch, batch_size=8, val=None, diverged_at=None):
    """A History whose epoch e has the given batch losses; optional val_loss per epoch."""
    history = mg.History()
    step = 0
    for e, losses in enumerate(losses_per_epoch, start=1):
        for i, loss in enumerate(losses, start=1):
            step += 1
            history.record_iteration(
                epoch=e, iteration=i, step=step, batch_size=batch_size, lr=0.1, loss=loss
            )
        if diverged_at == e:
            history.diverged = True
            history.divergence = {
                "epoch": e,
                "iteration": len(losses),
                "step": step,
                "lr": 0.1,
                "loss": "nan",
            }
            break
        history.record_epoch(
            epoch=e,
            train_loss=float(np.mean(losses)),
            val_loss=None if val is None else val[e - 1],
            val_accuracy=None if val is None else 1 - val[e - 1],
            seconds=1.0,
            samples_per_second=10.0,
        )
    return history


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def line_data(ax, label):
    for line in ax.lines:
        if line.get_label() == label:
            return line.get_xdata().astype(float), line.get_ydata().astype(float)
    raise AssertionError(f"no line labelled {label!r}")


def test_per_update_curves_use_the_step_count():
    a = scripted([[4.0, 3.0, 2.0, 1.0], [1.0, 0.5, 0.5, 0.5]])
    ax = mg.plot.compare({"a": a})
    x, y = line_data(ax, "a")
    np.testing.assert_array_equal(x, np.arange(1, 9))
    np.testing.assert_array_equal(y, [4, 3, 2, 1, 1, 0.5, 0.5, 0.5])
    assert ax.get_xlabel() == "update (step)"


def test_per_epoch_positions_line_up_runs_of_different_batch_sizes():
    small = scripted([[1.0] * 4, [1.0] * 4], batch_size=2)
    large = scripted([[1.0] * 2, [1.0] * 2], batch_size=4)
    ax = mg.plot.compare([small, large], labels=["B=2", "B=4"], x="epoch")
    x_small, _ = line_data(ax, "B=2")
    x_large, _ = line_data(ax, "B=4")
    np.testing.assert_allclose(x_small, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    np.testing.assert_allclose(x_large, [0.5, 1.0, 1.5, 2.0])
    assert ax.get_xlabel() == "epoch"


def test_smoothing_is_a_trailing_mean_over_the_window():
    run = scripted([[1.0, 3.0, 5.0, 7.0]])
    _, y = line_data(mg.plot.compare({"r": run}, smooth=2), "r")
    np.testing.assert_allclose(y, [1.0, 2.0, 4.0, 6.0])
    _, y = line_data(mg.plot.compare({"r": run}, smooth=3), "r")
    np.testing.assert_allclose(y, [1.0, 2.0, 3.0, 5.0])


def test_epoch_columns_sit_at_epoch_ends():
    run = scripted([[1.0] * 3, [1.0] * 3], val=[0.9, 0.4])
    x, y = line_data(mg.plot.compare({"r": run}, y="val_loss", x="step"), "r")
    np.testing.assert_array_equal(x, [3, 6])
    np.testing.assert_allclose(y, [0.9, 0.4])
    x, y = line_data(mg.plot.compare({"r": run}, y="val_accuracy", x="epoch"), "r")
    np.testing.assert_array_equal(x, [1, 2])
    np.testing.assert_allclose(y, [0.1, 0.6])


def test_diverged_run_drops_the_non_finite_loss_and_marks_its_last_point():
    run = scripted([[2.0, 1.0, 1.0], [1.0, 50.0, math.nan]], diverged_at=2)
    ax = mg.plot.compare({"hot": run}, x="epoch", log=True)
    x, y = line_data(ax, "hot")
    np.testing.assert_allclose(x, [1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3])
    np.testing.assert_allclose(y, [2.0, 1.0, 1.0, 1.0, 50.0])
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert crosses[0].get_xdata()[0] == pytest.approx(5 / 3)
    assert ax.get_yscale() == "log"


def test_labels_default_to_run_numbers_and_appear_in_the_legend():
    ax = mg.plot.compare([scripted([[1.0]]), scripted([[2.0]])])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run 0", "run 1"]


def test_draws_into_a_given_axes():
    _, ax = plt.subplots()
    assert mg.plot.compare({"r": scripted([[1.0]])}, ax=ax) is ax


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"x": "time"}, ValueError, "x must be one of"),
        ({"y": "accuracy"}, ValueError, "y must be one of"),
        ({"smooth": 0}, ValueError, "smooth"),
        ({"y": "val_loss"}, ValueError, "validation_data"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        mg.plot.compare({"r": scripted([[1.0, 2.0]])}, **kwargs)


def test_bad_histories_are_rejected():
    run = scripted([[1.0]])
    with pytest.raises(TypeError, match="wrap a single run in a list"):
        mg.plot.compare(run)
    with pytest.raises(ValueError, match="labels has 1 entries for 2 histories"):
        mg.plot.compare([run, run], labels=["only one"])
    with pytest.raises(TypeError, match=r"histories\['x'\] must be a minigd History"):
        mg.plot.compare({"x": [1.0, 2.0]})
    with pytest.raises(TypeError, match="labels must be None"):
        mg.plot.compare({"a": run}, labels=["b"])
    with pytest.raises(ValueError, match="empty"):
        mg.plot.compare([])


def test_compare_real_runs_of_two_batch_sizes():
    X, y, _, _ = mg.datasets.load_mnist_sample()
    X, y = X[:256], y[:256]
    runs = {}
    for batch in (16, 64):
        model = mg.Sequential(mg.Dense(784, 16), mg.ReLU(), mg.Dense(16, 10), seed=0)
        runs[f"B={batch}"] = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=batch,
            seed=0,
            verbose=0,
        )
    ax = mg.plot.compare(runs, x="epoch")
    x16, _ = line_data(ax, "B=16")
    x64, _ = line_data(ax, "B=64")
    assert len(x16) == 32 and len(x64) == 8
    assert x16[-1] == x64[-1] == 2.0
