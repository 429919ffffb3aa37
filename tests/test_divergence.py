"""Divergence: a non-finite loss stops training before its update, says where, keeps the history."""

import math
import warnings

import numpy as np
import pytest

import minigd as mg

CALM, WILD = 0.05, 1e30


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 20)).astype(np.float32)
    return X, X[:, :3].argmax(axis=1)


def _explodes_in_epoch_2(t):
    return CALM if t == 0 else WILD


class _Snapshots(mg.Callback):
    """Weights after every update, keyed by step."""

    def __init__(self):
        self.weights = {}

    def on_train_begin(self, state):
        self.weights[0] = state.model.flat_values.copy()

    def on_iteration_end(self, state):
        self.weights[state.step] = state.model.flat_values.copy()


def _fit(dtype=np.float32, callbacks=(), on_divergence="warn", **args):
    X, y = _data()
    model = mg.Sequential(mg.Dense(20, 16), mg.ReLU(), mg.Dense(16, 3), seed=1, dtype=dtype)
    opt = mg.SGD(model.parameters(), lr=CALM, momentum=0.9)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=opt,
        epochs=4,
        batch_size=32,
        seed=0,
        verbose=0,
        schedule=args.pop("schedule", _explodes_in_epoch_2),
        callbacks=callbacks,
        on_divergence=on_divergence,
        **args,
    )
    return model, history


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_divergence_stops_before_the_poisoned_update_and_says_where(dtype):
    with pytest.warns(RuntimeWarning, match="training diverged") as caught:
        model, history = _fit(dtype)
    d = history.divergence
    assert history.diverged and d["epoch"] == 2 and d["lr"] == WILD
    assert d["step"] == 8 + d["iteration"] and d["weights_finite"]
    message = str(caught[-1].message)
    assert f"epoch 2, iteration {d['iteration']}" in message and "lr 1e+30" in message
    assert [w for w in caught if "overflow" in str(w.message)] == []

    steps, losses = history.iterations["step"], history.iterations["loss"]
    assert steps == list(range(1, d["step"] + 1))
    assert not math.isfinite(losses[-1]) and all(map(math.isfinite, losses[:-1]))
    assert history.iterations["lr"][-1] == WILD and history.iterations["epoch"][-1] == 2
    assert history.epochs["epoch"] == [1]
    assert np.isfinite(model.flat_values).all()

    snapshots = _Snapshots()
    with pytest.warns(RuntimeWarning, match="diverged"):
        watched, watched_history = _fit(dtype, callbacks=[snapshots])
    assert watched_history.to_dict()["iterations"] == history.to_dict()["iterations"]
    assert watched_history.divergence == d
    before = snapshots.weights[d["step"] - 1]
    assert max(snapshots.weights) == d["step"] - 1
    assert model.flat_values.tobytes() == before.tobytes()


def test_on_divergence_raise_carries_the_facts_and_the_history():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(mg.DivergenceError, match="epoch 2, iteration") as caught:
            _fit(on_divergence="raise")
    exc = caught.value
    assert (exc.epoch, exc.lr) == (2, WILD) and exc.step == 8 + exc.iteration
    assert not math.isfinite(exc.loss)
    assert exc.history.diverged and exc.history.n_iterations == exc.step
    assert exc.history.divergence["iteration"] == exc.iteration


def test_diverging_from_the_first_update_keeps_the_initial_weights():
    model = mg.Sequential(mg.Dense(20, 16), mg.ReLU(), mg.Dense(16, 3), seed=1)
    model.load_state_dict({k: v * np.float32(1e20) for k, v in model.state_dict().items()})
    initial = model.flat_values.copy()  # finite weights, but the logits overflow float32 at once
    X, y = _data()
    with pytest.warns(RuntimeWarning, match="epoch 1, iteration 1"):
        history = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=32,
            verbose=0,
            seed=0,
        )
    assert history.n_iterations == 1 and history.n_epochs == 0
    assert model.flat_values.tobytes() == initial.tobytes()


def test_the_last_checkpoint_before_divergence_is_kept_and_resumable(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.warns(RuntimeWarning, match="diverged"):
        _, diverged = _fit(checkpoint=path)
    saved = mg.load_checkpoint(path)
    assert saved.training["epochs_done"] == 1 and not saved.history.diverged
    assert all(np.isfinite(v).all() for v in saved.model_state.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, history = _fit(checkpoint=path, resume=True, schedule=lambda t: CALM)
    assert not history.diverged and history.epochs["epoch"] == [1, 2, 3, 4]
    assert history.iterations["loss"][:8] == diverged.iterations["loss"][:8]


def test_an_lr_beyond_the_float_range_is_rejected():
    model = mg.Sequential(mg.Dense(2, 2), seed=0)
    with pytest.raises(ValueError, match="lr"):
        mg.SGD(model.parameters(), lr=1e39)
    opt = mg.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 1e39
    assert opt.lr == 0.1
    mg.SGD(mg.Sequential(mg.Dense(2, 2), dtype=np.float64).parameters(), lr=1e39)
