"""fit takes any Loss: user-written regression and classification losses train end to end exactly
like a hand-written NumPy loop; targets are checked through the loss; metrics, callbacks,
evaluate and resume follow the loss (issue 10, item 5)."""

import numpy as np
import pytest

import minigd as mg


class MSE(mg.Loss):
    """A user's mean squared error over all entries (test-only; not a public minigd loss)."""

    target_kind = "values"

    def value_and_grad(self, outputs, targets):
        diff = outputs - targets
        return float(np.mean(diff**2)), 2.0 * diff / diff.size


class MyCrossEntropy(mg.Loss):
    """A user's softmax cross-entropy in plain NumPy."""

    target_kind = "classes"

    def value_and_grad(self, outputs, targets):
        z = outputs - outputs.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = outputs.shape[0]
        grad = np.exp(log_p)
        grad[np.arange(n), targets] -= 1.0
        return float(-log_p[np.arange(n), targets].mean()), grad / n


def regression_data(n=120, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    W = rng.normal(size=(3, outputs))
    Y = np.tanh(X @ W) + 0.1 * rng.normal(size=(n, outputs))
    return X, Y


def hand_loop(params, X, Y, loss_grad, epochs, batch, seed, lr, momentum):
    """Dense-Tanh-Dense trained by SGD (torch momentum) in plain NumPy, float64."""
    W1, b1, W2, b2 = (params[k].copy() for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    bufs = None
    losses = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            x, t = X[idx], Y[idx]
            h = np.tanh(x @ W1 + b1)
            out = h @ W2 + b2
            value, g = loss_grad(out, t)
            losses.append(value)
            gW2, gb2 = h.T @ g, g.sum(axis=0)
            dh = (g @ W2.T) * (1 - h**2)
            gW1, gb1 = x.T @ dh, dh.sum(axis=0)
            grads = [gW1, gb1, gW2, gb2]
            bufs = (
                [gr.copy() for gr in grads]
                if bufs is None
                else [momentum * b + gr for b, gr in zip(bufs, grads)]
            )
            for p, b in zip((W1, b1, W2, b2), bufs):
                p -= lr * b
    return {"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2}, losses


def model_for(outputs, seed=4):
    return mg.Sequential(
        mg.Dense(3, 8), mg.Tanh(), mg.Dense(8, outputs), seed=seed, dtype=np.float64
    )


@pytest.mark.parametrize("target_shape", ["2-D", "1-D"])
def test_user_regression_loss_trains_like_a_hand_written_loop(backend, target_shape):
    outputs = 2 if target_shape == "2-D" else 1
    X, Y = regression_data(outputs=outputs)
    y = Y if target_shape == "2-D" else Y[:, 0]
    model = model_for(outputs)
    start = {k: v.copy() for k, v in model.state_dict().items()}
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1, momentum=0.5),
        loss=MSE(),
        epochs=3,
        batch_size=32,
        seed=5,
        verbose=0,
    )
    expected, losses = hand_loop(start, X, Y, MSE().value_and_grad, 3, 32, 5, 0.1, 0.5)
    np.testing.assert_allclose(history.iterations["loss"], losses, rtol=1e-12)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-11, atol=1e-13)
    assert history.iterations["loss"][-1] < history.iterations["loss"][0]


def test_user_classification_loss_trains_like_a_hand_written_loop(backend):
    X, Y = regression_data(outputs=3)
    y = Y.argmax(axis=1)
    model = model_for(3)
    start = {k: v.copy() for k, v in model.state_dict().items()}
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.2, momentum=0.5),
        loss=MyCrossEntropy(),
        epochs=2,
        batch_size=16,
        seed=3,
        verbose=0,
        validation_data=(X, y),
    )
    expected, losses = hand_loop(start, X, y, MyCrossEntropy().value_and_grad, 2, 16, 3, 0.2, 0.5)
    np.testing.assert_allclose(history.iterations["loss"], losses, rtol=1e-12)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-11, atol=1e-13)
    assert set(history.epochs) >= {"val_loss", "val_accuracy"}
    assert history.epochs["val_accuracy"][-1] == mg.evaluate(model, X, y)["accuracy"]


