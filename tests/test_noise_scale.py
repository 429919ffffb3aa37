"""Gradient noise scale: the two-batch estimators are unbiased where the truth is known in
closed form (and the naive ones are not), the model-based estimate converges to the exact
per-sample value, the callback tracks it without disturbing training, determinism, checks."""

import math

import numpy as np
import pytest

import minigd as mg
from minigd.experiments import noise_scale as ns


def gaussian_pairs(n_pairs, small_batch, big_batch, G, sigma_diag, rng):
    """Squared norms of batch-mean gradients of i.i.d. per-sample gradients g ~ N(G, diag)."""
    g = G + rng.normal(size=(n_pairs, big_batch, G.size)) * np.sqrt(sigma_diag)
    small = g[:, :small_batch].mean(axis=1)
    big = g.mean(axis=1)
    return (small**2).sum(axis=1), (big**2).sum(axis=1)


def within(estimate, truth, stderr, k=4.0):
    return abs(estimate - truth) < k * stderr


def test_two_batch_estimators_are_unbiased_on_gaussian_gradients():
    rng = np.random.default_rng(0)
    d = 40
    G = rng.normal(size=d)
    G *= math.sqrt(2.0) / np.linalg.norm(G)  # |G|^2 = 2
    sigma = rng.uniform(0.5, 2.5, size=d)
    sigma *= 60.0 / sigma.sum()  # tr(Sigma) = 60, B_simple = 30
    small, big = gaussian_pairs(3000, 4, 32, G, sigma, rng)
    est = mg.noise_scale_from_norms(small, big, 4, 32)
    assert est.n_pairs == 3000
    assert within(est.grad_sq, 2.0, est.grad_sq_stderr)
    assert within(est.trace, 60.0, est.trace_stderr)
    assert within(est.b_simple, 30.0, est.b_simple_stderr)
    # the test has power: standard errors are a few percent of the truth ...
    assert est.trace_stderr < 0.05 * 60 and est.grad_sq_stderr < 0.1 * 2
    # ... the naive estimators are rejected by the same check ...
    se_small = small.std(ddof=1) / math.sqrt(small.size)
    se_big = big.std(ddof=1) / math.sqrt(big.size)
    assert not within(small.mean(), 2.0, se_small)  # E = 2 + 60 / 4
    assert not within(big.mean(), 2.0, se_big)  # E = 2 + 60 / 32
    # ... and so is a trace estimator missing the 1 / (1 - B_small / B_big) factor
    wrong_trace = 4 * (small - big).mean()
    assert not within(wrong_trace, 60.0, est.trace_stderr)


def test_estimator_matches_the_written_formula_for_one_pair():
    est = mg.noise_scale_from_norms([5.0], [2.0], 2, 10, losses=[1.5])
    grad_sq = (10 * 2.0 - 2 * 5.0) / (10 - 2)
    trace = (5.0 - 2.0) / (1 / 2 - 1 / 10)
    assert est.grad_sq == pytest.approx(grad_sq, rel=1e-15)
    assert est.trace == pytest.approx(trace, rel=1e-15)
    assert est.b_simple == pytest.approx(trace / grad_sq, rel=1e-15)
    assert math.isnan(est.grad_sq_stderr) and math.isnan(est.b_simple_stderr)
    assert est.loss == 1.5


def test_ratio_of_means_not_mean_of_ratios():
    small, big = np.array([5.0, 3.0]), np.array([2.0, 2.5])
    est = mg.noise_scale_from_norms(small, big, 2, 10)
    g = (10 * big - 2 * small) / 8
    t = (small - big) / 0.4
    assert est.b_simple == pytest.approx(t.mean() / g.mean(), rel=1e-15)
    assert est.b_simple != pytest.approx((t / g).mean())


def test_non_positive_gradient_estimate_gives_inf():
    est = mg.noise_scale_from_norms([10.0, 9.0], [0.1, 0.2], 1, 10)
    assert est.grad_sq < 0 and est.b_simple == math.inf


def exact_noise_scale(model, X, y):
    """|G|^2 and tr(Sigma) from every per-sample gradient (Sigma with 1/N: the empirical
    distribution that batches drawn with replacement sample from)."""
    loss = mg.SoftmaxCrossEntropy()
    grads = []
    for i in range(len(X)):
        loss.forward(model.forward(X[i : i + 1]), y[i : i + 1])
        model.backward(loss.backward())
        grads.append(np.concatenate([p.grad.ravel() for p in model.parameters()]))
    grads = np.array(grads)
    G = grads.mean(axis=0)
    return float(G @ G), float(((grads - G) ** 2).sum(axis=1).mean())


