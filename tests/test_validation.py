"""Bad input at every public entry point: property-based tests generate good and bad values.

For each numeric argument an oracle written from the documented contract decides whether a
generated value is acceptable; good values must be accepted, bad ones rejected with a
TypeError/ValueError whose message names the argument, and a rejected call changes nothing.
"""

import math
import numbers
import os
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigd as mg
from minigd import schedules as S

settings.register_profile(
    "minigd", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("minigd-thorough", settings.get_profile("minigd"), max_examples=600)
settings.load_profile(os.environ.get("MINIGD_HYPOTHESIS_PROFILE", "minigd"))

# ---- values and the oracle ------------------------------------------------------------------
ANY_VALUE = st.one_of(
    st.integers(-3, 12),
    st.integers(),
    st.floats(),
    st.floats(-2, 2),
    st.sampled_from(
        [
            0,
            1,
            0.0,
            1.0,
            -0.0,
            0.5,
            0.999999,
            1 - 1e-16,
            1e-300,
            2**70,
            10**400,
            math.inf,
            -math.inf,
            math.nan,
            3.5e38,
            1e39,
        ]
    ),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.just([1]),
    st.just((0.1,)),
    st.just(1 + 2j),
    st.just(Fraction(1, 2)),
    st.just(Decimal("0.5")),
    st.just(np.bool_(True)),
    st.integers(-3, 12).map(np.int64),
    st.floats(-2, 2, width=32).map(np.float32),
    st.just(np.array(0.5)),
    st.just(np.array([1, 2])),
)
SMALL_VALUE = ANY_VALUE.filter(lambda v: not (isinstance(v, numbers.Integral) and v > 3))


def as_int(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        return None
    return int(v)


def as_real(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def positive_int(v):
    return as_int(v) is not None and as_int(v) >= 1


def non_negative_int(v):
    return as_int(v) is not None and as_int(v) >= 0


def interval(low=None, high=None, low_open=False, high_open=False):
    def ok(v):
        f = as_real(v)
        if f is None:
            return False
        if low is not None and (f <= low if low_open else f < low):
            return False
        return not (high is not None and (f >= high if high_open else f > high))

    return ok


NON_NEGATIVE = interval(0.0)
LR32 = interval(0.0, float(np.finfo(np.float32).max))


def expect(call, ok, name):
    """ok: call returns; else it raises TypeError/ValueError naming ``name``."""
    if ok:
        return call()
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    assert name in str(caught.value), f"message {str(caught.value)!r} does not name {name!r}"
    return None


def _model(dtype=np.float32):
    return mg.Sequential(mg.Dense(4, 5), mg.ReLU(), mg.Dense(5, 3), seed=0, dtype=dtype)


def _params():
    return _model().parameters()


def _data(n=20):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _fit(**args):
    model = _model()
    options = dict(epochs=1, batch_size=8, verbose=0)
    options.update(args)
    return mg.fit(model, *_data(), optimizer=mg.SGD(model.parameters(), lr=0.1), **options)


# ---- one numeric argument at a time -----------------------------------------------------------
ARGUMENTS = {
    # name in the message: (call with the generated value, oracle, strategy)
    "in_features": (lambda v: mg.Dense(v, 3), positive_int, ANY_VALUE),
    "out_features": (lambda v: mg.Dense(3, v), positive_int, ANY_VALUE),
    "seed": (
        lambda v: mg.Sequential(mg.Dense(2, 2), seed=v),
        lambda v: v is None or non_negative_int(v),
        ANY_VALUE,
    ),
    "lr": (lambda v: mg.SGD(_params(), lr=v), LR32, ANY_VALUE),
    "momentum": (
        lambda v: mg.SGD(_params(), lr=0.1, momentum=v),
        interval(0.0, 1.0, high_open=True),
        ANY_VALUE,
    ),
    "dampening": (
        lambda v: mg.SGD(_params(), lr=0.1, momentum=0.5, dampening=v),
        interval(0.0, 1.0),
        ANY_VALUE,
    ),
    "weight_decay": (lambda v: mg.AdamW(_params(), weight_decay=v), NON_NEGATIVE, ANY_VALUE),
    "betas[0]": (
        lambda v: mg.Adam(_params(), betas=(v, 0.999)),
        interval(0.0, 1.0, high_open=True),
        ANY_VALUE,
    ),
    "betas[1]": (
        lambda v: mg.Adam(_params(), betas=(0.9, v)),
        interval(0.0, 1.0, high_open=True),
        ANY_VALUE,
    ),
    "eps": (lambda v: mg.Adam(_params(), eps=v), interval(0.0, low_open=True), ANY_VALUE),
    "batch_size": (lambda v: mg.BatchIterator(*_data(), batch_size=v), positive_int, ANY_VALUE),
    "epochs": (lambda v: _fit(epochs=v), positive_int, SMALL_VALUE),
    "step_size": (lambda v: S.StepDecay(0.1, step_size=v), positive_int, ANY_VALUE),
    "gamma": (
        lambda v: S.ExponentialDecay(0.1, gamma=v),
        interval(0.0, 1.0, low_open=True),
        ANY_VALUE,
    ),
    "t_max": (lambda v: S.CosineAnnealing(0.1, t_max=v), positive_int, ANY_VALUE),
    "min_lr": (lambda v: S.CosineAnnealing(0.1, t_max=5, min_lr=v), interval(0.0, 0.1), ANY_VALUE),
    "max_lr": (lambda v: S.CyclicLR(0.01, v, step_size=4), interval(0.01), ANY_VALUE),
    "warmup_steps": (lambda v: S.Warmup(S.Constant(0.1), warmup_steps=v), positive_int, ANY_VALUE),
    "start_factor": (
        lambda v: S.Warmup(S.Constant(0.1), 3, start_factor=v),
        interval(0.0, 1.0, low_open=True),
        ANY_VALUE,
    ),
    "patience": (lambda v: mg.EarlyStopping(patience=v), positive_int, ANY_VALUE),
    "min_delta": (lambda v: mg.EarlyStopping(min_delta=v), NON_NEGATIVE, ANY_VALUE),
    "factor": (
        lambda v: mg.ReduceLROnPlateau(factor=v),
        interval(0.0, 1.0, low_open=True, high_open=True),
        ANY_VALUE,
    ),
    "cooldown": (lambda v: mg.ReduceLROnPlateau(cooldown=v), non_negative_int, ANY_VALUE),
    "chunk_size": (
        lambda v: mg.evaluate(_model(), *_data(), chunk_size=v),
        lambda v: v is None or positive_int(v),
        SMALL_VALUE,
    ),
    "base_batch_size": (lambda v: mg.linear_scaling(0.1, 64, v), positive_int, ANY_VALUE),
}


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_numeric_argument_is_accepted_or_rejected_by_name(name):
    call, oracle, values = ARGUMENTS[name]

    @given(values)
    def check(value):
        expect(lambda: call(value), oracle(value), name)

    check()


@given(ANY_VALUE)
def test_rejected_lr_assignment_leaves_lr_unchanged(value):
    opt = mg.Adam(_params(), lr=0.01)
    expect(lambda: setattr(opt, "lr", value), LR32(value), "lr")
    if not LR32(value):
        assert opt.lr == 0.01


@given(st.sampled_from([True, False, 0, 1, None, "yes", 1.0]))
def test_flags_must_be_bools(value):
    ok = isinstance(value, bool)
    expect(lambda: mg.BatchIterator(*_data(), batch_size=4, shuffle=value), ok, "shuffle")
    expect(lambda: mg.SGD(_params(), lr=0.1, momentum=0.5, nesterov=value), ok, "nesterov")
    expect(lambda: mg.EarlyStopping(restore_best=value), ok, "restore_best")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mg.SGD(_params(), lr=0.1, nesterov=True), "nesterov"),
        (lambda: mg.SGD(_params(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
        (lambda: S.CyclicLR(0.1, 0.01, step_size=3), "base_lr"),
        (lambda: S.CosineAnnealing(0.1, 10, min_lr=0.2), "min_lr"),
        (lambda: S.StepDecay(0.1, 0), "step_size"),
        (lambda: S.StepDecay(0.1, 2, gamma=1.5), "gamma"),
        (lambda: S.ExponentialDecay(0.1, gamma=0.0), "gamma"),
        (lambda: S.CyclicLR(0.01, 0.1, 2, mode="sine"), "mode"),
        (lambda: S.Chain([S.Constant(0.1), S.Constant(0.2)], [0]), "boundaries"),
        (lambda: mg.Adam(_params(), betas=0.9), "betas"),
        (lambda: mg.EarlyStopping(monitor="val_los"), "monitor"),
        (lambda: mg.BatchIterator(*_data(), batch_size=4, dtype=np.int32), "dtype"),
        (lambda: mg.BatchIterator(*_data(), batch_size=4, seed=-1), "seed"),
        (lambda: mg.BatchIterator(*_data(), batch_size=30, drop_last=True), "batch_size"),
        (lambda: mg.BatchIterator(*_data(), batch_size=4).batches(0, start=6), "start"),
        (lambda: mg.Sequential(mg.Dense(4, 3), dtype="float16"), "dtype"),
        (
            lambda: mg.fit(
                _model(),
                *_data(),
                optimizer=mg.SGD(_params(), lr=0.1),
                epochs=1,
                batch_size=4,
                verbose=0,
            ),
            "another model",
        ),
        (lambda: mg.fit(_model(), *_data(), optimizer=None, epochs=1, batch_size=4), "optimizer"),
        (lambda: _fit(on_divergence="ignore"), "on_divergence"),
        (lambda: _fit(verbose=3), "verbose"),
        (lambda: _fit(schedule=0.1), "schedule"),
        (lambda: _fit(callbacks=[print]), r"callbacks\[0\]"),
        (lambda: _fit(validation_data=_data()[0]), "validation_data"),
        (lambda: _fit(validation_data=(_data()[0][:, :3], _data()[1])), r"validation_data\[0\]"),
        (lambda: _fit(shuffle=1), "shuffle"),
        (lambda: _fit(seed=1.5), "seed"),
        (lambda: _fit(batch_size=True), "batch_size"),
        (lambda: mg.EarlyStopping().update("low"), "value"),
        (lambda: mg.ReduceLROnPlateau().step(0.5, lr=-1), "lr"),
    ],
)
def test_other_argument_errors_name_the_argument(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


# ---- data: X and y ----------------------------------------------------------------------------
X_DTYPES = st.sampled_from(
    [
        np.float32,
        np.float64,
        np.int64,
        np.uint8,
        np.bool_,
        np.complex64,
        np.dtype("U2"),
        np.dtype(object),
    ]
)


@st.composite
def feature_arrays(draw):
    """Arrays of mostly the right shape (n, 4), sometimes wrong ndim/width/empty/non-finite."""
    dtype = draw(st.one_of(st.just(np.dtype(np.float32)), X_DTYPES.map(np.dtype)))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 12), st.just(4)),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        )
    )
    if dtype.kind == "O":
        return np.full(shape, 1.0, dtype=object)
    if dtype.kind == "U":
        return np.full(shape, "a", dtype=dtype)
    elements = st.floats(-5, 5, width=32) if dtype.kind in "fc" else None
    X = draw(hnp.arrays(dtype, shape, elements=elements))
    if dtype.kind == "f" and X.size and draw(st.booleans()):
        X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return X