def test_user_cross_entropy_equals_the_builtin_one():
    """The built-in loss and the user-written one agree, so the per-iteration paths do too."""
    X, Y = regression_data(outputs=3)
    y = Y.argmax(axis=1)
    runs = []
    for loss in (mg.SoftmaxCrossEntropy(), MyCrossEntropy()):
        model = model_for(3)
        with mg.use_backend("numpy"):
            history = mg.fit(
                model,
                X,
                y,
                optimizer=mg.Adam(model.parameters(), lr=0.01),
                loss=loss,
                epochs=2,
                batch_size=16,
                seed=3,
                verbose=0,
            )
        runs.append((model.state_dict(), history.iterations["loss"]))
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-12)
    for key in runs[0][0]:
        np.testing.assert_allclose(runs[0][0][key], runs[1][0][key], rtol=1e-10, atol=1e-13)


def test_regression_metrics_are_recorded_and_follow_sklearn():
    from sklearn.metrics import mean_squared_error, r2_score

    X, Y = regression_data(outputs=2)
    model = model_for(2)
    stopper = mg.EarlyStopping(monitor="val_r2", patience=50)
    history = mg.fit(
        model,
        X[:90],
        Y[:90],
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        loss=MSE(),
        epochs=3,
        batch_size=30,
        seed=0,
        verbose=0,
        validation_data=(X[90:], Y[90:]),
        callbacks=[stopper],
    )
    assert list(history.epochs) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_mse",
        "val_r2",
        "seconds",
        "samples_per_second",
    ]
    assert stopper.mode == "max" and stopper.best == max(history.epochs["val_r2"])
    pred = model.predict_logits(X[90:])
    result = mg.evaluate(model, X[90:], Y[90:], loss=MSE())
    assert set(result) == {"loss", "mse", "r2"}
    assert result["mse"] == pytest.approx(mean_squared_error(Y[90:], pred), rel=1e-12)
    assert result["r2"] == pytest.approx(
        r2_score(Y[90:], pred, multioutput="variance_weighted"), rel=1e-12
    )
    assert result["loss"] == pytest.approx(result["mse"], rel=1e-12)
    assert history.epochs["val_r2"][-1] == result["r2"]


def test_memmap_float_targets_are_gathered_not_copied(tmp_path):
    X, Y = regression_data(n=64, outputs=2)
    Xm = np.lib.format.open_memmap(tmp_path / "X.npy", "w+", np.float32, X.shape)
    Ym = np.lib.format.open_memmap(tmp_path / "Y.npy", "w+", np.float32, Y.shape)
    Xm[...], Ym[...] = X, Y
    it = mg.BatchIterator(Xm, Ym, 16, seed=0, dtype=np.float64, target_kind="values")
    assert np.shares_memory(it.y, Ym)
    xb, yb = next(iter(it))
    assert yb.dtype == np.float64 and yb.shape == (16, 2)
    np.testing.assert_array_equal(yb, Ym[it.permutation(0)[:16]].astype(np.float64))
    model = model_for(2)
    history = mg.fit(
        model,
        Xm,
        Ym,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        loss=MSE(),
        epochs=2,
        batch_size=16,
        seed=0,
        verbose=0,
    )
    reference = model_for(2)
    mg.fit(
        reference,
        X.astype(np.float32),
        Y.astype(np.float32),
        optimizer=mg.SGD(reference.parameters(), lr=0.1),
        loss=MSE(),
        epochs=2,
        batch_size=16,
        seed=0,
        verbose=0,
    )
    assert all(
        np.array_equal(a, b)
        for a, b in zip(model.state_dict().values(), reference.state_dict().values())
    )
    assert history.n_iterations == 8


