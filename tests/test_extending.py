"""docs/extending.md runs as written: its python blocks are executed in order, block by block, in
one namespace (as a reader pasting them into a notebook would), and what the page says about
them holds."""

import contextlib
import gc
import io
import pathlib
import re

import numpy as np
import pytest

import minigd as mg

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def blocks(language="python"):
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The namespace after every block ran, and each block's printed output."""
    gc.collect()  # classes an earlier exec of this page defined must not claim names twice
    namespace, printed = {"__name__": "extending_md"}, []
    for i, code in enumerate(blocks()):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"docs/extending.md, python block {i}", "exec"), namespace)
        except Exception as error:
            first = code.strip().splitlines()[0]
            raise AssertionError(
                f"docs/extending.md python block {i} (starting {first!r}) "
                f"failed: {type(error).__name__}: {error}"
            ) from error
        printed.append(out.getvalue())
    return namespace, printed


def test_the_page_has_the_three_classes_and_a_schedule():
    code = "\n".join(blocks())
    for base in ("mg.Layer", "(Layer)", "(Loss)", "(Optimizer)", "(Schedule)"):
        assert base in code
    assert len(blocks()) >= 8


def test_every_block_runs_in_order(page):
    namespace, printed = page
    for name in (
        "Scale",
        "LeakyReLU",
        "BrokenScale",
        "Huber",
        "SignSGD",
        "HeavyBall",
        "InverseTime",
        "NamedSignSGD",
    ):
        assert name in namespace, name
    assert issubclass(namespace["Scale"], mg.Layer)
    assert issubclass(namespace["Huber"], mg.Loss)
    assert issubclass(namespace["HeavyBall"], mg.Optimizer)
    assert issubclass(namespace["InverseTime"], mg.schedules.Schedule)


def test_what_the_gradcheck_section_prints(page):
    namespace, printed = page
    gradcheck_out = next(p for p in printed if p.startswith("GradcheckResult("))
    assert "ok=True" in gradcheck_out
    broken = namespace["broken"]
    assert (
        printed[[i for i, p in enumerate(printed) if p.startswith("False gamma[")][0]].strip()
        == f"False {broken.where}"
    )
    assert broken.max_error > 0.1
    with pytest.raises(AssertionError, match="BrokenScale"):
        broken.assert_ok()


def test_the_fit_example_trained_and_restored(page):
    namespace, _ = page
    history, model = namespace["history"], namespace["model"]
    assert history.n_iterations == 40
    assert set(history.epochs) >= {"val_loss", "val_mse", "val_r2"}
    lrs = history.iterations["lr"]
    assert lrs[0] == 0.05 and lrs[-1] == pytest.approx(0.05 / (1 + 0.5 * 4))  # InverseTime
    assert history.iterations["loss"][-1] < history.iterations["loss"][0]
    scale = model.layers[1]
    assert not np.allclose(scale.gamma.value, 1.0)  # the user layer learned
    np.testing.assert_array_equal(namespace["again"].state_dict()["1.gamma"], scale.gamma.value)


def test_the_named_optimizer_is_found_and_built(page):
    namespace, _ = page
    assert type(namespace["sign"]) is namespace["NamedSignSGD"]


def test_the_leaky_relu_and_sign_sgd_examples():
    namespace = {"__name__": "extending_md"}
    for code in blocks()[:1] + [
        b for b in blocks() if "class LeakyReLU" in b or "class SignSGD" in b
    ]:
        exec(compile(code, "docs/extending.md", "exec"), namespace)
    layer = namespace["LeakyReLU"](0.1)
    z = np.array([[-1.0, 2.0, 0.5]])
    np.testing.assert_allclose(layer.forward(z), [[-0.1, 2.0, 0.5]])
    np.testing.assert_allclose(layer.backward(np.ones_like(z)), [[0.1, 1.0, 1.0]])
    model = mg.Sequential(mg.Dense(2, 2), seed=0, dtype=np.float64)
    before = model.flat_values.copy()
    opt = namespace["SignSGD"](model.parameters(), lr=0.5)
    model.flat_grads[...] = [1.0, -2.0, 0.0, 3.0, -1e-9, 0.0]
    opt.step()
    np.testing.assert_allclose(model.flat_values - before, [-0.5, 0.5, 0.0, -0.5, 0.5, 0.0])


def test_the_printed_note_is_the_one_fit_prints(page, capsys):
    namespace, _ = page
    note = blocks("text")[0].strip()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    model = mg.Sequential(mg.Dense(4, 8), namespace["Scale"](8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    with mg.use_backend("numba"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=16,
            seed=0,
            verbose=2,
        )
    out = capsys.readouterr().out
    assert out.count(note) == 1, out