def test_model_estimate_converges_to_the_exact_per_sample_value():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5))
    y = rng.integers(0, 3, size=30)
    y[:3] = [0, 1, 2]
    model = mg.Sequential(mg.Dense(5, 3, init="torch"), seed=0, dtype=np.float64)
    grad_sq, trace = exact_noise_scale(model, X, y)
    est = mg.gradient_noise_scale(model, X, y, 2, 16, n_pairs=3000, seed=0, details=True)
    assert within(est.grad_sq, grad_sq, est.grad_sq_stderr)
    assert within(est.trace, trace, est.trace_stderr)
    assert within(est.b_simple, trace / grad_sq, est.b_simple_stderr)
    assert est.trace_stderr < 0.05 * trace
    exact_loss = mg.evaluate(model, X, y)["loss"]
    assert est.loss == pytest.approx(exact_loss, rel=0.02)


def test_user_model_is_untouched():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(50, 5)), rng.integers(0, 3, size=50)
    model = mg.Sequential(mg.Dense(5, 8), mg.Tanh(), mg.Dense(8, 3), seed=0)
    values, grads = model.flat_values.copy(), model.flat_grads.copy()
    mg.gradient_noise_scale(model, X, y, 4, 40, n_pairs=3, seed=0)
    assert model.flat_values.tobytes() == values.tobytes()
    assert model.flat_grads.tobytes() == grads.tobytes()


def mnist_model(seed=0):
    return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)


def test_mnist_sample_value_is_finite_positive_plausible_and_seeded():
    X, y, _, _ = mg.datasets.load_mnist_sample()
    model = mnist_model()
    a = mg.gradient_noise_scale(model, X, y, 32, 512, n_pairs=4, seed=0)
    b = mg.gradient_noise_scale(model, X, y, 32, 512, n_pairs=4, seed=0)
    c = mg.gradient_noise_scale(model, X, y, 32, 512, n_pairs=4, seed=1)
    assert isinstance(a, float) and math.isfinite(a) and a > 0
    assert a == b
    assert a != c
    # at initialisation, 20 pairs of 32 / 1024 give 58 +- 3.5 (docs/readme_noise_scale.md)
    assert 20 < a < 200


def blobs(n=160, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    return (centers[y] + rng.normal(size=(n, features))).astype(np.float32), y


def small_model():
    return mg.Sequential(mg.Dense(6, 10), mg.ReLU(), mg.Dense(10, 3), seed=0)


def train(callbacks=(), epochs=2):
    X, y = blobs()
    model = small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=epochs,
        batch_size=16,
        seed=0,
        callbacks=list(callbacks),
        verbose=0,
    )
    return model, history


def test_callback_records_at_start_and_every_epoch_without_disturbing_training():
    tracker = mg.GradientNoiseScale(4, 32, n_pairs=5, seed=0)
    assert not tracker.per_iteration
    model, history = train([tracker])
    plain, _ = train()
    assert model.flat_values.tobytes() == plain.flat_values.tobytes()
    r = tracker.records
    assert r["epoch"] == [0, 1, 2]
    assert r["step"] == [0, 10, 20]
    assert all(math.isfinite(b) for b in r["b_simple"])  # 5 pairs: noisy, may dip below 0
    assert r["loss"][2] < r["loss"][0]
    assert len({len(v) for v in r.values()}) == 1


def test_callback_first_measurement_equals_the_function_with_the_same_seed():
    X, y = blobs()
    expected = mg.gradient_noise_scale(small_model(), X, y, 4, 32, n_pairs=5, seed=7)
    tracker = mg.GradientNoiseScale(4, 32, n_pairs=5, seed=7)
    train([tracker], epochs=1)
    assert tracker.records["b_simple"][0] == expected


def test_callback_every_n_updates_uses_the_per_iteration_path():
    tracker = mg.GradientNoiseScale(4, 32, n_pairs=2, every=3, seed=0, at_start=False)
    assert tracker.per_iteration
    train([tracker])
    assert tracker.records["step"] == [3, 6, 9, 12, 15, 18]
    assert tracker.records["epoch"] == [1, 1, 1, 2, 2, 2]


def test_callback_measures_on_given_data_and_is_repeatable():
    X2, y2 = blobs(n=80, seed=5)
    t1 = mg.GradientNoiseScale(4, 32, n_pairs=3, data=(X2, y2), seed=0)
    t2 = mg.GradientNoiseScale(4, 32, n_pairs=3, seed=0)
    t3 = mg.GradientNoiseScale(4, 32, n_pairs=3, data=(X2, y2), seed=0)
    train([t1], epochs=1), train([t2], epochs=1), train([t3], epochs=1)
    assert t1.records["b_simple"] != t2.records["b_simple"]
    assert t1.records == t3.records