@pytest.mark.parametrize(
    "loss, y, match",
    [
        (
            MSE(),
            np.zeros(120),
            r"1 target column\(s\) but the model has 2 outputs.*Loss MSE takes "
            r"real-valued targets of shape \(N, 2\)",
        ),
        (MSE(), np.zeros((119, 2)), r"119 targets but X has 120.*Loss MSE"),
        (MSE(), np.zeros((120, 2, 1)), r"1-D \(N,\) or 2-D.*Loss MSE"),
        (MSE(), np.full((120, 2), np.nan), r"NaN.*Loss MSE"),
        (
            MyCrossEntropy(),
            np.full(120, 2),
            r"class id 2 but the model has 2 outputs.*Loss "
            r"MyCrossEntropy takes integer class ids in \[0, 2\)",
        ),
        (
            mg.SoftmaxCrossEntropy(),
            np.zeros((120, 2)),
            r"row 0 sums to 0, not 1.*SoftmaxCrossEntropy "
            r"takes integer class ids.*or class probab",
        ),
        (mg.SoftmaxCrossEntropy(), np.zeros((120, 2, 1)), r"must be 1-D.*Loss SoftmaxCrossEntropy"),
    ],
)
def test_bad_targets_name_the_loss_and_the_expected_form(loss, y, match):
    X, _ = regression_data()
    model = model_for(2)
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=loss,
            epochs=1,
            batch_size=16,
            verbose=0,
        )
    with pytest.raises(ValueError, match=match):
        mg.fit(
            model,
            X,
            np.zeros((120, 2)) if loss.target_kind == "values" else np.zeros(120, int),
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=loss,
            epochs=1,
            batch_size=16,
            verbose=0,
            validation_data=(X, y),
        )
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_a_loss_that_is_not_a_loss_is_a_type_error():
    X, Y = regression_data()
    model = model_for(2)
    with pytest.raises(TypeError, match="loss must be a minigd Loss"):
        mg.fit(
            model,
            X,
            Y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=lambda o, t: 0,
            epochs=1,
            batch_size=16,
            verbose=0,
        )


def test_gradient_of_the_wrong_shape_is_a_clear_error():
    class Bad(MSE):
        def value_and_grad(self, outputs, targets):
            return 0.0, np.zeros(3)

    X, Y = regression_data()
    model = model_for(2)
    with pytest.raises(ValueError, match="Bad.value_and_grad returned a gradient of shape"):
        mg.fit(
            model,
            X,
            Y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=Bad(),
            epochs=1,
            batch_size=16,
            verbose=0,
        )


def test_callbacks_monitor_what_the_epoch_records():
    with pytest.raises(ValueError, match="'val_loss'.*'val_accuracy'.*val_nope") as error:
        mg.EarlyStopping(monitor="val_nope")
    assert "'val_mse'" in str(error.value) and "'train_loss'" in str(error.value)
    X, Y = regression_data()
    model = model_for(2)
    for callback in (
        mg.EarlyStopping(monitor="val_accuracy"),
        mg.ReduceLROnPlateau(monitor="val_accuracy"),
    ):
        with pytest.raises(
            ValueError,
            match=r"val_accuracy.*not recorded.*loss MSE.*"
            r"'train_loss', 'val_loss', 'val_mse', 'val_r2'",
        ):
            mg.fit(
                model,
                X,
                Y,
                optimizer=mg.SGD(model.parameters(), lr=0.1),
                loss=MSE(),
                epochs=1,
                batch_size=16,
                verbose=0,
                validation_data=(X, Y),
                callbacks=[callback],
            )
    plateau = mg.ReduceLROnPlateau(monitor="val_mse", patience=0, factor=0.5, threshold=10.0)
    assert plateau.mode == "min"
    history = mg.fit(
        model,
        X,
        Y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        loss=MSE(),
        epochs=3,
        batch_size=40,
        verbose=0,
        validation_data=(X, Y),
        callbacks=[plateau],
    )
    assert sorted(set(history.iterations["lr"])) == [0.025, 0.05, 0.1]


