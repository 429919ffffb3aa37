"""minigd.registry: one home for the names of layers, activations, losses, optimizers and
schedules; one MLP builder and one optimizer builder for the CLI, the estimator, sweeps and the
LR range test."""

import argparse
import gc

import numpy as np
import pytest

import minigd as mg
from minigd import registry
from minigd.cli import build_parser

BUILT_IN = {
    "layer": {"dense", "relu", "tanh", "sigmoid"},
    "activation": {"relu", "tanh", "sigmoid"},
    "loss": {"softmax_cross_entropy"},
    "optimizer": {"sgd", "adam", "adamw"},
    "schedule": {"constant", "step", "exponential", "cosine", "cyclic", "warmup", "chain"},
}


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_name_maps_to_an_exported_class(kind):
    names = registry.names(kind)
    assert BUILT_IN[kind] <= set(names) and list(names) == sorted(names)
    for name in names:
        cls = registry.get(kind, name)
        assert cls.name == name
        if not cls.__module__.startswith("minigd."):
            continue  # a class another test defined and named (users may register too)
        assert getattr(mg, cls.__name__) is cls, f"{cls.__name__} is not exported by minigd"


@pytest.mark.parametrize("kind", registry.KINDS)
def test_unknown_name_is_a_value_error_listing_the_valid_ones(kind):
    with pytest.raises(ValueError) as info:
        registry.get(kind, "no-such-name")
    message = str(info.value)
    assert f"{kind} must be one of" in message and "'no-such-name'" in message
    for name in registry.names(kind):
        assert repr(name) in message


def test_bad_kind_and_non_string_name():
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.names("metric")
    with pytest.raises(TypeError, match="optimizer must be a name"):
        registry.get("optimizer", 3)
    assert registry.get("optimizer", "adamw") is mg.AdamW
    assert registry.get("activation", "tanh") is mg.Tanh
    assert registry.get("schedule", "cosine") is mg.CosineAnnealing


def _use_a_user_optimizer():
    class Halving(mg.SGD):
        name = "test_halving"

    class Unnamed(mg.SGD):  # inherits "sgd" from its parent: not registered
        pass

    assert "test_halving" in registry.names("optimizer")
    assert registry.get("optimizer", "sgd") is mg.SGD
    model = registry.build_mlp(3, [], 2, seed=0)
    opt = registry.build_optimizer("test_halving", model.parameters(), 0.5, momentum=0.9)
    assert type(opt) is Halving and opt.lr == 0.5
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = next(a.choices for a in sub.choices["train"]._actions if a.dest == "optimizer")
    assert "test_halving" in choices  # the CLI offers it without an edit


def test_a_user_subclass_is_found_by_its_own_name_only():
    _use_a_user_optimizer()
    gc.collect()  # the classes are gone: so is their name
    assert "test_halving" not in registry.names("optimizer")


def _claim_one_name_twice():
    class One(mg.Layer):
        name = "test_twice"

    class Two(mg.Layer):
        name = "test_twice"

    claimed = "'test_twice' is claimed by .*(One and .*Two|Two and .*One)"
    with pytest.raises(ValueError, match=claimed):
        registry.get("layer", "test_twice")


def test_two_classes_claiming_one_name_is_an_error_naming_both():
    _claim_one_name_twice()
    gc.collect()
    assert "test_twice" not in registry.names("layer")


@pytest.mark.parametrize(
    "activation, init", [("relu", "he"), ("tanh", "xavier"), ("sigmoid", "torch")]
)
def test_build_mlp_is_the_hand_built_network(activation, init):
    act = registry.get("activation", activation)
    by_hand = mg.Sequential(
        mg.Dense(6, 5, init=init),
        act(),
        mg.Dense(5, 4, init=init),
        act(),
        mg.Dense(4, 3, init=init),
        seed=7,
        dtype=np.float64,
    )
    built = registry.build_mlp(
        6, [5, 4], 3, activation=activation, init=init, seed=7, dtype=np.float64
    )
    assert repr(built) == repr(by_hand)
    for key, value in by_hand.state_dict().items():
        np.testing.assert_array_equal(built.state_dict()[key], value)
    assert built.dtype == np.float64


def test_build_mlp_without_hidden_layers_and_bad_arguments():
    linear = registry.build_mlp(4, (), 3, seed=0)
    assert repr(linear) == repr(mg.Sequential(mg.Dense(4, 3), seed=0))
    with pytest.raises(ValueError, match=r"hidden\[1\]"):
        registry.build_mlp(4, [8, 0], 3)
    with pytest.raises(TypeError, match="hidden"):
        registry.build_mlp(4, "8", 3)
    with pytest.raises(ValueError, match="activation must be one of"):
        registry.build_mlp(4, [8], 3, activation="gelu")
    with pytest.raises(ValueError, match="n_outputs"):
        registry.build_mlp(4, [8], 0)


def test_mlp_builder_of_sweeps_builds_through_the_registry():
    build = mg.MLPBuilder((6, 5, 3), activation="tanh", init="xavier", dtype="float64")
    same = registry.build_mlp(6, [5], 3, activation="tanh", init="xavier", seed=2, dtype=np.float64)
    built = build(2)
    assert repr(built) == repr(same)
    for key, value in same.state_dict().items():
        np.testing.assert_array_equal(built.state_dict()[key], value)
    with pytest.raises(ValueError, match="activation must be one of"):
        mg.MLPBuilder((6, 3), activation="gelu")


def test_build_optimizer_passes_hyperparameters_and_rejects_unknown_ones():
    model = registry.build_mlp(3, [4], 2, seed=0)
    sgd = registry.build_optimizer("sgd", model.parameters(), 0.1, momentum=0.9, nesterov=True)
    assert type(sgd) is mg.SGD
    assert sgd.hyperparameters()["momentum"] == 0.9 and sgd.hyperparameters()["nesterov"]
    adamw = registry.build_optimizer("adamw", model.parameters(), 0.01)
    assert adamw.hyperparameters()["weight_decay"] == 1e-2
    with pytest.raises(TypeError, match="'adam' does not take 'momentum'.*betas"):
        registry.build_optimizer("adam", model.parameters(), 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        registry.build_optimizer("lbfgs", model.parameters(), 0.1)
    assert registry.optimizer_arguments("sgd") == (
        "momentum",
        "dampening",
        "nesterov",
        "weight_decay",
    )


def test_the_cli_offers_the_registry_names():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "lr-find", "noise-scale", "sweep"):
        actions = {a.dest: a for a in sub.choices[command]._actions}
        assert tuple(actions["optimizer"].choices) == registry.names("optimizer")
        assert tuple(actions["activation"].choices) == registry.names("activation")
    schedules = {a.dest: a for a in sub.choices["train"]._actions}["schedule"].choices
    assert set(schedules) <= set(registry.names("schedule"))


def test_a_class_defined_twice_under_one_name_is_replaced_not_a_clash():
    import gc

    made = []
    for factor in (1.0, 2.0):  # as a notebook cell that is run twice

        class Rerun(mg.SGD):
            name = "rerun_test_sgd"
            scale = factor

        made.append(Rerun)
    gc.collect()
    assert mg.registry.get("optimizer", "rerun_test_sgd") is made[-1]