def good_features(X, width=4):
    return (
        X.ndim == 2
        and X.shape[0] > 0
        and width in (None, X.shape[1])
        and X.dtype.kind in "fiub"
        and (X.dtype.kind != "f" or bool(np.isfinite(X).all()))
    )


@given(feature_arrays())
def test_features_are_checked_at_every_entry_point_and_a_rejected_fit_changes_nothing(X):
    ok = good_features(X)
    model = _model()
    opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights, state = model.flat_values.copy(), opt.state_dict()
    y = np.zeros(len(X) if X.ndim else 1, dtype=np.int64)
    expect(lambda: model.predict(X), ok, "X")
    expect(lambda: model.forward(X), ok, "x")
    expect(lambda: mg.evaluate(model, X, y), ok, "X")
    expect(lambda: mg.accuracy(model, X, y), ok, "X")
    expect(lambda: mg.BatchIterator(X, y, batch_size=4), good_features(X, width=None), "X")
    assert model.flat_values.tobytes() == weights.tobytes()
    if not ok:
        expect(
            lambda: mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=4, verbose=0),
            False,
            "X",
        )
        assert model.flat_values.tobytes() == weights.tobytes()
        assert opt.state_dict()["step"] == state["step"] == 0


@st.composite
def label_arrays(draw):
    kind = draw(
        st.sampled_from(
            ["good", "float", "negative", "too_big", "bool", "str", "ndim", "length", "nan"]
        )
    )
    n = 10
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2)))
    if kind == "float":
        y = y.astype(np.float64) + draw(st.sampled_from([0.0, 0.5]))
    elif kind == "negative":
        y[draw(st.integers(0, n - 1))] = draw(st.integers(-(10**6), -1))
    elif kind == "too_big":
        y[draw(st.integers(0, n - 1))] = draw(st.integers(3, 2**62))
    elif kind == "bool":
        y = y.astype(bool)
    elif kind == "str":
        y = y.astype(str)
    elif kind == "ndim":
        y = y.reshape(n, 1)
    elif kind == "length":
        y = y[: draw(st.integers(0, n - 1))]
    elif kind == "nan":
        y = y.astype(np.float64)
        y[0] = np.nan
    return y