def test_evaluate_every_follows_the_loss():
    X, Y = regression_data()
    model = model_for(2)
    probe = mg.EvaluateEvery(X, Y, every=3, loss=MSE())
    mg.fit(
        model,
        X,
        Y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        loss=MSE(),
        epochs=1,
        batch_size=40,
        verbose=0,
        callbacks=[probe],
    )
    assert probe.steps == [0, 3] and len(probe.metrics["r2"]) == 2
    assert probe.loss[-1] == mg.evaluate(model, X, Y, loss=MSE())["loss"]
    with pytest.raises(ValueError, match="EvaluateEvery evaluates SoftmaxCrossEntropy"):
        mg.fit(
            model,
            X,
            Y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=MSE(),
            epochs=1,
            batch_size=40,
            verbose=0,
            callbacks=[mg.EvaluateEvery(X, np.zeros(120, int))],
        )


def test_regression_resume_is_exact_and_other_losses_are_refused(tmp_path):
    X, Y = regression_data()

    def run(epochs, path=None, resume=False, loss=MSE):
        model = model_for(2)
        opt = mg.Adam(model.parameters(), lr=0.01)
        history = mg.fit(
            model,
            X[:100],
            Y[:100],
            optimizer=opt,
            loss=loss(),
            epochs=epochs,
            batch_size=16,
            seed=1,
            verbose=0,
            validation_data=(X[100:], Y[100:]),
            callbacks=[mg.EarlyStopping("val_mse", patience=9)],
            checkpoint=path,
            resume=resume,
            checkpoint_every=None if path is None else 5,
        )
        return model, history

    ref_model, ref_history = run(3)
    run(1, tmp_path / "c.npz")
    model, history = run(3, tmp_path / "c.npz", resume=True)
    assert all(
        a.tobytes() == b.tobytes()
        for a, b in zip(model.state_dict().values(), ref_model.state_dict().values())
    )
    strip = lambda h: {
        k: v for k, v in h.to_dict()["epochs"].items() if k not in ("seconds", "samples_per_second")
    }
    assert strip(history) == strip(ref_history)
    assert history.iterations == ref_history.iterations

    class OtherMSE(MSE):
        pass

    with pytest.raises(
        ValueError, match="written by a run with loss MSE, this call has loss OtherMSE"
    ):
        run(3, tmp_path / "c.npz", resume=True, loss=OtherMSE)


def test_loss_base_class_contract():
    loss = mg.SoftmaxCrossEntropy()
    assert loss.name == "softmax_cross_entropy" and loss.target_kind == "classes"
    assert loss.metric_names == ("accuracy",) and loss.fused_role() == "softmax_cross_entropy"
    assert MSE().fused_role() is None and MSE().metric_names == ("mse", "r2")
    assert mg.Loss.name is None and MSE.name is None
    logits = np.array([[0.0, np.log(3.0)], [1.0, 0.0]])
    value, grad = loss.value_and_grad(logits, np.array([1, 0]))
    out = np.empty_like(logits)
    kernels = mg.backend.kernels()
    assert loss.value_and_grad_into(logits, np.array([1, 0]), out, kernels) == value
    np.testing.assert_array_equal(out, grad)
    assert MyCrossEntropy().value_and_grad_into(
        logits, np.array([1, 0]), out, kernels
    ) == pytest.approx(value, rel=1e-15)
    np.testing.assert_allclose(out, grad, rtol=1e-15)
    with pytest.raises(NotImplementedError, match="value_and_grad"):
        mg.Loss().value_and_grad(logits, logits)
    assert loss.metrics(logits, np.array([1, 1])) == {"accuracy": 0.5}
