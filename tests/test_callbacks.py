"""Policies fed scripted sequences, no training; torch cross-check for ReduceLROnPlateau."""

import numpy as np
import pytest

import minigd as mg


def test_early_stopping_scripted_losses():
    es = mg.EarlyStopping(patience=2, min_delta=0.01)
    decisions = []
    for value in [1.0, 0.8, 0.795, 0.7, 0.71, 0.72]:
        improved = es.update(value)
        decisions.append((improved, es.should_stop))
    assert decisions == [
        (True, False),
        (True, False),
        (False, False),
        (True, False),
        (False, False),
        (False, True),
    ]
    assert es.best == 0.7 and es.best_epoch == 4 and es.stopped_epoch == 6


def test_early_stopping_max_mode_for_accuracy():
    es = mg.EarlyStopping(monitor="val_accuracy", patience=1)
    assert es.mode == "max"
    assert es.update(0.5) and es.update(0.6)
    assert not es.update(0.55) and es.should_stop


def test_early_stopping_arguments_checked():
    with pytest.raises(ValueError, match="monitor"):
        mg.EarlyStopping(monitor="val_los")
    with pytest.raises(ValueError, match="patience"):
        mg.EarlyStopping(patience=0)


def test_reduce_on_plateau_scripted_against_torch():
    torch = pytest.importorskip("torch")
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.84, 0.84, 0.84, 0.84]
    kwargs = dict(factor=0.5, patience=2, threshold=0.01, cooldown=1, min_lr=0.02)
    ours = mg.ReduceLROnPlateau(**kwargs)
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", **kwargs)
    lr = 0.1
    for value in losses:
        lr = ours.step(value, lr)
        theirs.step(value)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert lr == 0.02


def test_reduce_on_plateau_in_fit_lowers_the_recorded_lr():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 2, 64)
    model = mg.Sequential(mg.Dense(4, 2), seed=0)
    plateau = mg.ReduceLROnPlateau(monitor="train_loss", factor=0.5, patience=0, threshold=10.0)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=3,
        batch_size=32,
        callbacks=[plateau],
        verbose=0,
        seed=0,
    )
    assert sorted(set(history.iterations["lr"])) == [0.025, 0.05, 0.1]
    assert history.iterations["lr"][-1] == 0.025


def test_monitor_without_validation_data_is_a_clear_error():
    X, y = np.zeros((8, 2)), np.zeros(8, int)
    model = mg.Sequential(mg.Dense(2, 2), seed=0)
    with pytest.raises(ValueError, match="validation_data"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), 0.1),
            epochs=2,
            batch_size=4,
            callbacks=[mg.EarlyStopping()],
            verbose=0,
        )