def test_callback_csv_and_measure_outside_fit(tmp_path):
    X, y = blobs()
    model = small_model()
    tracker = mg.GradientNoiseScale(4, 32, n_pairs=3, seed=0)
    with pytest.raises(RuntimeError, match="start"):
        tracker.measure(model)
    tracker.start(model, X, y)
    est = tracker.measure(model, epoch=0, step=0)
    assert tracker.records["b_simple"] == [est.b_simple]
    tracker.to_csv(tmp_path / "ns.csv")
    lines = (tmp_path / "ns.csv").read_text().splitlines()
    assert lines[0] == ",".join(ns.RECORD_KEYS) and len(lines) == 2


def test_inf_with_a_warning_when_the_gradient_estimate_is_not_positive(monkeypatch):
    def fake_measure(self, model, n_pairs, rng, bar=None):
        return np.full(n_pairs, 10.0), np.full(n_pairs, 0.1), np.ones(n_pairs)

    monkeypatch.setattr(ns._GradientProbe, "measure", fake_measure)
    X, y = blobs()
    with pytest.warns(RuntimeWarning, match="swamps the signal"):
        assert mg.gradient_noise_scale(small_model(), X, y, 1, 10, n_pairs=2) == math.inf


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (
            dict(small_batch=32, big_batch=32),
            ValueError,
            "small_batch must be smaller than big_batch",
        ),
        (dict(small_batch=0, big_batch=32), ValueError, "small_batch"),
        (dict(small_batch=4, big_batch=8.0), TypeError, "big_batch"),
        (dict(small_batch=4, big_batch=32, n_pairs=0), ValueError, "n_pairs"),
        (dict(small_batch=4, big_batch=32, details=1), TypeError, "details"),
        (dict(small_batch=4, big_batch=32, seed=1.5), TypeError, "seed"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, error, words):
    X, y = blobs()
    with pytest.raises(error, match=words):
        mg.gradient_noise_scale(small_model(), X, y, **kwargs)


def test_bad_inputs_raise():
    X, y = blobs()
    with pytest.raises(TypeError, match="model must be a minigd Sequential"):
        mg.gradient_noise_scale(None, X, y, 4, 32)
    with pytest.raises(ValueError, match="features"):
        mg.gradient_noise_scale(small_model(), X[:, :5], y, 4, 32)
    with pytest.raises(ValueError, match="same non-zero length"):
        mg.noise_scale_from_norms([1.0, 2.0], [1.0], 4, 32)
    with pytest.raises(ValueError, match="NaN or inf"):
        mg.noise_scale_from_norms([1.0, np.nan], [1.0, 1.0], 4, 32)
    with pytest.raises(ValueError, match="small_batch must be smaller"):
        mg.GradientNoiseScale(64, 32)
    with pytest.raises(ValueError, match="every"):
        mg.GradientNoiseScale(4, 32, every=0)
    with pytest.raises(TypeError, match="data must be a pair"):
        mg.GradientNoiseScale(4, 32, data=X)


def test_plot_shows_b_simple_and_loss():
    import matplotlib

    matplotlib.use("Agg")
    tracker = mg.GradientNoiseScale(4, 32, n_pairs=3, seed=0)
    train([tracker], epochs=1)
    fig = mg.plot.noise_scale(tracker)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_ydata(), tracker.records["loss"])
    with pytest.raises(TypeError, match="GradientNoiseScale"):
        mg.plot.noise_scale([1, 2])
    matplotlib.pyplot.close("all")


def test_memmap_input_gives_the_same_value(tmp_path):
    X, y = blobs()
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    mm[...] = X
    mm.flush()
    kw = dict(small_batch=4, big_batch=32, n_pairs=3, seed=0)
    assert mg.gradient_noise_scale(
        small_model(), np.load(tmp_path / "X.npy", mmap_mode="r"), y, **kw
    ) == mg.gradient_noise_scale(small_model(), X, y, **kw)


def test_readme_example_number():
    """docs/readme_noise_scale.md shows B_simple = 61.1 at initialisation; keep them in step."""
    X, y, _, _ = mg.datasets.load_mnist_sample()
    b = mg.gradient_noise_scale(
        mnist_model(0), X, y, small_batch=32, big_batch=1024, n_pairs=50, seed=0
    )
    assert round(b, 1) == 61.1