def good_labels(y, n=10, classes=3):
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iuf":
        return False
    return bool(np.all(y == np.round(y)) and y.min() >= 0 and y.max() < classes)


@given(label_arrays())
def test_labels_are_checked_and_a_rejected_fit_changes_nothing(y):
    ok = good_labels(y)
    X = _data(10)[0]
    model = _model()
    opt = mg.Adam(model.parameters())
    weights = model.flat_values.copy()
    expect(lambda: mg.evaluate(model, X, y), ok, "y")
    expect(lambda: mg.accuracy(model, X, y), ok, "y")
    expect(lambda: mg.SoftmaxCrossEntropy().forward(np.zeros((10, 3)), y), ok, "y")
    if not ok:
        expect(
            lambda: mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=4, verbose=0),
            False,
            "y",
        )
        assert model.flat_values.tobytes() == weights.tobytes() and opt.step_count == 0
    else:
        mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=4, verbose=0)
        assert opt.step_count == 3


def test_generic_array_likes_and_lists_are_accepted():
    X, y = _data(12)
    model = _model()
    assert model.predict(X.tolist()).shape == (12,)
    assert mg.accuracy(model, X.tolist(), y.tolist()) == mg.accuracy(model, X, y)
    with pytest.raises(ValueError, match="X must be an array of numbers"):
        model.predict([[1, 2, 3, 4], [1, 2]])


