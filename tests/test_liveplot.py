"""LivePlot: no-op with one warning outside a notebook; throttled by time; lines hold the history.

"In a notebook" is simulated: ``_in_notebook`` returns True, the screen is a fake that counts
updates (and can make each redraw cost time), and the clock is fake, advanced by a callback
at every update, so the tests do not depend on the speed of the machine.
"""

import warnings

import numpy as np
import pytest

import minigd as mg
from minigd import liveplot


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Tick(mg.Callback):
    """Advances the fake clock by ``dt`` seconds per update (the 'training time')."""

    def __init__(self, clock, dt):
        self.clock, self.dt = clock, dt

    def on_iteration_end(self, state):
        self.clock.now += self.dt


class FakeScreen:
    def __init__(self, clock=None, cost=0.0):
        self.clock, self.cost = clock, cost
        self.images = []

    def open(self, png):
        self.update(png)
        return self

    def update(self, png):
        if self.clock is not None:
            self.clock.now += self.cost
        self.images.append(png)


@pytest.fixture
def data(rng):
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, y


@pytest.fixture
def notebook(monkeypatch):
    """Pretend to run in Jupyter with a fake clock and screen; yields (clock, screen)."""
    clock, screen = FakeClock(), FakeScreen()
    screen.clock = clock
    monkeypatch.setattr(liveplot, "_in_notebook", lambda: True)
    monkeypatch.setattr(liveplot, "_clock", clock)
    monkeypatch.setattr(liveplot, "_open_screen", screen.open)
    return clock, screen


