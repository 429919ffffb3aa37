"""Mistakes people bring from PyTorch and Keras get a message that says what to do."""

import warnings

import numpy as np
import pytest

import minigd as mg
from minigd import callbacks as C
from minigd import schedules as S


def problem(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)
    return X, y


def model(seed=0):
    return mg.Sequential(mg.Dense(5, 8), mg.Tanh(), mg.Dense(8, 3), seed=seed, dtype=np.float64)


def train(m, X, y, **kwargs):
    args = dict(optimizer=mg.SGD(m.parameters(), lr=0.1), epochs=1, batch_size=16, verbose=0)
    args.update(kwargs)
    return mg.fit(m, X, y, **args)


# ---- optimizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [mg.SGD, mg.Adam, mg.AdamW])
def test_optimizer_given_the_model_says_pass_parameters(cls):
    with pytest.raises(TypeError, match=r"pass model\.parameters\(\)"):
        cls(model(), lr=0.1)


def test_optimizer_given_layers_or_a_number_says_pass_parameters():
    m = model()
    with pytest.raises(TypeError, match=r"params\[0\] .*pass model\.parameters\(\)"):
        mg.SGD(list(m.layers), lr=0.1)
    with pytest.raises(TypeError, match=r"pass model\.parameters\(\)"):
        mg.SGD(3, lr=0.1)


@pytest.mark.parametrize("lr", [S.CosineAnnealing(0.1, 10), S.StepDecay(0.1, 2), lambda t: 0.1])
def test_schedule_as_lr_says_pass_it_to_fit(lr):
    m = model()
    with pytest.raises(TypeError, match=r"pass it|fit\(schedule=\.\.\.\)") as info:
        mg.SGD(m.parameters(), lr=lr)
    assert "fit(schedule=...)" in str(info.value)
    with pytest.raises(TypeError, match=r"fit\(schedule=\.\.\.\)"):
        mg.Adam(m.parameters(), lr=lr)
    optimizer = mg.SGD(m.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"fit\(schedule=\.\.\.\)"):
        optimizer.lr = lr
    assert optimizer.lr == 0.1


# ---- callbacks ---------------------------------------------------------------------------------
def test_a_single_callback_is_accepted():
    X, y = problem()
    stopper = mg.EarlyStopping(monitor="train_loss", patience=1, min_delta=10.0)
    history = train(model(), X, y, epochs=5, callbacks=stopper)
    assert history.stopped_early and len(history.epochs["epoch"]) == 2
    assert train(model(), X, y, callbacks=None).n_iterations == 4


def test_callbacks_that_are_not_a_list_say_so():
    X, y = problem()
    with pytest.raises(TypeError, match="a list of callbacks"):
        train(model(), X, y, callbacks=5)
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be a minigd Callback"):
        train(model(), X, y, callbacks=[mg.EarlyStopping(), "patience"])


def test_a_keras_hook_warns_once_naming_the_minigd_hook():
    calls = []

    class KerasStyle(mg.Callback):
        def on_batch_end(self, state):
            calls.append(state.step)

    X, y = problem()
    with pytest.warns(
        UserWarning,
        match=r"KerasStyle\.on_batch_end is never called .* "
        r"rename it to on_iteration_end",
    ) as record:
        train(model(), X, y, callbacks=[KerasStyle()])
    assert len([w for w in record if "on_batch_end" in str(w.message)]) == 1
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model(), X, y, callbacks=[KerasStyle()])  # once per class: no second warning
    assert calls == []


@pytest.mark.parametrize(
    "hook,ours",
    [
        ("on_epoch_start", "on_epoch_begin"),
        ("on_train_batch_end", "on_iteration_end"),
        ("on_train_start", "on_train_begin"),
        ("on_batch_begin", "no hook before an update"),
    ],
)
def test_other_foreign_hooks_name_their_counterpart(hook, ours):
    cls = type(f"Foreign_{hook}", (mg.Callback,), {hook: lambda self, state: None})
    with pytest.warns(UserWarning, match=ours):
        C.warn_foreign_hooks(cls())


def test_minigd_hooks_do_not_warn():
    class Fine(mg.Callback):
        def on_iteration_end(self, state):
            pass

        def on_epoch_begin(self, state):
            pass

    X, y = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model(), X, y, callbacks=[Fine(), mg.EarlyStopping(monitor="train_loss")])


# ---- torch tensors -----------------------------------------------------------------------------
class FakeTensor:
    """Duck-typed like a tensor of another framework: has .numpy() and .detach()."""

    shape, dtype = (60, 5), np.float32

    def numpy(self):
        return np.zeros(self.shape, self.dtype)

    def detach(self):
        return self


def test_a_tensor_like_x_says_convert_with_numpy():
    X, y = problem()
    with pytest.raises(TypeError, match=r"X is a .*FakeTensor.* convert with X\.numpy\(\)"):
        train(model(), FakeTensor(), y)


def test_torch_tensors_say_convert_with_numpy():
    torch = pytest.importorskip("torch")
    X, y = problem()
    m = model()
    before = m.flat_values.copy()
    with pytest.raises(TypeError, match=r"X is a torch Tensor.* convert with X\.numpy\(\)"):
        train(m, torch.from_numpy(X), y)
    with pytest.raises(TypeError, match=r"y is a torch Tensor.* convert with y\.numpy\(\)"):
        train(m, X, torch.from_numpy(y))
    with pytest.raises(TypeError, match=r"validation_data\[0\] is a torch Tensor"):
        train(m, X, y, validation_data=(torch.from_numpy(X), y))
    with pytest.raises(TypeError, match=r"X is a torch Tensor"):
        mg.accuracy(m, torch.from_numpy(X), y)
    np.testing.assert_array_equal(m.flat_values, before)
    train(m, torch.from_numpy(X).numpy(), torch.from_numpy(y).numpy())  # the fix works


# ---- input scale (issue 14) --------------------------------------------------------------------
def pixels(n=500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, 5)).astype(np.uint8)
    y = rng.integers(0, 3, size=n)
    return X, y


def test_raw_pixels_warn_with_the_fix():
    X, y = pixels()
    with pytest.warns(UserWarning, match=r"X / 255") as record:
        train(model(), X, y)
    scale = [w for w in record if "unit scale" in str(w.message)]
    assert len(scale) == 1 and "values 0..255" in str(scale[0].message)
    assert scale[0].filename == __file__


def test_large_signed_inputs_warn_to_standardize():
    X, y = problem()
    with pytest.warns(UserWarning, match=r"standardize X, e\.g\. \(X - X\.mean\(axis=0\)\)"):
        train(model(), X * 1000, y)


@pytest.mark.parametrize(
    "case", ["scaled pixels", "standardized", "3 x standardized", "normal", "binary"]
)
def test_normal_inputs_do_not_warn(case):
    raw, y = pixels()
    raw = raw.astype(np.float64)
    X = {
        "scaled pixels": raw / 255,
        "standardized": (raw - raw.mean(0)) / raw.std(0),
        "3 x standardized": 3 * (raw - raw.mean(0)) / raw.std(0),
        "normal": problem(len(y))[0],
        "binary": (raw > 128).astype(np.uint8),
    }[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model(), X, y)


def test_the_scale_check_reads_a_sample_of_a_memmap(tmp_path):
    X, y = pixels(n=5000)
    path = tmp_path / "X.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    X_mm = np.memmap(path, dtype=np.uint8, mode="r", shape=X.shape)
    with pytest.warns(UserWarning, match=r"a sample of 2\d\d rows"):
        train(model(), X_mm, y)
