"""dropout= and batch_norm= in registry.build_mlp, the CLI (--dropout, --batch-norm),
MLPClassifier and MLPBuilder."""

import numpy as np
import pytest

import minigd as mg
from minigd import registry
from minigd.cli import build_parser, main


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_build_mlp_adds_batch_norm_and_dropout_per_hidden_layer():
    model = registry.build_mlp(6, (5, 4), 3, dropout=0.25, batch_norm=True, seed=0)
    assert _kinds(model) == [
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dropout",
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dropout",
        "Dense",
    ]
    assert model.layers[3].p == 0.25 and model.layers[5].num_features == 4
    assert _kinds(registry.build_mlp(6, (5,), 3, seed=0)) == ["Dense", "ReLU", "Dense"]
    with pytest.raises(ValueError, match="dropout probability"):
        registry.build_mlp(6, (5,), 3, dropout=1.0)
    with pytest.raises(TypeError, match="batch_norm"):
        registry.build_mlp(6, (5,), 3, batch_norm="yes")
    assert {"dropout", "batch_norm", "flatten"} <= set(registry.names("layer"))


def test_cli_flags_parse_and_reach_the_model(tmp_path, capsys):
    args = build_parser().parse_args(["train", "--dropout", "0.3", "--batch-norm"])
    assert args.dropout == 0.3 and args.batch_norm is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dropout", "1"])
    sweep = build_parser().parse_args(["sweep", "--dropout", "0.2", "--batch-norm"])
    assert sweep.dropout == 0.2 and sweep.batch_norm
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--hidden",
            "32",
            "--quiet",
            "--dropout",
            "0.2",
            "--batch-norm",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    weights = np.load(out / "model.npz", allow_pickle=False)
    assert {"1.running_mean", "1.running_var", "1.weight", "4.weight"} <= set(weights.files)
    assert abs(weights["1.running_mean"]).max() > 0


def test_estimator_options_get_params_clone_and_fit():
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(130, 5)), rng.integers(0, 3, 130)
    clf = mg.MLPClassifier(hidden=(8,), dropout=0.2, batch_norm=True, epochs=2, seed=0)
    params = clf.get_params()
    assert params["dropout"] == 0.2 and params["batch_norm"] is True
    twin = clone(clf)
    assert twin.get_params() == params and "dropout=0.2" in repr(clf)
    clf.fit(X, y)
    assert _kinds(clf.model_) == ["Dense", "BatchNorm", "ReLU", "Dropout", "Dense"]
    assert clf.predict_proba(X).shape == (130, 3)
    again = clone(clf).fit(X, y)
    assert np.array_equal(again.model_.flat_values, clf.model_.flat_values)
    with pytest.raises(ValueError, match="dropout"):
        mg.MLPClassifier(dropout=1.2).fit(X, y)


def test_mlp_builder_options():
    build = mg.MLPBuilder((6, 5, 3), dropout=0.1, batch_norm=True)
    assert _kinds(build(0)) == ["Dense", "BatchNorm", "ReLU", "Dropout", "Dense"]
    assert "dropout=0.1, batch_norm=True" in repr(build)
    assert repr(mg.MLPBuilder((6, 5, 3))).endswith("init='he')")