def train(data, callbacks, epochs=5, batch_size=2, validation=True):
    X, y = data
    model = mg.Sequential(mg.Dense(5, 8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    opt = mg.SGD(model.parameters(), lr=0.05)
    schedule = mg.schedules.CosineAnnealing(0.05, t_max=epochs * 100, unit="iteration")
    with mg.use_backend("numpy"):
        return mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=epochs,
            batch_size=batch_size,
            seed=0,
            schedule=schedule,
            validation_data=(X[:50], y[:50]) if validation else None,
            callbacks=callbacks,
            verbose=0,
        )


def live_plot_warnings(record):
    return [w for w in record if "LivePlot" in str(w.message)]


def test_outside_a_notebook_it_does_nothing_and_warns_once(data, monkeypatch):
    monkeypatch.setattr(liveplot, "_warned", False)
    opened = []
    monkeypatch.setattr(liveplot, "_open_screen", opened.append)
    first, second = mg.LivePlot(), mg.LivePlot(every=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train(data, [first], epochs=2)
        train(data, [second], epochs=2)
    messages = live_plot_warnings(record)
    assert len(messages) == 1
    assert "Jupyter" in str(messages[0].message) and "mg.plot.history" in str(messages[0].message)
    for lp in (first, second):
        assert lp.active is False and lp.redraws == 0 and lp.figure is None
        assert not lp.per_iteration  # so Numba's fused epoch is kept outside a notebook
    assert opened == []


def test_redraws_are_bounded_by_time_not_by_iterations(data, notebook):
    clock, screen = notebook
    lp = mg.LivePlot(every=1, min_interval=1.0)
    history = train(data, [Tick(clock, 0.01), lp])  # 500 updates, 0.01 s each: 5 s
    assert history.n_iterations == 500 and clock.now == pytest.approx(5.0)
    # at most one redraw per simulated second, plus the final one
    assert 4 <= lp.redraws <= 5 + 1
    assert len(screen.images) == lp.redraws  # the first redraw opens the picture


def test_every_bounds_redraws_when_time_allows(data, notebook):
    clock, screen = notebook
    lp = mg.LivePlot(every=50, min_interval=0.0)
    train(data, [Tick(clock, 0.01), lp])
    # 500 updates / 50, plus 5 epoch ends (each right after a redraw at a multiple of 100
    # updates, but time has passed), plus the final redraw
    assert 10 <= lp.redraws <= 10 + 5 + 1


def test_slow_redraws_are_spaced_to_keep_the_overhead_small(data, notebook):
    clock, screen = notebook
    screen.cost = 0.5  # each redraw takes 0.5 s
    lp = mg.LivePlot(every=1, min_interval=0.0, max_overhead=0.05)
    train(data, [Tick(clock, 0.1), lp])  # 50 s of training
    # a 0.5 s redraw is followed by >= 10 s without one: about 5 in 50 s, plus the final one
    assert 5 <= lp.redraws <= 7
    assert lp.draw_seconds == pytest.approx(0.5 * lp.redraws)
    # drawing is <= 5% of the time, but for the first redraw and the final one
    assert lp.draw_seconds / (clock.now - lp.draw_seconds) <= 0.05 + 2 * 0.5 / 50 + 1e-9


def test_every_none_redraws_at_epoch_ends_only(data, notebook):
    clock, screen = notebook
    lp = mg.LivePlot(every=None, min_interval=0.0)
    assert not lp.per_iteration
    train(data, [Tick(clock, 0.01), lp], epochs=3)
    assert lp.redraws == 3 + 1


def test_lines_hold_the_history(data, notebook):
    clock, screen = notebook
    lp = mg.LivePlot(every=7, smooth=0.8, min_interval=0.0)
    history = train(data, [Tick(clock, 0.01), lp], epochs=3, batch_size=16)
    it, ep = history.iterations, history.epochs
    lines = lp.lines
    np.testing.assert_array_equal(lines["loss"].get_xdata(), it["step"])
    np.testing.assert_allclose(lines["loss"].get_ydata(), it["loss"])
    np.testing.assert_allclose(lines["lr"].get_ydata(), it["lr"])
    assert len(set(it["lr"])) > 1  # the cosine schedule shows
    average, expected = 0.0, []
    for n, value in enumerate(it["loss"], start=1):
        average = 0.8 * average + 0.2 * value
        expected.append(average / (1 - 0.8**n))
    np.testing.assert_allclose(lines["smoothed"].get_ydata(), expected, rtol=1e-12)
    per_epoch = -(-200 // 16)
    np.testing.assert_array_equal(
        lines["train_loss"].get_xdata(), [per_epoch, 2 * per_epoch, 3 * per_epoch]
    )
    np.testing.assert_allclose(lines["train_loss"].get_ydata(), ep["train_loss"])
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), ep["val_loss"])
    np.testing.assert_array_equal(lines["val_accuracy"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines["val_accuracy"].get_ydata(), ep["val_accuracy"])
    assert all(png.startswith(b"\x89PNG") for png in screen.images)
    assert len(screen.images) == lp.redraws >= 2 and screen.images[-1] != screen.images[0]
    assert "epoch 3/3" in lp.figure._suptitle.get_text()


def test_without_validation_the_validation_lines_are_empty(data, notebook):
    clock, screen = notebook
    lp = mg.LivePlot(min_interval=0.0)
    train(data, [lp], epochs=2, validation=False)
    assert np.isnan(lp.lines["val_loss"].get_ydata()).all()
    assert len(lp.lines["train_loss"].get_ydata()) == 2


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every"):
        mg.LivePlot(every=0)
    with pytest.raises(ValueError, match="smooth"):
        mg.LivePlot(smooth=1.0)
    with pytest.raises(ValueError, match="min_interval"):
        mg.LivePlot(min_interval=-1)
    with pytest.raises(ValueError, match="max_overhead"):
        mg.LivePlot(max_overhead=0)
    with pytest.raises(TypeError, match="figsize"):
        mg.LivePlot(figsize=5)


def test_auto_keeps_numbas_fused_epoch(notebook):
    lp = mg.LivePlot()
    with mg.use_backend("numba"):
        assert not lp.per_iteration  # redrawn at epoch ends
    with mg.use_backend("numpy"):
        assert lp.per_iteration  # every 10 updates
    with mg.use_backend("numba"):
        assert mg.LivePlot(every=10).per_iteration
        assert not mg.LivePlot(every=None).per_iteration