def test_backward_checks_its_gradient():
    model = _model()
    model.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="dlogits"):
        model.backward(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match=r"dlogits must have shape \(2, 3\)"):
        model.backward(np.ones((3, 3)))
    with pytest.raises(TypeError, match="dlogits"):
        model.backward([["a", "b", "c"]] * 2)


# ---- state dicts ------------------------------------------------------------------------------
MUTATIONS = ["none", "drop", "extra", "shape", "dtype", "nan", "list", "values"]


@given(st.sampled_from(MUTATIONS), st.integers(0, 3), st.data())
def test_model_load_state_dict_is_all_or_nothing(mutation, which, data):
    model = _model()
    before = model.flat_values.copy()
    state = model.state_dict()
    key = sorted(state)[which]
    new = {k: v + np.float32(1) for k, v in state.items()}
    if mutation == "drop":
        del new[key]
    elif mutation == "extra":
        new["9.weight"] = np.zeros(2, np.float32)
    elif mutation == "shape":
        new[key] = np.zeros(new[key].shape + (1,), np.float32)
    elif mutation == "dtype":
        new[key] = new[key].astype(np.float64)
    elif mutation == "nan":
        new[key].flat[data.draw(st.integers(0, new[key].size - 1))] = np.inf
    elif mutation == "list":
        new[key] = new[key].tolist()
    elif mutation == "values":
        new[key] = data.draw(
            hnp.arrays(np.float32, new[key].shape, elements=st.floats(-1e6, 1e6, width=32))
        )
    ok = mutation in ("none", "values")
    expect(lambda: model.load_state_dict(new), ok, "state")
    if ok:
        assert all(np.array_equal(model.state_dict()[k], new[k]) for k in new)
    else:
        assert model.flat_values.tobytes() == before.tobytes()


