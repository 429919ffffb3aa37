"""MLPRegressor: scikit-learn's estimator checks for regressors, R², schedules by name, and the
code it shares with MLPClassifier."""

import pickle
import warnings

import numpy as np
import pytest

import minigd as mg
from minigd.estimator import DataConversionWarning, _MLPEstimator

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

FLOAT32_SUBSET_REASON = (
    "NumPy backend, float32: OpenBLAS picks kernels and blocking by the number of rows, so "
    "predict of a row alone and in a batch differ in the last bits (the float32 rounding bound "
    "of tests/test_row_independence.py: measured 5e-7 on predictions of about 2), above this "
    "check's atol of 1e-7. The Numba backend is exact (every row reduced the same way) and "
    "passes it; so does float64."
)


def expected_failed_checks(estimator):
    if estimator.dtype == "float32" and mg.get_backend() == "numpy":
        return {"check_methods_subset_invariance": FLOAT32_SUBSET_REASON}
    return {}


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Estimator MLPRegressor does not inherit", UserWarning)
    sklearn_checks = parametrize_with_checks(
        [mg.MLPRegressor(seed=0), mg.MLPRegressor(seed=0, dtype="float64")],
        expected_failed_checks=expected_failed_checks,
    )


@sklearn_checks
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "does not inherit from BaseEstimator"
        check(estimator)


def linear(n=300, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    W = rng.normal(size=(4, k))
    Y = X @ W + 0.01 * rng.normal(size=(n, k))
    return X, (Y[:, 0] if k == 1 else Y)


def test_both_estimators_share_one_base_class():
    assert issubclass(mg.MLPRegressor, _MLPEstimator) and issubclass(
        mg.MLPClassifier, _MLPEstimator
    )
    assert mg.MLPRegressor.get_params is mg.MLPClassifier.get_params
    assert mg.MLPRegressor._checked_params is mg.MLPClassifier._checked_params
    assert mg.MLPRegressor()._estimator_type == "regressor"
    assert mg.MLPRegressor().hidden == (100,)


@pytest.mark.parametrize("k", [1, 3])
def test_score_is_r2_and_matches_sklearn(k):
    X, y = linear(k=k)
    reg = mg.MLPRegressor(hidden=(32,), epochs=40, lr=1e-2, seed=0).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == y.shape and pred.dtype == np.float64
    assert reg.score(X, y) == pytest.approx(r2_score(y, pred), rel=1e-12)
    weights = np.linspace(0.1, 2, len(y))
    assert reg.score(X, y, sample_weight=weights) == pytest.approx(
        r2_score(y, pred, sample_weight=weights), rel=1e-12
    )
    assert reg.score(X, y) > 0.98
    assert reg.history_.epochs["train_loss"][-1] < reg.history_.epochs["train_loss"][0]


def test_constant_target_scores_like_sklearn():
    y = np.full(4, 2.0)
    assert mg.estimator.r2_score(y, y) == r2_score(y, y) == 1.0
    assert mg.estimator.r2_score(y, y + 1) == r2_score(y, y + 1) == 0.0


def test_fit_equals_minigd_fit_with_mse_loss():
    X, y = linear(n=64)
    reg = mg.MLPRegressor(hidden=(8,), epochs=3, batch_size=16, seed=3, dtype="float64").fit(X, y)
    model = mg.registry.build_mlp(4, (8,), 1, seed=3, dtype=np.float64)
    mg.fit(
        model,
        X,
        y,
        optimizer=mg.Adam(model.parameters(), lr=1e-3),
        loss=mg.MSELoss(),
        epochs=3,
        batch_size=16,
        seed=3,
        verbose=0,
    )
    np.testing.assert_array_equal(reg.model_.flat_values, model.flat_values)


def test_schedule_by_name_covers_the_run_and_options_reach_it():
    X, y = linear(n=100)
    reg = mg.MLPRegressor(
        hidden=(8,),
        epochs=4,
        batch_size=32,
        lr=0.01,
        schedule="onecycle",
        schedule_options={"pct_start": 0.25},
        seed=0,
    ).fit(X, y)
    lrs = reg.history_.iterations["lr"]
    assert len(lrs) == 16
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 3  # 0.25 * 16 - 1
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4)
    clf = mg.MLPClassifier(
        hidden=(4,),
        epochs=4,
        lr=0.1,
        schedule="multistep",
        schedule_options={"milestones": [1, 3]},
        seed=0,
    )
    clf.fit(X, (y > 0).astype(int))
    per_epoch = sorted(set(clf.history_.iterations["lr"]), reverse=True)
    assert per_epoch == pytest.approx([0.1, 0.01, 0.001])


@pytest.mark.parametrize(
    "params, error, words",
    [
        ({"schedule": "linear-ramp"}, ValueError, "schedule must be one of"),
        ({"schedule": "poly", "schedule_options": {"milestones": [2]}}, TypeError, "milestones"),
        (
            {"schedule": "multistep", "schedule_options": {"milestones": [3, 2]}},
            ValueError,
            "increase strictly",
        ),
        ({"schedule": "onecycle", "schedule_options": {"pct_start": 1.5}}, ValueError, "pct_start"),
        ({"schedule_options": {"t_0": 2}}, ValueError, "schedule given by name"),
        ({"schedule": "cosine", "schedule_options": [1]}, TypeError, "schedule_options"),
    ],
)
def test_schedule_errors_are_raised_in_fit(params, error, words):
    X, y = linear(n=40)
    reg = mg.MLPRegressor(epochs=2, **params)  # never raises
    with pytest.raises(error, match=words):
        reg.fit(X, y)
    assert not hasattr(reg, "model_")


def test_target_errors_are_clear():
    X, y = linear(n=40)
    reg = mg.MLPRegressor(hidden=(4,), epochs=1, seed=0)
    with pytest.raises(ValueError, match="requires y to be passed"):
        reg.fit(X, None)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        reg.fit(X, np.where(y > 1, np.nan, y))
    with pytest.raises(ValueError, match="y has 39 targets but X has 40"):
        reg.fit(X, y[:-1])
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        reg.fit(X, y[:, None])
    assert reg.predict(X).shape == (40,)


def test_partial_fit_grid_search_and_pickle():
    X, y = linear(n=80, k=2)
    reg = mg.MLPRegressor(hidden=(8,), batch_size=20, seed=1)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert reg.n_iter_ == 3 and reg.history_.iterations["step"] == list(range(1, 13))
    with pytest.raises(ValueError, match="1 target"):
        reg.partial_fit(X, y[:, 0])
    twin = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(twin.predict(X), reg.predict(X))
    search = GridSearchCV(
        mg.MLPRegressor(hidden=(8,), epochs=5, seed=0), {"lr": [1e-3, 1e-2]}, cv=2
    ).fit(X, y)
    assert search.best_params_ == {"lr": 1e-2}
    assert clone(reg).get_params() == reg.get_params()