OPT_MUTATIONS = [
    "none",
    "type",
    "missing",
    "step_negative",
    "step_bool",
    "hyper_bad",
    "hyper_keys",
    "state_shape",
    "state_dtype",
    "state_nan",
    "state_missing",
    "not_dict",
    "exp_avg_sq_negative",
]


OPT_MESSAGE = {"hyper_bad": "lr", "hyper_keys": "hyperparameters"}


@given(st.sampled_from(OPT_MUTATIONS), st.sampled_from(["sgd", "adam"]))
def test_optimizer_load_state_dict_is_all_or_nothing(mutation, kind):
    model = _model()
    make = (
        (lambda: mg.SGD(model.parameters(), lr=0.1, momentum=0.9))
        if kind == "sgd"
        else (lambda: mg.Adam(model.parameters(), lr=0.01))
    )
    source = make()
    X, y = _data()
    mg.fit(model, X, y, optimizer=source, epochs=1, batch_size=8, verbose=0, seed=0)
    good = source.state_dict()
    target = make()
    before = target.state_dict()
    d = {**good, "state": dict(good["state"]), "hyperparameters": dict(good["hyperparameters"])}
    key = sorted(d["state"])[0]
    if mutation == "type":
        d["type"] = "AdamW"
    elif mutation == "missing":
        del d["step"]
    elif mutation == "step_negative":
        d["step"] = -1
    elif mutation == "step_bool":
        d["step"] = True
    elif mutation == "hyper_bad":
        d["hyperparameters"]["lr"] = -0.1
    elif mutation == "hyper_keys":
        d["hyperparameters"]["nesterov_typo"] = True
    elif mutation == "state_shape":
        d["state"][key] = d["state"][key].reshape(-1)[:-1]
    elif mutation == "state_dtype":
        d["state"][key] = d["state"][key].astype(np.float64)
    elif mutation == "state_nan":
        d["state"][key] = d["state"][key].copy()
        d["state"][key].flat[0] = np.nan
    elif mutation == "state_missing":
        del d["state"][key]
    elif mutation == "not_dict":
        d = [d]
    elif mutation == "exp_avg_sq_negative":
        name = next((k for k in d["state"] if k.endswith("exp_avg_sq")), key)
        d["state"][name] = -np.abs(d["state"][name]) - 1
        mutation = "exp_avg_sq_negative" if kind == "adam" else "state_nan_free_negative"
    ok = mutation in ("none", "state_nan_free_negative")
    expect(lambda: target.load_state_dict(d), ok, OPT_MESSAGE.get(mutation, "state"))
    after = target.state_dict()
    expected = good if mutation == "none" else before
    if mutation == "state_nan_free_negative":
        return  # SGD momentum buffers may hold negative values
    assert after["step"] == expected["step"]
    assert after["hyperparameters"] == expected["hyperparameters"]
    assert all(
        after["state"][k].tobytes() == expected["state"][k].tobytes() for k in after["state"]
    )
