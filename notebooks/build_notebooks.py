"""Write the teaching notebooks from the cells below, then execute them in place.

    python notebooks/build_notebooks.py              # write and execute all twelve
    python notebooks/build_notebooks.py 2 5          # only notebooks 02 and 05
    python notebooks/build_notebooks.py --no-execute # write the cells only

The cells live here, as plain text, so a change to a notebook is reviewed as a change to this
file and the .ipynb files can always be regenerated. Executing runs every notebook from a fresh
``python3`` kernel in the notebooks folder, with this checkout first on PYTHONPATH, and keeps
the outputs (plots as PNG) so they show on a code host. BLAS, OpenMP and Numba threads are
pinned to 1 unless already set: the matrices are small, extra threads only contend on a busy
2-core machine (two Numba threads on a loaded machine made an epoch up to 10x slower), and one
thread keeps the numbers bit-for-bit repeatable.

Every number the prose quotes is computed in a cell (``say`` in SETUP_SPLIT shows a sentence
built from the run), and every claim is an ``assert`` in a cell, so a change that breaks a claim
fails the build instead of shipping a false sentence.
"""

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
CELL_TIMEOUT = 600

SETUP = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import minigd as mg

X, y, X_test, y_test = mg.datasets.load_mnist_sample()
print(f"train {X.shape} {X.dtype}, test {X_test.shape}; classes {np.unique(y)}")"""

# Notebooks that make choices: 7000 training digits, 1000 validation digits for every choice,
# and the 2000 test digits touched once, at the end. ``say`` shows a sentence whose numbers come
# from the run, so the text cannot drift from the outputs; the claims themselves are asserts.
SETUP_SPLIT = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
import minigd as mg

X_all, y_all, X_test, y_test = mg.datasets.load_mnist_sample()
X, y = X_all[:7000], y_all[:7000]              # training
X_val, y_val = X_all[7000:], y_all[7000:]      # validation: every choice is made on it
print(f"train {X.shape} {X.dtype}, validation {X_val.shape}, test {X_test.shape} "
      f"(used once, at the end); classes {np.unique(y)}")


def say(text):
    \"\"\"Show a sentence whose numbers were computed above.\"\"\"
    display(Markdown(text))"""


def md(text):
    return ("markdown", text)


def code(text):
    return ("code", text)


def make_notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(cells):
        text = textwrap.dedent(text).strip("\n")
        cell = (
            nbformat.v4.new_markdown_cell(text)
            if kind == "markdown"
            else nbformat.v4.new_code_cell(text)
        )
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    return nb


# --------------------------------------------------------------------------------------------
NOTEBOOKS = {}


def notebook(filename):
    def register(build):
        NOTEBOOKS[filename] = build
        return build

    return register


@notebook("01_epochs_iterations_batches.ipynb")
def epochs_iterations_batches():
    return [
        md("""
        # 1. Epochs, iterations, batches

        An **epoch** is one pass over the training set. An **iteration** is one update of the
        weights, computed from one **batch**. With N samples and batch size B an epoch has
        `ceil(N / B)` iterations; the last batch holds what is left over, unless
        `drop_last=True` skips it. This notebook prints that arithmetic, draws it, and then
        compares batch gradient descent (B = N), mini-batch (B = 64) and pure SGD (B = 1).

        Everything runs on the 10,000 MNIST digits bundled with minigd, split into training,
        validation and test digits, with fixed seeds, in a few seconds: a longer run gives a
        smoother picture. Every number in the text below is computed by the cell above it,
        and every claim is checked by an `assert` when the notebook is built.
        """),
        code(SETUP_SPLIT),
        md("""
        ## The arithmetic

        `BatchIterator` is what `fit` uses. `describe()` states its plan; iterating over it is
        one epoch.
        """),
        code("""
        for batch_size in (64, 100, 300, 7000, 1):
            print(mg.BatchIterator(X, y, batch_size=batch_size, seed=0).describe())
        print(mg.BatchIterator(X, y, batch_size=300, drop_last=True, seed=0).describe())

        it = mg.BatchIterator(X, y, batch_size=300, seed=0)
        sizes = [len(yb) for xb, yb in it]                  # one epoch
        print(f"\\nbatch 300: {len(sizes)} iterations, sizes {sizes[:3]} ... {sizes[-3:]}, "
              f"{sum(sizes)} samples")
        orders = [it.permutation(epoch) for epoch in range(3)]
        print("every sample exactly once per epoch:",
              all(np.array_equal(np.sort(order), np.arange(len(X))) for order in orders))
        print("epoch 0 starts with samples", orders[0][:5], "; epoch 1 with", orders[1][:5])

        full, rest = divmod(len(X), 300)
        dropped = len(mg.BatchIterator(X, y, batch_size=300, drop_last=True, seed=0))
        assert sizes == [300] * full + [rest] and dropped == full
        say(f"{len(X)} samples in batches of 300 make {full} full batches and one of {rest}: "
            f"{len(sizes)} iterations. With `drop_last=True` the epoch has {dropped} iterations "
            f"and {rest} samples sit out, a different {rest} every epoch, because the order is "
            f"reshuffled each epoch.")
        """),
        md("""
        ## One run, iteration by iteration

        `mg.plot.history` draws the loss of every batch, the epoch means, the validation loss
        at each epoch end, and grey lines where one epoch ends and the next begins.
        """),
        code("""
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=3,
                         batch_size=64, seed=0, validation_data=(X_val, y_val), verbose=0)
        first_run = history
        print(history)
        per_epoch = [history.iterations["epoch"].count(e) for e in (1, 2, 3)]
        print("iterations per epoch:", per_epoch)
        print("last update:", {k: v[-1] for k, v in history.iterations.items()})
        assert per_epoch == [-(-len(X) // 64)] * 3 and history.n_iterations == sum(per_epoch)
        say(f"Three epochs of batch 64 are 3 x {per_epoch[0]} = {history.n_iterations} updates.")
        mg.plot.history(history)
        plt.show()
        """),
        md("""
        Each batch's loss scatters around the epoch mean because each batch is a different
        sample of 64 digits. The lr panel is flat: no schedule here.

        ## Batch GD, mini-batch, pure SGD

        Same model, same seed, same lr 0.05 (a fixed choice, not tuned for any of the three),
        on a 2000-image slice of the training set so that pure SGD (one Python step per
        sample) stays quick. Accuracy is measured on the 1000 validation images by
        `mg.EvaluateEvery`, which evaluates every few updates.

        **Budget of epochs**: three passes over the data each.
        """),
        code("""
        X_small, y_small = X[:2000], y[:2000]
        LR = 0.05

        def train(X_part, y_part, batch_size, epochs, every, shuffle=True):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            probe = mg.EvaluateEvery(X_val, y_val, every=every)
            history = mg.fit(model, X_part, y_part, optimizer=mg.SGD(model.parameters(), lr=LR),
                             epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=0,
                             callbacks=[probe], verbose=0)
            return history, probe

        same_epochs = {"batch GD (B = 2000)": train(X_small, y_small, 2000, 3, every=1),
                       "mini-batch (B = 64)": train(X_small, y_small, 64, 3, every=4),
                       "pure SGD (B = 1)": train(X_small, y_small, 1, 3, every=100)}
        print(f"{'run':22s} {'updates':>8s} {'samples seen':>13s} {'val accuracy':>13s}")
        for name, (history, probe) in same_epochs.items():
            print(f"{name:22s} {history.n_iterations:8d} {sum(history.iterations['batch_size']):13d}"
                  f" {probe.accuracy[-1]:13.3f}")
        BUDGET = same_epochs["mini-batch (B = 64)"][0].n_iterations
        say(f"**Budget of updates**: {BUDGET} updates each, what mini-batch makes in three "
            f"epochs. For batch GD that is {BUDGET} epochs; for pure SGD {BUDGET} samples, the "
            f"first {BUDGET} of its shuffled order (so the slice `order[:{BUDGET}]` trained "
            f"without shuffling makes exactly the first {BUDGET} updates of a seeded run).")
        """),
        code("""
        order = mg.BatchIterator(X_small, y_small, batch_size=1, seed=0).permutation(0)[:BUDGET]
        same_updates = {"batch GD (B = 2000)": train(X_small, y_small, 2000, BUDGET, every=4),
                        "mini-batch (B = 64)": same_epochs["mini-batch (B = 64)"],
                        "pure SGD (B = 1)": train(X_small[order], y_small[order], 1, 1, every=4,
                                                  shuffle=False)}
        for name, (history, probe) in same_updates.items():
            print(f"{name:22s} {history.n_iterations:4d} updates, "
                  f"{sum(history.iterations['batch_size']):7d} samples seen, "
                  f"val accuracy {probe.accuracy[-1]:.3f}")

        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
        for name, (history, probe) in same_epochs.items():
            left.plot(probe.epochs, probe.accuracy, marker="o" if len(probe.steps) < 10 else None,
                      label=f"{name}: {history.n_iterations} updates")
        for name, (history, probe) in same_updates.items():
            right.plot(probe.steps, probe.accuracy,
                       label=f"{name}: {sum(history.iterations['batch_size'])} samples")
        left.set(title="same budget of epochs (3)", xlabel="epoch", ylabel="validation accuracy")
        right.set(title=f"same budget of updates ({BUDGET})", xlabel="update (step)")
        left.legend(fontsize="small"); right.legend(fontsize="small")
        plt.show()
        """),
        code("""
        epochs_acc = {name: probe.accuracy[-1] for name, (h, probe) in same_epochs.items()}
        updates_acc = {name: probe.accuracy[-1] for name, (h, probe) in same_updates.items()}
        gd, mini, sgd = "batch GD (B = 2000)", "mini-batch (B = 64)", "pure SGD (B = 1)"
        # the claims of the text below, checked
        assert epochs_acc[sgd] > epochs_acc[mini] > epochs_acc[gd]
        assert updates_acc[sgd] < min(updates_acc[mini], updates_acc[gd])
        assert updates_acc[gd] - 0.06 < updates_acc[mini]
        say(f"**What to notice.** Per epoch, small batches win: pure SGD makes 2000 updates per "
            f"pass and ends at {epochs_acc[sgd]:.3f} validation accuracy, mini-batch at "
            f"{epochs_acc[mini]:.3f}, while batch GD makes one update per pass, and three "
            f"full-batch steps barely move the model ({epochs_acc[gd]:.3f}). Per update, the "
            f"picture flips: {BUDGET} single-sample steps have seen only {BUDGET} digits and "
            f"reach {updates_acc[sgd]:.3f}, while batch GD uses the exact gradient of all 2000 at "
            f"every step ({updates_acc[gd]:.3f}). Mini-batch comes close to batch GD per update "
            f"({updates_acc[mini]:.3f}) at 1/{2000 / 64:.0f} of the work: 64 digits already "
            f"estimate the gradient well. That, and using the hardware far better than B = 1, "
            f"is why mini-batches are the default.")
        """),
        md("""
        ## Watching a run live

        `mg.LivePlot()` is a callback that redraws one figure in place while `fit` runs: the loss
        of every update (raw and smoothed), the epoch's train and validation loss, the lr and the
        validation accuracy. Redraws are spaced in time, so drawing costs a few percent of the
        run; outside a notebook it does nothing and says so once. Here it watches the first
        run again, on the Numba backend, where it redraws at epoch ends so that every epoch still
        runs as one compiled call.
        """),
        code("""
        live = mg.LivePlot()
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        watched = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=3,
                         batch_size=64, seed=0, validation_data=(X_val, y_val), verbose=0,
                         callbacks=[live])
        # the live figure shows exactly what the history holds, and the run is the same run
        assert live.redraws >= 1
        assert watched.iterations["loss"] == first_run.iterations["loss"]
        say(f"LivePlot drew the figure {live.redraws} time{'s' if live.redraws != 1 else ''} in "
            f"{watched.n_iterations} updates; the run "
            f"is bit for bit the first run of this notebook (same seed, same losses).")
        """),
    ]


@notebook("02_learning_rate.ipynb")
def learning_rate():
    return [
        md("""
        # 2. Learning rate

        The learning rate is the size of each step: `w <- w - lr * gradient`. Too small and
        the loss crawls; a good value converges; too large and the steps overshoot, the loss
        jumps up and training falls apart. Nine values of plain SGD, from 1e-6 to 3, on the
        same model and batches (batch 64, three epochs; a longer run gives a smoother picture),
        each trained from five seeds with `mg.sweep`, so that the spread between seeds shows
        which differences are real. Every choice is made on the validation digits; the test
        digits are used once, at the end.
        """),
        code(SETUP_SPLIT),
        code("""
        def build(seed):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        LRS = (1e-6, 1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
        SEEDS = range(5)
        result = mg.sweep(build, X, y, batch_sizes=[64], lrs=LRS, epochs=3, seeds=SEEDS,
                          validation_data=(X_val, y_val))

        def over_seeds(lr, column):
            values = np.array([row[column] for row in result.rows(lr=lr)])
            return values.mean(), values.std()

        print(f"{'lr':>6s} {'last-epoch train loss':>22s} {'val loss':>16s} {'val accuracy':>16s}"
              f"   (mean +- sd over {len(SEEDS)} seeds)")
        for lr in LRS:
            cells = [over_seeds(lr, c) for c in ("train_loss", "val_loss", "val_accuracy")]
            print(f"{lr:6g} " + " ".join(f"{m:13.3f} +- {s:5.3f}" for m, s in cells))
        print("diverged cells:", sum(result.column("diverged")))
        """),
        md("""
        ## Loss against learning rate: the U-curve

        The validation loss after three epochs, mean and one standard deviation over the five
        seeds. Grey: the loss of a uniform guess over 10 classes, ln 10.
        """),
        code("""
        val = np.array([over_seeds(lr, "val_loss") for lr in LRS])
        train_loss = np.array([over_seeds(lr, "train_loss") for lr in LRS])
        fig, ax = plt.subplots(figsize=(7, 4))
        for (mean, sd), label in ((val.T, "validation loss"), (train_loss.T, "last-epoch train loss")):
            line, = ax.plot(LRS, mean, marker="o", label=label)
            ax.fill_between(LRS, mean - sd, mean + sd, color=line.get_color(), alpha=0.25)
        ax.axhline(np.log(10), color="0.5", ls=":", lw=1, label="ln 10 (uniform guess)")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss after 3 epochs",
               title=f"mean +- sd over {len(SEEDS)} seeds")
        ax.legend(fontsize="small")
        plt.show()

        best_lr = LRS[int(np.argmin(val[:, 0]))]
        good = [lr for lr, (mean, sd) in zip(LRS, val) if mean < 2 * val[:, 0].min()]
        assert val[0, 0] > 2 and val[-1, 0] > 2 * val[:, 0].min()      # both ends are bad: a U
        assert LRS[0] < min(good) and max(good) < LRS[-1]
        say(f"The lowest validation loss is at lr {best_lr:g} "
            f"({val[:, 0].min():.3f} +- {val[LRS.index(best_lr), 1]:.3f}). Within a factor of 2 "
            f"of it lie lr {min(good):g} to {max(good):g}; both ends of the range are far above "
            f"it.")
        """),
        md("""
        ## Five runs, update by update

        The batch loss of seed 0 at five of the learning rates, as `fit` recorded it.
        """),
        code("""
        SHOWN = (1e-6, 0.01, 0.1, 1.0, 3.0)
        runs = {lr: result.histories[64, lr, 0] for lr in SHOWN}
        print(f"{'lr':>6s} {'first loss':>11s} {'largest loss':>13s} {'last-epoch loss':>16s}")
        for lr, history in runs.items():
            losses = history.iterations["loss"]
            print(f"{lr:6g} {losses[0]:11.3f} {max(losses):13.3g} "
                  f"{history.epochs['train_loss'][-1]:16.3f}")

        ax = mg.plot.compare({f"lr {lr:g}": h for lr, h in runs.items()}, smooth=10, log=True)
        ax.lines[0].set_linestyle("--")
        ax.legend(fontsize="small")           # redrawn, so that its first entry is dashed too
        ax.axhline(np.log(10), color="0.5", ls=":", lw=1)
        ax.text(ax.get_xlim()[1] * 0.98, np.log(10) * 1.12, "ln 10 = loss of a uniform guess",
                color="0.3", fontsize=8, ha="right")
        ax.set_title("batch loss, mean of the last 10 updates (log scale), seed 0")
        plt.show()
        """),
        code("""
        first = {lr: h.iterations["loss"][0] for lr, h in runs.items()}
        last = {lr: h.epochs["train_loss"][-1] for lr, h in runs.items()}      # seed 0, plotted
        mean_last = {lr: over_seeds(lr, "train_loss")[0] for lr in SHOWN}      # over the seeds
        updates = runs[1e-6].n_iterations
        jump = max(runs[3.0].iterations["loss"]) / first[3.0]
        spike_1 = max(runs[1.0].iterations["loss"][:20]) / first[1.0]
        # the claims of the text below, checked on seed 0 and on the mean of the seeds
        for losses in (last, mean_last):
            assert abs(losses[1e-6] - first[1e-6]) < 0.1                # hardly left its start
            assert losses[0.1] < losses[0.01] < losses[1e-6]            # 0.01 slow, 0.1 well
            assert losses[1.0] < losses[0.01]                           # lr 1 still trains
            assert losses[3.0] > 1.5                                    # lr 3 stays high
            assert abs(losses[3.0] - np.log(10)) < 0.5 and abs(losses[3.0] - losses[1e-6]) < 0.5
        assert spike_1 > 1 and jump > 10
        lowest = min(SHOWN, key=last.get)
        side = "below" if last[3.0] < min(np.log(10), last[1e-6]) else "near"
        say(f"**What to notice.** lr 1e-6 crawls: after {updates} updates the loss has hardly "
            f"left its starting value ({first[1e-6]:.3f} to {last[1e-6]:.3f}, dashed). 0.01 "
            f"converges slowly ({last[0.01]:.3f}) and 0.1 well ({last[0.1]:.3f}). On this data, "
            f"with He-initialised weights, lr 1.0 still trains: its first updates spike (up to "
            f"{spike_1:.2f}x the first loss), then it recovers and ends at {last[1.0]:.3f}; of "
            f"these five the lowest last-epoch loss is lr {lowest:g}'s. At lr 3.0 the loss "
            f"jumps {jump:.0f}-fold within a few updates and then stays high, at {last[3.0]:.3f} "
            f"({mean_last[3.0]:.3f} averaged over the seeds), {side} ln 10 = {np.log(10):.3f} and the crawling 1e-6 run's "
            f"{last[1e-6]:.3f}: from the loss alone, \\"too slow\\" and \\"broken\\" look alike. "
            f"Why lr 3 stays there instead of going to infinity is in the next cell.")
        """),
        code("""
        model = build(0)
        mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=3.0), epochs=3,
               batch_size=64, seed=0, verbose=0)
        weights = model.state_dict()
        hidden = np.maximum(X_val @ weights["0.weight"] + weights["0.bias"], 0)
        alive = int((hidden > 0).any(axis=0).sum())
        counts = np.bincount(model.predict(X_val), minlength=10)
        print("hidden units that fire on at least one validation image:", alive, "of", hidden.shape[1])
        print("predicted classes on the validation set:", counts)
        top = counts.max() / counts.sum()
        used = int((counts > 0.01 * counts.sum()).sum())
        assert alive < hidden.shape[1] // 4 and top > 0.5 and used <= 3
        say(f"The huge first steps pushed the input of most ReLU units below zero for every "
            f"image: only {alive} of {hidden.shape[1]} units still fire, the rest are dead, "
            f"their gradient is zero, and nothing can revive them. The output hardly depends on "
            f"the input any more: class {counts.argmax()} takes {top:.0%} of the validation "
            f"images (classes with more than 1% of them: {used} of 10), so the loss stays "
            f"finite, near ln 10. "
            f"This is divergence in every sense that matters, but not a NaN, so `fit` has "
            f"nothing to flag.")
        """),
        md("""
        ## The divergence report

        `fit` stops a run when the loss becomes NaN or infinite, keeps the history up to that
        point and says where it happened. With this ReLU network in float32 that needs an
        absurd step; lr 1e8 overflows float32 within a few updates. By default `fit` warns
        and marks the history. The warnings are caught here and printed, NumPy's own overflow
        warnings included:
        """),
        code("""
        import warnings

        def train(lr, epochs=3, **fit_args):
            model = build(0)
            history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=lr),
                             epochs=epochs, batch_size=64, seed=0, verbose=0, **fit_args)
            return model, history

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, history = train(1e8)
        for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
            print(message)
        print()
        print("diverged:", history.diverged)
        print("where:", history.divergence)
        print(history)
        assert history.diverged
        """),
        md("""
        With `on_divergence="raise"` it raises `mg.DivergenceError` instead, carrying the same
        facts and the history, which can be plotted like any other (NumPy's overflow warnings
        are silenced this time with `np.errstate`):
        """),
        code("""
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                train(1e8, on_divergence="raise")
        except mg.DivergenceError as err:
            print(err)
            print(f"epoch {err.epoch}, iteration {err.iteration}, lr {err.lr:g}, loss {err.loss}")
            mg.plot.history(err.history, log_loss=True)
            plt.show()
        """),
        md("""
        The update that produced the non-finite loss was never applied, and every iteration
        before it is kept, so the plot shows the loss climbing by many orders of magnitude
        before the red line.

        ## The test set, once

        The lr with the lowest mean validation loss was chosen above, without looking at the
        test digits. Now, and only now, one model trained at that lr is scored on them.
        """),
        code("""
        model, history = train(best_lr)
        scores = mg.evaluate(model, X_test, y_test)
        val_scores = mg.evaluate(model, X_val, y_val)
        assert abs(scores["accuracy"] - val_scores["accuracy"]) < 0.05
        say(f"At the chosen lr {best_lr:g} (seed 0) the test accuracy is {scores['accuracy']:.3f} "
            f"(loss {scores['loss']:.3f}), against {val_scores['accuracy']:.3f} on the validation "
            f"digits the choice was made on. A good learning rate for this setup lies between "
            f"about {min(good):g} and {max(good):g}; the next notebooks keep to that range.")
        """),
    ]


@notebook("03_batch_size.ipynb")
def batch_size():
    return [
        md("""
        # 3. Batch size

        A batch of B samples gives a gradient estimate whose noise shrinks like 1 / sqrt(B),
        and an epoch of N samples takes ceil(N / B) updates. So a small batch means noisy steps
        but many of them per epoch; a large batch means smooth steps but few. First the noise
        itself is measured; then batch 16 is trained against batch 256 for five epochs (a
        longer run gives a smoother picture).

        **A fixed choice, stated:** both batch sizes use the same lr, 0.1, the same model and
        the same seed. That lr is not tuned for either; notebook 4 tunes it per batch size and
        shows that the best lr grows with the batch.
        """),
        code(SETUP_SPLIT),
        md("""
        ## The gradient's noise against batch size

        One model (trained for one epoch, so that its gradients are typical of training), its
        gradient on all 7000 training digits, and the gradients of 40 random batches at each
        batch size from 1 to 512, computed with the public `forward` / `backward` calls. The
        noise is the root-mean-square distance between a batch's gradient and the full one.
        """),
        code("""
        def build(seed=0):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        model = build()
        mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=64,
               seed=0, verbose=0)
        loss = mg.SoftmaxCrossEntropy()

        def gradient(xb, yb):
            loss.forward(model.forward(xb), yb)
            model.backward(loss.backward())
            return np.concatenate([p.grad.ravel() for p in model.parameters()]).astype(np.float64)

        full = gradient(X, y)
        rng = np.random.default_rng(0)
        SIZES = 2 ** np.arange(10)                                  # 1, 2, 4, ..., 512
        noise = []
        for b in SIZES:
            draws = [rng.choice(len(X), size=b, replace=False) for _ in range(40)]
            noise.append(np.sqrt(np.mean([np.sum((gradient(X[i], y[i]) - full) ** 2)
                                          for i in draws])))
        noise = np.array(noise)
        slope, intercept = np.polyfit(np.log(SIZES), np.log(noise), 1)
        for b, n in zip(SIZES, noise):
            print(f"batch {b:4d}: gradient noise {n:.4f}   (|full gradient| = {np.linalg.norm(full):.4f})")
        print(f"fitted slope on log-log axes: {slope:.3f}")

        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(SIZES, noise, "o", label="measured (40 batches each)")
        ax.plot(SIZES, noise[0] * SIZES ** -0.5, "--", color="0.4", label="slope -1/2: 1 / sqrt(B)")
        ax.set(xscale="log", yscale="log", xlabel="batch size B",
               ylabel="rms |batch gradient - full gradient|",
               title=f"gradient noise: fitted slope {slope:.2f}")
        ax.legend(fontsize="small")
        plt.show()
        assert -0.6 < slope < -0.4                                   # the 1 / sqrt(B) law
        say(f"The points fall on a line of slope {slope:.2f} on log-log axes, close to -1/2: "
            f"a batch 4x larger has half the noise, and batch 256 is "
            f"{noise[SIZES == 16][0] / noise[SIZES == 256][0]:.1f}x less noisy than batch 16 "
            f"(sqrt(16) = 4 predicted).")
        """),
        md("""
        ## Batch 16 against batch 256
        """),
        code("""
        runs, probes = {}, {}
        for batch_size, every in ((16, 10), (256, 4)):
            model = build()
            probe = mg.EvaluateEvery(X_val, y_val, every=every)
            name = f"batch {batch_size}"
            runs[name] = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                                epochs=5, batch_size=batch_size, seed=0, callbacks=[probe],
                                verbose=0)
            probes[name] = probe
            losses = np.array(runs[name].iterations["loss"])
            last_epoch = losses[np.array(runs[name].iterations["epoch"]) == 5]
            print(f"{name}: {len(last_epoch)} updates per epoch, {len(losses)} in total; "
                  f"batch loss in the last epoch {last_epoch.mean():.3f} +- {last_epoch.std():.3f} "
                  f"(mean +- std); validation accuracy {probe.accuracy[-1]:.3f}")
        """),
        code("""
        small, large = probes["batch 16"], probes["batch 256"]
        UPDATES = runs["batch 256"].n_iterations
        fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
        mg.plot.compare(runs, x="step", ax=axes[0, 0])
        mg.plot.compare(runs, x="epoch", y="train_loss", ax=axes[0, 1])
        for line in axes[0, 1].lines:
            line.set_marker("o")
        for name, probe in probes.items():
            axes[1, 0].plot(probe.steps, probe.accuracy, label=name)
            axes[1, 1].plot(probe.epochs, probe.accuracy, label=name)
        axes[0, 0].set(title=f"per update: batch loss (the {UPDATES} updates batch 256 makes)",
                       xlim=(0, UPDATES + 5))
        axes[0, 1].set_title("per epoch: mean batch loss of each epoch")
        axes[1, 0].set(xlabel="update (step)", ylabel="validation accuracy", ylim=(0.5, 1),
                       xlim=(0, UPDATES + 5))
        axes[1, 1].set(xlabel="epoch", ylabel="validation accuracy", ylim=(0.5, 1))
        axes[1, 0].legend(fontsize="small"); axes[1, 1].legend(fontsize="small")
        fig.tight_layout()
        plt.show()

        at = max(s for s in small.steps if s <= UPDATES)
        small_at = small.accuracy[small.steps.index(at)]
        per_epoch = {n: runs[n].iterations["epoch"].count(1) for n in runs}
        assert large.accuracy[-1] > small_at                 # per update, batch 256 is ahead
        assert small.accuracy[-1] > large.accuracy[-1]       # per epoch, batch 16 is ahead
        say(f"**What to notice.** Per update (left, over the {UPDATES} updates batch 256 makes "
            f"in five epochs), batch 256 is ahead ({large.accuracy[-1]:.3f} against batch 16's "
            f"{small_at:.3f} after {at} updates) and its loss is a thin line, while batch 16's "
            f"jumps around: each of its steps sees only 16 digits. Per epoch (right) the order "
            f"flips: batch 16 makes {per_epoch['batch 16']} updates per pass against "
            f"{per_epoch['batch 256']}, and after five passes it is more accurate on the "
            f"validation digits ({small.accuracy[-1]:.3f} against {large.accuracy[-1]:.3f}). "
            f"Both used lr 0.1; notebook 4 asks which lr each batch size should have. Which one is \\"faster\\" depends on whether you pay per update or per "
            f"sample; notebook 8 measures the time each of these two runs takes to reach a "
            f"target accuracy.")
        """),
    ]


@notebook("04_lr_scaling_with_batch_size.ipynb")
def lr_scaling():
    return [
        md("""
        # 4. Scaling the learning rate with batch size

        A batch k times larger gives a gradient estimate with k times less variance, so the
        step can be larger. Two rules say how much: the **linear rule** (Goyal et al. 2017),
        lr x k, and the **square-root rule** (Hoffer et al. 2017), lr x sqrt(k), which keeps
        the noise of the update about constant. Rather than trust either, this notebook
        measures the best lr at each batch size: batches 16, 64 and 256, a grid of learning
        rates a factor of 2 apart, five seeds each, three epochs on 4000 training digits (small,
        so that the many runs stay quick; a longer run gives a smoother picture). "Best" means the
        lowest validation loss; the test digits are used once, at the end.
        """),
        code(SETUP_SPLIT),
        code("""
        N_TRAIN, EPOCHS = 4000, 3
        X_sub, y_sub = X[:N_TRAIN], y[:N_TRAIN]
        BATCHES = (16, 64, 256)
        LRS = tuple(0.05 * 2.0 ** k for k in range(8))           # 0.05, 0.1, ..., 6.4
        SEEDS = range(5)

        def build(seed):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        result = mg.sweep(build, X_sub, y_sub, batch_sizes=BATCHES, lrs=LRS, epochs=EPOCHS,
                          seeds=SEEDS, validation_data=(X_val, y_val))

        def cell(b, lr, column="val_loss"):
            values = np.array([r[column] for r in result.rows(batch_size=b, lr=lr)])
            return values                                      # one value per seed (NaN: diverged)

        print(f"validation loss after {EPOCHS} epochs, mean over {len(SEEDS)} seeds "
              f"('div': every seed diverged)")
        print(f"{'lr':>6s}" + "".join(f"{'batch ' + str(b):>12s}" for b in BATCHES))
        for lr in LRS:
            row = [np.nanmean(cell(b, lr)) if np.isfinite(cell(b, lr)).any() else np.nan
                   for b in BATCHES]
            print(f"{lr:6g}" + "".join(f"{v:12.3f}" if np.isfinite(v) else f"{'div':>12s}"
                                       for v in row))
        """),
        md("""
        ## The U-curve of each batch size, and where its bottom lies
        """),
        code("""
        def mean_sd(b, lr, column="val_loss"):
            v = cell(b, lr, column)
            v = np.where(np.isfinite(v), v, np.log(10) * 3)     # a diverged seed counts as bad
            return v.mean(), v.std()

        best = {b: min(LRS, key=lambda lr: mean_sd(b, lr)[0]) for b in BATCHES}
        per_seed = {b: [min(LRS, key=lambda lr: (lambda v: v if np.isfinite(v) else 1e9)(
                        cell(b, lr)[s])) for s in range(len(SEEDS))] for b in BATCHES}
        slope = np.polyfit(np.log(BATCHES), np.log([best[b] for b in BATCHES]), 1)[0]
        for b in BATCHES:
            print(f"batch {b:4d}: best lr {best[b]:g} (mean over seeds); best lr of each seed "
                  f"{per_seed[b]}")
        print(f"fitted slope of log(best lr) against log(batch): {slope:.2f}")

        fig, (ax_u, ax_best) = plt.subplots(1, 2, figsize=(13, 4.3))
        for b in BATCHES:
            stats = np.array([mean_sd(b, lr) for lr in LRS])
            line, = ax_u.plot(LRS, stats[:, 0], marker="o", label=f"batch {b}")
            ax_u.fill_between(LRS, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1],
                              color=line.get_color(), alpha=0.25)
        ax_u.set(xscale="log", yscale="log", xlabel="learning rate",
                 ylabel=f"validation loss after {EPOCHS} epochs",
                 title=f"mean +- sd over {len(SEEDS)} seeds", ylim=(None, 3))
        ax_u.set_yticks([0.2, 0.3, 0.5, 1, 2], ["0.2", "0.3", "0.5", "1", "2"])
        ax_u.minorticks_off()
        ax_u.legend(fontsize="small")
        b_axis = np.array(BATCHES, dtype=float)
        for s in range(len(SEEDS)):
            ax_best.scatter(b_axis * (1 + 0.04 * (s - 2)), [per_seed[b][s] for b in BATCHES],
                            color="0.6", s=14, label="best lr of one seed" if s == 0 else None)
        ax_best.plot(b_axis, [best[b] for b in BATCHES], "o-", color="tab:red",
                     label=f"best lr, mean over seeds (slope {slope:.2f})")
        ax_best.plot(b_axis, best[16] * b_axis / 16, "--", color="0.3", label="slope 1: linear rule")
        ax_best.plot(b_axis, best[16] * np.sqrt(b_axis / 16), ":", color="0.1", lw=2.5, zorder=3,
                     label="slope 1/2: square-root rule")
        ax_best.set(xscale="log", yscale="log", xlabel="batch size", ylabel="best learning rate",
                    title="best lr against batch size (log-log)")
        ax_best.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax_best.set_yticks(LRS[:6], [f"{lr:g}" for lr in LRS[:6]])
        ax_best.minorticks_off()
        ax_best.legend(fontsize="small")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        ## The two rules, starting from batch 16 at lr 0.1

        Both rules' learning rates lie on the grid, so the sweep already holds their runs.
        """),
        code("""
        BASE_BATCH, BASE_LR = 16, 0.1
        rules = {"fixed": lambda b: BASE_LR,
                 "sqrt": lambda b: mg.sqrt_scaling(BASE_LR, b, BASE_BATCH),
                 "linear": lambda b: mg.linear_scaling(BASE_LR, b, BASE_BATCH)}
        acc = {}
        print(f"validation accuracy after {EPOCHS} epochs, mean +- sd over {len(SEEDS)} seeds "
              f"(lr in brackets)")
        print(f"{'':12s}" + "".join(f"{'batch ' + str(b):>24s}" for b in BATCHES))
        for rule, scale in rules.items():
            texts = []
            for b in BATCHES:
                lr = min(LRS, key=lambda v: abs(v - scale(b)))
                assert np.isclose(lr, scale(b))
                acc[rule, b] = cell(b, lr, "val_accuracy")
                texts.append(f"{np.nanmean(acc[rule, b]):.3f} +- {np.nanstd(acc[rule, b]):.3f} "
                             f"(lr {lr:g})")
            print(f"{rule + ' rule':12s}" + "".join(f"{t:>24s}" for t in texts))
        """),
        md("""
        ## Warmup

        Goyal et al. start at the base lr and raise it linearly to the scaled lr over the first
        updates. `mg.schedules.Warmup` does this in front of any schedule; here batch 256 at
        the linear rule's lr, 1.6, warmed up over the first epoch from 0.1, five seeds.
        """),
        code("""
        ITERATIONS_PER_EPOCH = len(mg.BatchIterator(X_sub, y_sub, batch_size=256))
        target = mg.linear_scaling(BASE_LR, 256, BASE_BATCH)

        def warmup():
            return mg.schedules.Warmup(mg.schedules.Constant(target, unit="iteration"),
                                       warmup_steps=ITERATIONS_PER_EPOCH,
                                       start_factor=BASE_LR / target)

        warmed = {}
        for seed in SEEDS:
            model = build(seed)
            warmed[seed] = mg.fit(model, X_sub, y_sub, optimizer=mg.SGD(model.parameters(), lr=target),
                                  schedule=warmup(), epochs=EPOCHS, batch_size=256, seed=seed,
                                  validation_data=(X_val, y_val), verbose=0)
        acc["linear + warmup", 256] = np.array([h.epochs["val_accuracy"][-1] for h in warmed.values()])
        print("seed   no warmup   with warmup   sqrt rule   (validation accuracy, batch 256)")
        for seed in SEEDS:
            print(f"{seed:4d} {acc['linear', 256][seed]:11.3f} {acc['linear + warmup', 256][seed]:13.3f}"
                  f" {acc['sqrt', 256][seed]:11.3f}")

        compared = {"linear rule, no warmup": result.histories[256, target, 0],
                    "linear rule + 1-epoch warmup": warmed[0],
                    "sqrt rule": result.histories[256, rules["sqrt"](256), 0]}
        fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(13, 4))
        mg.plot.compare(compared, x="epoch", log=True, ax=ax_loss)
        mg.plot.compare(compared, x="epoch", y="lr", ax=ax_lr)
        ax_loss.set_title("batch 256: batch loss, seed 0"); ax_lr.set_title("lr of each update")
        fig.tight_layout()
        plt.show()
        """),
        code("""
        m = {k: float(np.nanmean(v)) for k, v in acc.items()}
        # each batch's ceiling: the smallest lr from which every larger one fails too (mean
        # validation loss above 1.5; chance is ln 10 = 2.3); the grid reaches past all three
        assert all(mean_sd(b, LRS[-1])[0] > 1.5 for b in BATCHES)
        fails_from = {b: min(lr for lr in LRS if all(mean_sd(b, v)[0] > 1.5 for v in LRS
                                                     if v >= lr)) for b in BATCHES}
        # the claims of the text below, checked
        assert best[16] < best[64] < best[256]                  # the best lr grows with batch
        assert abs(slope - 0.5) < abs(slope - 1)                # ... closer to slope 1/2 than 1
        assert m["fixed", 16] > m["fixed", 64] > m["fixed", 256]
        s = {k: float(np.nanstd(v)) for k, v in acc.items()}
        clear = {b: m["sqrt", b] - m["fixed", b] > max(s["sqrt", b], s["fixed", b]) for b in (64, 256)}
        assert m["sqrt", 64] > m["fixed", 64] and m["sqrt", 256] > m["fixed", 256]
        sqrt_text = ("closes part of the gap, by more than the spread between seeds"
                     if all(clear.values()) else
                     "closes part of the gap on average, though at "
                     + " and ".join(f"batch {b}" for b in clear if not clear[b])
                     + " by less than the spread between seeds")
        assert m["linear", 64] > m["sqrt", 64] and m["fixed", 16] - m["linear", 64] < 0.02
        assert m["linear", 256] < min(m["fixed", 256], m["sqrt", 256]) - 0.2
        assert abs(m["linear + warmup", 256] - m["linear", 256]) < 0.1
        assert max(fails_from.values()) / min(fails_from.values()) <= 2   # not 16x, as the batch
        if len(set(fails_from.values())) == 1:
            ceiling_text = (f"every batch size fails from lr {fails_from[16]:g} up, so the "
                            "ceiling does not move with the batch")
        else:
            ceiling_text = ("by mean validation loss above 1.5 the batch sizes fail from lr "
                            + ", ".join(f"{fails_from[b]:g}" for b in BATCHES)
                            + " up (batches 16, 64, 256): the ceiling moves by at most 2x "
                            "while the batch grows 16x")
        say(f"**What to notice.** The best lr grows with the batch: {best[16]:g}, {best[64]:g} "
            f"and {best[256]:g} at batches 16, 64 and 256 (lowest mean validation loss; single "
            f"seeds scatter by a factor of 2 around it). On log-log axes that is a slope of "
            f"{slope:.2f}: on this network and budget the square-root rule describes the best "
            f"lr, not the linear one. With a fixed lr 0.1, larger batches fall behind "
            f"({m['fixed', 16]:.3f}, {m['fixed', 64]:.3f}, {m['fixed', 256]:.3f} validation "
            f"accuracy): fewer updates of the same size. The square-root rule {sqrt_text} "
            f"({m['sqrt', 64]:.3f} +- {s['sqrt', 64]:.3f} and {m['sqrt', 256]:.3f} +- "
            f"{s['sqrt', 256]:.3f}). The linear rule does best at batch 64: with lr "
            f"{rules['linear'](64):g} it reaches {m['linear', 64]:.3f}, within 0.02 of batch "
            f"16's {m['fixed', 16]:.3f} from 4x fewer updates, which is the rule's promise. At "
            f"batch 256 it breaks: lr {rules['linear'](256):g} is past what this network "
            f"tolerates ({ceiling_text}), and accuracy drops to {m['linear', 256]:.3f}, far below "
            f"the other rules, though above chance (0.10).\\n\\n"
            f"A one-epoch warmup does not rescue it here: {m['linear + warmup', 256]:.3f} with "
            f"warmup against {m['linear', 256]:.3f} without. Warmup helps a run through its first "
            f"unstable updates, but lr {target:g} stays too large after them as well; the "
            f"linear rule holds only while k x lr stays below that edge, and past it the "
            f"square-root rule's smaller lr is the safer choice.")
        """),
        md("""
        ## The test set, once

        The setting with the lowest mean validation loss in the whole grid, trained once more
        (seed 0) and scored on the test digits.
        """),
        code("""
        chosen_b, chosen_lr = min(((b, lr) for b in BATCHES for lr in LRS),
                                  key=lambda bl: mean_sd(*bl)[0])
        model = build(0)
        mg.fit(model, X_sub, y_sub, optimizer=mg.SGD(model.parameters(), lr=chosen_lr),
               epochs=EPOCHS, batch_size=chosen_b, seed=0, verbose=0)
        test, val_score = mg.evaluate(model, X_test, y_test), mg.evaluate(model, X_val, y_val)
        assert abs(test["accuracy"] - val_score["accuracy"]) < 0.05
        say(f"Chosen on validation: batch {chosen_b}, lr {chosen_lr:g}. Test accuracy "
            f"{test['accuracy']:.3f} (validation {val_score['accuracy']:.3f}).")
        """),
    ]


@notebook("05_lr_schedules.ipynb")
def lr_schedules():
    return [
        md("""
        # 5. Learning-rate schedules

        A schedule sets the lr of every update: `lr = s(t)`, with t counting epochs or
        iterations from 0 as the schedule's `.unit` says. minigd's schedules are pure closed-form
        functions with torch's numbers. Each one below is plotted, then trained for six epochs of
        batch 64 on 4096 training digits, from five seeds, and compared on how many updates it
        needs to reach a target validation accuracy and where it ends (a longer run gives a
        smoother picture).

        **Fair baselines.** Every schedule here peaks at lr 0.3. Two constant runs go with them:
        0.1, and 0.3, the schedules' common peak, so that a schedule is not credited with what a
        larger constant lr would do as well.
        """),
        code(SETUP_SPLIT),
        code("""
        N_TRAIN, EPOCHS, BATCH, PEAK = 4096, 6, 64, 0.3
        X_sub, y_sub = X[:N_TRAIN], y[:N_TRAIN]
        PER_EPOCH = len(mg.BatchIterator(X_sub, y_sub, batch_size=BATCH))
        UPDATES = EPOCHS * PER_EPOCH
        CYCLE = 2 * (PER_EPOCH // 2)                     # a cyclic schedule's period, in updates
        S = mg.schedules
        schedules = {
            "constant 0.1": S.Constant(0.1),
            "constant 0.3 (the peak)": S.Constant(PEAK),
            "step: x0.5 every 2 epochs": S.StepDecay(PEAK, step_size=2, gamma=0.5),
            "exponential: x0.7 per epoch": S.ExponentialDecay(PEAK, gamma=0.7),
            "cyclic triangular": S.CyclicLR(0.02, PEAK, step_size=PER_EPOCH // 2),
            "cyclic triangular2": S.CyclicLR(0.02, PEAK, step_size=PER_EPOCH // 2, mode="triangular2"),
            "cyclic exp_range": S.CyclicLR(0.02, PEAK, step_size=PER_EPOCH // 2, mode="exp_range",
                                           gamma=0.995),
            "cosine": S.CosineAnnealing(PEAK, t_max=UPDATES, unit="iteration"),
            "warmup + cosine": S.Warmup(S.CosineAnnealing(PEAK, t_max=UPDATES, unit="iteration"),
                                        warmup_steps=PER_EPOCH, start_factor=0.1),
        }
        for name, schedule in schedules.items():
            print(f"{name:28s} {schedule!r}")
        assert CYCLE == PER_EPOCH
        say(f"{N_TRAIN} digits in batches of {BATCH} make {PER_EPOCH} updates per epoch and "
            f"{UPDATES} in six epochs. The cyclic schedules rise for {PER_EPOCH // 2} updates and "
            f"fall for {PER_EPOCH // 2}: one cycle of {CYCLE} updates, exactly one epoch.")
        """),
        code("""
        fig, axes = plt.subplots(3, 3, figsize=(13, 8), sharey=True)
        for ax, (name, schedule) in zip(axes.flat, schedules.items()):
            steps = EPOCHS if schedule.unit == "epoch" else UPDATES
            mg.plot.schedule(schedule, steps, ax=ax)
            if schedule.unit == "epoch":
                ax.lines[-1].set(drawstyle="steps-post", marker="o", ms=3)
            ax.set_title(name, fontsize="medium")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        Epoch schedules (constant, step, exponential) change the lr once per epoch, so they are
        drawn as steps over 6 epochs; the others change it every update. The three cyclic
        modes rise and fall once per epoch between 0.02 and 0.3: `triangular` keeps its
        height, `triangular2` halves it each cycle, `exp_range` shrinks it by gamma ** t (t in
        iterations).

        ## Training with each schedule, five seeds
        """),
        code("""
        TARGET, SEEDS = 0.9, range(5)
        runs = {}
        for name, schedule in schedules.items():
            for seed in SEEDS:
                model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)
                runs[name, seed] = mg.fit(model, X_sub, y_sub,
                                          optimizer=mg.SGD(model.parameters(), lr=0.1),
                                          schedule=schedule, epochs=EPOCHS, batch_size=BATCH,
                                          seed=seed, validation_data=(X_val, y_val), verbose=0)

        def curve(name):
            \"\"\"Validation accuracy at each epoch end, one row per seed.\"\"\"
            return np.array([runs[name, s].epochs["val_accuracy"] for s in SEEDS])

        def reach(name):
            \"\"\"Updates until the validation accuracy first reached TARGET, per seed (NaN: never).\"\"\"
            hit = curve(name) >= TARGET
            return np.where(hit.any(axis=1), (hit.argmax(axis=1) + 1) * PER_EPOCH, np.nan)

        final = {n: curve(n)[:, -1] for n in schedules}
        last_lr = {n: runs[n, 0].iterations["lr"][-1] for n in schedules}
        order = sorted(schedules, key=lambda n: (np.nanmean(reach(n)) if np.isfinite(reach(n)).any()
                                                 else 1e9, -final[n].mean()))
        print(f"{'schedule':28s} {'updates to ' + format(TARGET, '.0%'):>18s} "
              f"{'final val accuracy':>20s} {'last lr':>8s}   (mean +- sd over {len(SEEDS)} seeds)")
        for name in order:
            r = reach(name)
            text = (f"{np.nanmean(r):7.0f} +- {np.nanstd(r):4.0f}" if np.isfinite(r).all()
                    else f"{int(np.isfinite(r).sum())} of {len(r)} seeds")
            print(f"{name:28s} {text:>18s} {final[name].mean():12.3f} +- {final[name].std():.3f}"
                  f" {last_lr[name]:8.3f}")
        """),
        code("""
        fig, (ax_lr, ax_acc) = plt.subplots(1, 2, figsize=(15, 5))
        colors = dict(zip(schedules, plt.cm.tab10.colors))
        for name in schedules:
            ax_lr.plot(runs[name, 0].iterations["step"], runs[name, 0].iterations["lr"],
                       color=colors[name], label=name)
            steps = PER_EPOCH * np.arange(1, EPOCHS + 1)
            mean, sd = curve(name).mean(axis=0), curve(name).std(axis=0)
            ax_acc.plot(steps, mean, marker="o", ms=3, color=colors[name], label=name)
            ax_acc.fill_between(steps, mean - sd, mean + sd, color=colors[name], alpha=0.15)
        ax_lr.set(xlabel="update (step)", ylabel="lr", title="lr that fit used for each update",
                  ylim=(0, 0.45))
        ax_lr.legend(fontsize="small", ncol=3, loc="upper right")
        ax_acc.axhline(TARGET, color="0.5", ls=":")
        ax_acc.set(xlabel="update (step)", ylabel="validation accuracy (end of each epoch)",
                   title=f"mean +- sd over {len(SEEDS)} seeds")
        ax_acc.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        plt.show()
        """),
        code("""
        m_reach = {n: float(np.nanmean(reach(n))) if np.isfinite(reach(n)).any() else np.inf
                   for n in schedules}
        m_final = {n: float(final[n].mean()) for n in schedules}
        mean_lr = {n: float(np.mean(runs[n, 0].iterations["lr"])) for n in schedules}
        low, peak = "constant 0.1", "constant 0.3 (the peak)"
        tri, tri2, exp_range = "cyclic triangular", "cyclic triangular2", "cyclic exp_range"
        print("mean lr over the run:", {n: round(v, 3) for n, v in mean_lr.items()})
        # the claims of the text below, checked
        assert all(m_reach[n] < m_reach[low] for n in schedules if n != low)
        assert all(m_final[n] <= m_final[peak] + 0.005 for n in schedules)
        assert m_final[low] < m_final[peak] - 0.01
        for shrinking in (tri2, exp_range):
            assert m_final[shrinking] < m_final[tri] - 0.01
            assert mean_lr[shrinking] < mean_lr[tri] and abs(last_lr[shrinking] - last_lr[tri]) < 0.02
        say(f"**What to notice.** The left panel is read back from each run's history: the lr "
            f"`fit` actually used, update by update, which is exactly the schedule evaluated at "
            f"each t. Every schedule peaking at 0.3 reaches {TARGET:.0%} sooner than the "
            f"constant 0.1 (about {m_reach[low]:.0f} updates on average over the seeds; "
            f"accuracy is checked at each epoch end, every {PER_EPOCH} updates, so runs within "
            f"{PER_EPOCH} updates are tied).\\n\\n"
            f"**But the fair baseline matters:** the constant lr at the schedules' peak, 0.3, "
            f"ends at {m_final[peak]:.3f}, and no schedule beats it by more than the spread "
            f"between seeds (step decay {m_final['step: x0.5 every 2 epochs']:.3f}, cosine "
            f"{m_final['cosine']:.3f}, exponential {m_final['exponential: x0.7 per epoch']:.3f}). "
            f"Against 0.1 ({m_final[low]:.3f}) the schedules look good; against 0.3 they do not, "
            f"on this short run of six epochs. Whether they pay off on longer runs, where the "
            f"decay has time to let the loss settle, this notebook does not test.\\n\\n"
            f"Nor is it how low the lr ends that counts here: `triangular2` and `exp_range` end "
            f"near the same lr as `triangular` ({last_lr[tri2]:.3f}, {last_lr[exp_range]:.3f} "
            f"and {last_lr[tri]:.3f}), but their peaks shrink cycle by cycle, so they spend "
            f"most of the run at small lrs (mean lr {mean_lr[tri2]:.3f} and "
            f"{mean_lr[exp_range]:.3f}, against {mean_lr[tri]:.3f}) and end lower "
            f"({m_final[tri2]:.3f} and {m_final[exp_range]:.3f} against {m_final[tri]:.3f}).")
        """),
        md("""
        ## The test set, once

        The schedule with the best mean validation accuracy, trained once more (seed 0) and
        scored on the test digits.
        """),
        code("""
        chosen = max(schedules, key=m_final.get)
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        mg.fit(model, X_sub, y_sub, optimizer=mg.SGD(model.parameters(), lr=0.1),
               schedule=schedules[chosen], epochs=EPOCHS, batch_size=BATCH, seed=0, verbose=0)
        test = mg.evaluate(model, X_test, y_test)
        assert abs(test["accuracy"] - m_final[chosen]) < 0.05
        say(f"Chosen on validation: {chosen}. Test accuracy {test['accuracy']:.3f} (validation, "
            f"mean of the seeds: {m_final[chosen]:.3f}).")
        """),
    ]


@notebook("06_validation_early_stopping.ipynb")
def validation_early_stopping():
    return [
        md("""
        # 6. Validation and early stopping

        Training loss measures how well the model fits the samples it learns from; only data it
        never trains on says how well it generalises. Here a network learns from just 500
        digits, so it soon starts memorising them: the training loss keeps falling while the
        validation loss turns back up. `EarlyStopping` watches the validation loss, stops once
        it has not improved for `patience` epochs, and with `restore_best=True` puts back the
        weights of the best epoch.
        """),
        code(SETUP),
        code("""
        rng = np.random.default_rng(0)
        order = rng.permutation(len(X))
        train_idx, val_idx = order[:500], order[500:2500]
        X_train, y_train = X[train_idx], y[train_idx]
        X_val, y_val = X[val_idx], y[val_idx]
        print(f"train {len(train_idx)}, validation {len(val_idx)}, "
              f"test {len(X_test)} (never used for choices)")

        def run(epochs, callbacks=()):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            history = mg.fit(model, X_train, y_train, optimizer=mg.SGD(model.parameters(), lr=0.1),
                             epochs=epochs, batch_size=32, seed=0, validation_data=(X_val, y_val),
                             callbacks=callbacks, verbose=0)
            return model, history

        full_model, full = run(60)
        stopper = mg.EarlyStopping(monitor="val_loss", patience=5, restore_best=True)
        model, history = run(60, callbacks=[stopper])
        print(f"without early stopping: 60 epochs, final val loss {full.epochs['val_loss'][-1]:.3f}")
        print(f"with early stopping: stopped after epoch {stopper.stopped_epoch}, "
              f"best epoch {stopper.best_epoch} (val loss {stopper.best:.3f}); "
              f"history.stopped_early = {history.stopped_early}")
        restored = mg.evaluate(model, X_val, y_val)
        print(f"restored model's val loss {restored['loss']:.3f}, "
              f"equal to the best epoch's: {np.isclose(restored['loss'], stopper.best)}")
        """),
        code("""
        ep = full.epochs
        fig, (ax_loss, ax_val, ax_acc) = plt.subplots(1, 3, figsize=(15, 4.2))
        ax_loss.plot(ep["epoch"], ep["train_loss"], label="train loss")
        ax_loss.plot(ep["epoch"], ep["val_loss"], label="validation loss")
        ax_val.plot(ep["epoch"], ep["val_loss"], color="tab:orange", marker=".")
        ax_acc.plot(ep["epoch"], ep["val_accuracy"], color="tab:orange", marker=".",
                    label="validation accuracy")
        for ax in (ax_loss, ax_val, ax_acc):
            ax.axvline(stopper.best_epoch, color="tab:green", ls="--",
                       label=f"best epoch ({stopper.best_epoch}), restored")
            ax.axvline(stopper.stopped_epoch, color="tab:red", ls=":",
                       label=f"stopped ({stopper.stopped_epoch}, patience 5)")
            ax.set_xlabel("epoch")
        ax_loss.set(yscale="log", ylabel="loss", title="500 training digits: the gap opens")
        best = min(ep["val_loss"])
        ax_val.set(ylabel="loss", title="validation loss, zoomed: it turns back up",
                   ylim=(0.95 * best, 1.35 * best))
        ax_acc.set(ylabel="accuracy", title="validation accuracy")
        ax_loss.legend(fontsize="small"); ax_acc.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        plt.show()

        for name, m in (("after 60 epochs", full_model), ("early-stopped, best restored", model)):
            scores = mg.evaluate(m, X_test, y_test)
            print(f"test set, {name:30s} loss {scores['loss']:.3f}  accuracy {scores['accuracy']:.3f}")
        """),
        code("""
        # the claims of the text below, checked
        train_loss, val_loss, val_acc = (np.array(ep[k]) for k in ("train_loss", "val_loss",
                                                                   "val_accuracy"))
        lowest = int(np.argmin(val_loss)) + 1
        print(f"train loss fell in {np.mean(np.diff(train_loss) < 0):.0%} of the epochs; "
              f"val loss lowest at epoch {lowest}, then up {val_loss[-1] / val_loss.min() - 1:.0%} "
              f"by epoch 60; val accuracy {val_acc[lowest - 1]:.3f} there, {val_acc[-1]:.3f} at 60")
        assert np.all(np.diff(train_loss) < 0)                       # falls for all 60 epochs
        assert lowest < 30 and val_loss[-1] > 1.05 * val_loss.min()
        assert stopper.stopped_epoch == stopper.best_epoch + 5
        assert np.isclose(restored["loss"], stopper.best)
        assert abs(val_acc[-1] - val_acc[lowest - 1]) < 0.03
        """),
        md("""
        **What to notice.** The training loss falls for all 60 epochs; the validation loss
        bottoms out early and then climbs as the network memorises its 500 digits. Early
        stopping ends the run `patience` epochs after the best one and, because of
        `restore_best=True`, hands back the weights of the best epoch, not those of the last.
        Validation accuracy hardly moves after that point: the overfit network is still mostly
        right, but more confidently wrong where it is wrong, which the loss punishes and
        accuracy does not see. The test set was used only at the very end, for the comparison.
        """),
    ]


@notebook("07_optimizers.ipynb")
def optimizers():
    return [
        md("""
        # 7. Optimizers

        The same model, batches and budget (three epochs of batch 64 on 4096 training digits),
        five ways to turn a gradient into a step, all with torch.optim's update rules:

        * **SGD**: `w <- w - lr * g`
        * **momentum**: `b <- 0.9 b + g;  w <- w - lr * b`, a running sum of past gradients
        * **Nesterov**: the same, but steps with `g + 0.9 b`, a look-ahead
        * **Adam**: per-weight steps, `lr * m / (sqrt(v) + eps)` from running means of g and g^2
        * **AdamW**: Adam with decoupled weight decay, `w <- w (1 - lr * wd)` every step

        Rankings between optimizers move with the learning rate, so each one gets its own: a
        grid of four learning rates per optimizer, five seeds each, with `mg.sweep`, and the lr
        with the lowest mean validation loss is kept. The tuning is shown, then the five tuned
        optimizers are compared; the test digits are used once, at the end. A longer run
        gives a smoother picture.
        """),
        code(SETUP_SPLIT),
        code("""
        N_TRAIN, EPOCHS, BATCH, SEEDS = 4096, 3, 64, range(5)
        X_sub, y_sub = X[:N_TRAIN], y[:N_TRAIN]

        def build(seed):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        # name: (sweep optimizer, its other arguments, the lr grid)
        OPTIMIZERS = {
            "SGD": ("sgd", {}, (0.03, 0.1, 0.3, 1.0)),
            "momentum 0.9": ("sgd", {"momentum": 0.9}, (0.01, 0.03, 0.1, 0.3)),
            "Nesterov 0.9": ("sgd", {"momentum": 0.9, "nesterov": True}, (0.01, 0.03, 0.1, 0.3)),
            "Adam": ("adam", {}, (1e-3, 3e-3, 1e-2, 3e-2)),
            "AdamW, wd 0.1": ("adamw", {"weight_decay": 0.1}, (1e-3, 3e-3, 1e-2, 3e-2)),
        }
        sweeps = {name: mg.sweep(build, X_sub, y_sub, batch_sizes=[BATCH], lrs=grid, epochs=EPOCHS,
                                 seeds=SEEDS, optimizer=opt, optimizer_kwargs=kwargs or None,
                                 validation_data=(X_val, y_val))
                  for name, (opt, kwargs, grid) in OPTIMIZERS.items()}

        def over_seeds(name, lr, column):
            values = np.array([r[column] for r in sweeps[name].rows(lr=lr)], dtype=float)
            values = np.where(np.isfinite(values), values, np.nan)
            return np.nanmean(values), np.nanstd(values)

        tuned = {name: min(grid, key=lambda lr: over_seeds(name, lr, "val_loss")[0])
                 for name, (_, _, grid) in OPTIMIZERS.items()}
        for name, (_, _, grid) in OPTIMIZERS.items():
            cells = "  ".join(f"{lr:g}: {over_seeds(name, lr, 'val_loss')[0]:.3f}" for lr in grid)
            print(f"{name:14s} val loss  {cells}   -> lr {tuned[name]:g}")
        """),
        code("""
        fig, axes = plt.subplots(1, len(OPTIMIZERS), figsize=(16, 3.6), sharey=True)
        for ax, (name, (_, _, grid)) in zip(axes, OPTIMIZERS.items()):
            stats = np.array([over_seeds(name, lr, "val_loss") for lr in grid])
            ax.errorbar(grid, stats[:, 0], yerr=stats[:, 1], marker="o", capsize=3)
            ax.axvline(tuned[name], color="tab:green", ls="--", label=f"chosen: lr {tuned[name]:g}")
            ax.set(xscale="log", xlabel="learning rate", title=name)
            ax.legend(fontsize="small")
        axes[0].set_ylabel(f"validation loss after {EPOCHS} epochs\\n(mean +- sd, {len(SEEDS)} seeds)")
        fig.suptitle("tuning: each optimizer's own lr grid")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        ## The tuned optimizers, side by side
        """),
        code("""
        final = {name: [r for r in sweeps[name].rows(lr=tuned[name])] for name in OPTIMIZERS}
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 4.5))
        mg.plot.compare({f"{n}, lr {tuned[n]:g}": sweeps[n].histories[BATCH, tuned[n], 0]
                         for n in OPTIMIZERS}, smooth=16, log=True, ax=ax_loss)
        ax_loss.set_title("batch loss, mean of the last 16 updates (seed 0)")
        for name in OPTIMIZERS:
            accs = np.array([sweeps[name].histories[BATCH, tuned[name], s].epochs["val_accuracy"]
                             for s in SEEDS])
            epochs = np.arange(1, accs.shape[1] + 1)
            ax_acc.errorbar(epochs + 0.03 * list(OPTIMIZERS).index(name), accs.mean(0),
                            yerr=accs.std(0), marker="o", capsize=3, label=f"{name}, lr {tuned[name]:g}")
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy",
                   title=f"mean +- sd over {len(SEEDS)} seeds", xticks=range(1, EPOCHS + 1))
        ax_acc.legend(fontsize="small")
        fig.tight_layout()
        plt.show()

        acc = {n: over_seeds(n, tuned[n], "val_accuracy") for n in OPTIMIZERS}
        loss = {n: over_seeds(n, tuned[n], "train_loss") for n in OPTIMIZERS}
        print(f"{'optimizer':14s} {'lr':>7s} {'val accuracy':>16s} {'last-epoch train loss':>22s}")
        for n in OPTIMIZERS:
            print(f"{n:14s} {tuned[n]:7g} {acc[n][0]:9.3f} +- {acc[n][1]:.3f} "
                  f"{loss[n][0]:14.3f} +- {loss[n][1]:.3f}")
        """),
        md("""
        ## The test set, once

        One model per optimizer (seed 0, its tuned lr), scored on the test digits; the last
        column is the size of its weights.
        """),
        code("""
        models = {}
        for name, (opt, kwargs, _) in OPTIMIZERS.items():
            model = build(0)
            make = {"sgd": mg.SGD, "adam": mg.Adam, "adamw": mg.AdamW}[opt]
            mg.fit(model, X_sub, y_sub, optimizer=make(model.parameters(), lr=tuned[name], **kwargs),
                   epochs=EPOCHS, batch_size=BATCH, seed=0, verbose=0)
            models[name] = model
        norms, test_acc = {}, {}
        for name, model in models.items():
            norms[name] = float(np.linalg.norm(np.concatenate(
                [v.ravel() for v in model.state_dict().values()])))
            test_acc[name] = mg.accuracy(model, X_test, y_test)
            print(f"{name:14s} lr {tuned[name]:<7g} test accuracy {test_acc[name]:.3f}   "
                  f"|weights| {norms[name]:.2f}")
        """),
        code("""
        a = {n: acc[n][0] for n in OPTIMIZERS}
        sgd, mom, nes = "SGD", "momentum 0.9", "Nesterov 0.9"
        adams = ("Adam", "AdamW, wd 0.1")
        # the claims of the text below, checked
        for name, (_, _, grid) in OPTIMIZERS.items():
            assert grid[0] < tuned[name] < grid[-1], f"{name}: the best lr is at the grid's edge"
        assert a[mom] > a[sgd] and a[nes] > a[sgd]          # momentum beats SGD, both tuned
        spread = max(acc[n][1] for n in (sgd, mom, nes))
        margin = ("by more than the spread between seeds" if min(a[mom], a[nes]) - a[sgd] > spread
                  else "though by less than the spread between seeds")
        assert abs(a[mom] - a[nes]) < 0.01                  # the look-ahead changes little
        assert all(abs(a[n] - a[mom]) < 0.015 for n in adams)
        assert tuned[mom] < tuned[sgd]
        decay_text = ""
        if tuned["Adam"] == tuned["AdamW, wd 0.1"]:
            assert norms["AdamW, wd 0.1"] < norms["Adam"]
            decay_text = (f" At the same lr, AdamW's decay shows in the size of the weights: "
                          f"{norms['AdamW, wd 0.1']:.1f} against Adam's {norms['Adam']:.1f}, at "
                          f"nearly the same accuracy.")
        say(f"**What to notice.** Each optimizer's lr was chosen from its own grid (every "
            f"choice lies inside its grid, not at an edge). Tuned, momentum and Nesterov "
            f"({a[mom]:.3f} and {a[nes]:.3f} validation accuracy) beat plain SGD "
            f"({a[sgd]:.3f}), {margin}; the look-ahead changes "
            f"little. Momentum's best lr, {tuned[mom]:g}, is {tuned[sgd] / tuned[mom]:.0f}x "
            f"smaller than SGD's {tuned[sgd]:g}: the buffer adds up past gradients into steps "
            f"up to 1 / (1 - 0.9) = 10 times larger, though not the full 10 here. Adam and AdamW "
            f"({a['Adam']:.3f}, {a['AdamW, wd 0.1']:.3f}) end level with momentum within the "
            f"spread, each step scaled to its weight's gradient history.{decay_text} Compared at "
            f"one shared lr, any of them could have looked best or worst; only tuned, as here, "
            f"does the comparison mean something.")
        """),
    ]


@notebook("08_speed.ipynb")
def speed():
    return [
        md("""
        # 8. Speed

        Where does the time of an epoch go, and what does the Numba backend buy? minigd runs the
        same kernels on two backends: `"numpy"` (plain NumPy, the reference) and `"numba"`
        (compiled loops). `mg.use_backend(name)` switches inside a `with` block; the numbers
        agree, only the time differs. Timings depend on the machine and on what else it is
        doing, so they change from run to run, unlike the other notebooks' numbers: every
        number below was measured on the machine that built this notebook (printed next), and
        the claims checked with `assert` are ratios with a wide margin.
        """),
        code(SETUP_SPLIT),
        code("""
        import cProfile
        import os
        import platform
        import pstats
        import time

        def cpu_model():
            try:
                with open("/proc/cpuinfo") as f:
                    for line in f:
                        if line.startswith("model name"):
                            return line.split(":", 1)[1].strip()
            except OSError:
                pass
            return platform.processor() or platform.machine()

        print("CPU:", cpu_model(), "| cores:", os.cpu_count(), "| BLAS threads:",
              os.environ.get("OPENBLAS_NUM_THREADS", "default"), "| Numba threads:",
              os.environ.get("NUMBA_NUM_THREADS", "default"), "| default backend:", mg.get_backend())
        """),
        code("""
        def make_model():
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)

        def one_epoch(batch_size):
            model = make_model()
            return mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                          epochs=1, batch_size=batch_size, seed=0, verbose=0)

        backends = []
        for name in ("numpy", "numba"):
            try:
                with mg.use_backend(name):
                    started = time.perf_counter()
                    one_epoch(64)                      # the first use compiles Numba's kernels
                    note = " (includes compiling the kernels)" if name == "numba" else ""
                    print(f"{name}: first epoch {time.perf_counter() - started:.2f} s{note}")
                backends.append(name)
            except ImportError as err:
                print(f"{name} backend not available in this build ({err}); timing the others")
        """),
        md("""
        ## One epoch at four batch sizes

        Each timing is the best of three epochs of 7000 samples (one epoch for batch 1), which
        hides one-off delays caused by other programs. The bars have linear lengths: a bar
        twice as long is twice as fast.
        """),
        code("""
        BATCHES = (1, 16, 64, 256)
        speed = {}
        for name in backends:
            with mg.use_backend(name):
                for batch_size in BATCHES:
                    repeats = 1 if batch_size == 1 else 3
                    speed[name, batch_size] = max(one_epoch(batch_size).epochs["samples_per_second"][0]
                                                  for _ in range(repeats))
        ratio = {}
        for batch_size in BATCHES:
            line = "   ".join(f"{name} {speed[name, batch_size]:9,.0f} samples/s" for name in backends)
            if "numba" in backends and "numpy" in backends:
                ratio[batch_size] = speed["numba", batch_size] / speed["numpy", batch_size]
                line += f"   numba / numpy = {ratio[batch_size]:.1f}x"
            print(f"batch {batch_size:4d}: {line}")

        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(backends)
        for k, name in enumerate(backends):
            bars = ax.bar(np.arange(len(BATCHES)) + k * width, [speed[name, b] for b in BATCHES],
                          width, label=name)
            ax.bar_label(bars, [f"{speed[name, b]:,.0f}" for b in BATCHES], fontsize=7)
        ax.set_xticks(np.arange(len(BATCHES)) + width * (len(backends) - 1) / 2,
                      [f"batch {b}" for b in BATCHES])
        ax.set(ylabel="samples per second (one epoch)", title="training throughput (linear scale)")
        ax.legend()
        plt.show()
        """),
        code("""
        claims = []
        for name in backends:
            gain_small = speed[name, 16] / speed[name, 1]
            gain_large = speed[name, 256] / speed[name, 16]
            print(f"{name}: batch 1 -> 16 is {gain_small:.1f}x faster per sample, "
                  f"16 -> 256 another {gain_large:.1f}x")
            assert gain_small > 3 and gain_small > gain_large     # steep first, flatter after
        if ratio:
            assert ratio[1] > 1.5                  # numba wins clearly where Python calls dominate
            assert min(ratio.values()) > 0.7       # and is nowhere clearly slower
            say(f"Per sample, batch 16 is {speed[backends[-1], 16] / speed[backends[-1], 1]:.0f}x "
                f"faster than batch 1 on {backends[-1]}, and going on to batch 256 gains much less "
                f"({speed[backends[-1], 256] / speed[backends[-1], 16]:.1f}x): every update pays a "
                f"fixed cost whatever its batch size (Python calls per layer on NumPy, and on both "
                f"backends matrix products too small to keep the processor busy). Numba is "
                f"{ratio[1]:.1f}x as fast as NumPy at batch 1, {ratio[16]:.1f}x at 16, "
                f"{ratio[64]:.1f}x at 64 and {ratio[256]:.1f}x at 256, measured on this machine.")
        """),
        md("""
        ## Where `fit`'s own time goes

        `cProfile` records one epoch of `fit` at batch 64, exactly as `fit` runs it, on each
        backend. Each bar is the time spent inside one function itself (not in the functions
        it calls), so the bars of a backend add up to its whole epoch. With the Numba backend
        and no per-iteration callback, `fit` runs the whole epoch in one compiled call; with
        NumPy it makes one Python call per layer and per step. The profiler adds time to each
        Python call, which shows most where there are most calls (measured below).
        """),
        code("""
        def profile_epoch(batch_size=64, top=6):
            profiler = cProfile.Profile()
            model = make_model()
            optimizer = mg.SGD(model.parameters(), lr=0.1)
            profiler.enable()
            mg.fit(model, X, y, optimizer=optimizer, epochs=1, batch_size=batch_size, seed=0,
                   verbose=0)
            profiler.disable()
            own = {}
            for (path, _, func), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
                where = os.path.basename(path).replace(".py", "") if path != "~" else "builtin"
                key = f"{where}.{func}".replace("builtin.<", "<")
                own[key] = own.get(key, 0.0) + tottime
            ranked = sorted(own.items(), key=lambda kv: -kv[1])
            shown = dict(ranked[:top])
            shown["everything else"] = sum(v for _, v in ranked[top:])
            return {k: 1e3 * v for k, v in shown.items()}     # milliseconds

        profiles, overhead = {}, {}
        for name in backends:
            with mg.use_backend(name):
                profiles[name] = profile_epoch()
            total = sum(profiles[name].values())
            plain = 1e3 * len(X) / speed[name, 64]
            overhead[name] = total / plain
            print(f"{name}: profiled epoch {total:.0f} ms (unprofiled best epoch {plain:.0f} ms)")
            for key, ms in profiles[name].items():
                print(f"    {ms:8.1f} ms  {100 * ms / total:5.1f}%  {key}")

        fig, axes = plt.subplots(1, len(backends), figsize=(14, 3.8), sharex=True)
        for ax, name in zip(np.atleast_1d(axes), backends):
            keys = list(profiles[name])
            ax.barh(np.arange(len(keys)), [profiles[name][k] for k in keys], color="tab:blue")
            ax.set_yticks(np.arange(len(keys)), keys, fontsize=8)
            ax.invert_yaxis()
            ax.set(xlabel="milliseconds in one epoch (own time, linear)",
                   title=f"{name}: one epoch of fit, batch 64")
        fig.tight_layout()
        plt.show()
        """),
        code("""
        top = {n: max((k for k in p if k != "everything else"), key=p.get) for n, p in profiles.items()}
        share = {n: profiles[n][top[n]] / sum(profiles[n].values()) for n in profiles}
        for n in profiles:
            print(f"{n}: largest single entry {top[n]!r} holds {share[n]:.0%} of the epoch")
        if "numba" in profiles and "numpy" in profiles:
            assert share["numba"] > 0.5 and share["numba"] > share["numpy"]
            say(f"With Numba, one entry, `{top['numba']}`, holds {share['numba']:.0%} of the "
                f"epoch: the fused, compiled epoch, with almost no Python left around it. With "
                f"NumPy the epoch is spread over many Python-level calls; the largest, "
                f"`{top['numpy']}`, holds {share['numpy']:.0%}. The bars add up to the whole "
                f"profiled epoch of `fit` itself, so they compare backends bar for bar. The "
                f"profiler is not free: the profiled epoch took {overhead['numpy']:.1f}x the "
                f"unprofiled one on NumPy, with its many calls, and {overhead['numba']:.1f}x on "
                f"Numba.")
        """),
        md("""
        ## Time to accuracy

        Notebook 3 trained batch 16 and batch 256 at the same lr 0.1 and found batch 16 ahead
        per epoch, batch 256 ahead per update. What matters in practice is seconds. Here both
        train until the validation accuracy first reaches a target, checked at the end of each
        epoch, and the training seconds `fit` records (validation excluded) are summed up to
        that epoch.
        """),
        code("""
        TARGET, MAX_EPOCHS = 0.9, 30

        class StopAtTarget(mg.Callback):
            \"\"\"Stop training once the epoch's validation accuracy reaches the target.\"\"\"

            def on_epoch_end(self, state):
                if state.history.epochs["val_accuracy"][-1] >= TARGET:
                    state.stop_training = True

        to_target = {}
        for name in backends:
            with mg.use_backend(name):
                for batch_size in (16, 256):
                    model = make_model()
                    history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                                     epochs=MAX_EPOCHS, batch_size=batch_size, seed=0,
                                     validation_data=(X_val, y_val), callbacks=[StopAtTarget()],
                                     verbose=0)
                    reached = history.epochs["val_accuracy"][-1] >= TARGET
                    to_target[name, batch_size] = dict(
                        epochs=len(history.epochs["epoch"]), updates=history.n_iterations,
                        seconds=sum(history.epochs["seconds"]), reached=reached,
                        curve=(np.cumsum(history.epochs["seconds"]), history.epochs["val_accuracy"]))
        for (name, b), r in to_target.items():
            print(f"{name:6s} batch {b:4d}: {'reached' if r['reached'] else 'NOT reached'} "
                  f"{TARGET:.0%} after {r['epochs']:2d} epochs = {r['updates']:5d} updates, "
                  f"{r['seconds']:.2f} s of training")

        fig, ax = plt.subplots(figsize=(7.5, 4))
        for (name, b), r in to_target.items():
            ax.plot(*r["curve"], marker="o", ls="-" if name == "numba" else "--",
                    label=f"{name}, batch {b}")
        ax.axhline(TARGET, color="0.5", ls=":")
        ax.set(xlabel="training seconds (cumulative)", ylabel="validation accuracy",
               title="time to accuracy, lr 0.1")
        ax.legend(fontsize="small")
        plt.show()
        """),
        code("""
        for name in backends:
            small, large = to_target[name, 16], to_target[name, 256]
            # the claims of the text below, checked (counts, not times, so they do not flicker)
            assert small["reached"] and large["reached"]
            assert small["epochs"] < large["epochs"] and small["updates"] > large["updates"]
        small, large = to_target[backends[0], 16], to_target[backends[0], 256]
        races = []
        for name in backends:
            s16, s256 = to_target[name, 16]["seconds"], to_target[name, 256]["seconds"]
            first, ratio_t = (16, s256 / s16) if s16 < s256 else (256, s16 / s256)
            races.append((f"on {name} the two were level within the noise" if ratio_t < 1.15 else
                          f"on {name} batch {first} got there first, {ratio_t:.1f}x sooner")
                         + f" ({s16:.2f} s for batch 16, {s256:.2f} s for batch 256)")
        say(f"**What to notice.** Batch 16 reached {TARGET:.0%} after {small['epochs']} epochs "
            f"({small['updates']} updates) and batch 256 after {large['epochs']} epochs "
            f"({large['updates']} updates): batch 16 needs fewer passes over the data, batch 256 "
            f"fewer updates. In seconds, on this machine, " + "; ".join(races) + ". Which one "
            f"wins depends on how cheap a small update is, which is what the throughput chart "
            f"above measures: the cheaper the fixed cost per update, the more the small batch's "
            f"extra updates pay off.")
        """),
    ]


@notebook("09_gradient_accumulation.ipynb")
def gradient_accumulation():
    return [
        md("""
        # 9. Gradient accumulation and the effective batch

        A batch of B samples needs memory for B rows of every layer's activations. When B does
        not fit, **gradient accumulation** splits it: `fit(..., batch_size=b, accumulate=k)`
        runs k micro-batches of b samples, adds up their gradients, and makes one update on
        the mean, as one batch of k·b samples would. This notebook shows the bookkeeping (the
        plan and the history), checks numerically that k micro-batches of b are the batch of
        k·b, and measures what accumulation buys (memory) and what it costs (time per
        update). Every number in the text is computed by a cell, and every claim is an
        `assert`.
        """),
        code(SETUP_SPLIT),
        md("""
        ## Micro-batches and updates

        2048 training digits, micro-batches of 16, accumulated 4 at a time: an effective batch
        of 64. `verbose=2` prints `fit`'s plan and one line per epoch.
        """),
        code("""
        N = 2048
        X_n, y_n = X[:N], y[:N]

        def build(seed=0, dtype=np.float32, batch_norm=False):
            middle = [mg.BatchNorm(128)] if batch_norm else []
            return mg.Sequential(mg.Dense(784, 128), *middle, mg.ReLU(), mg.Dense(128, 10),
                                 seed=seed, dtype=dtype)

        model = build()
        history = mg.fit(model, X_n, y_n, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=2,
                         batch_size=16, accumulate=4, seed=0, verbose=2)
        print()
        rows = history.iterations
        print("iteration columns:", list(rows))
        for i in range(3):
            print({key: rows[key][i] for key in ("epoch", "step", "batch_size", "micro_batches", "loss")})
        updates = history.n_iterations
        assert updates == 2 * N // 64 and set(rows["micro_batches"]) == {4}
        say(f"`fit` records one row per **update**, not per micro-batch: {updates} rows for two "
            f"epochs of {N} samples at an effective batch of 64 ({N // 64} updates per epoch), "
            f"each made of {rows['micro_batches'][0]} micro-batches (the `micro_batches` column) "
            f"of 16 samples, {rows['batch_size'][0]} samples in all (`batch_size`).")
        """),
        md("""
        ## k micro-batches of b are one batch of k·b

        The loss of a batch is the mean over its samples, so the mean of k micro-batch
        gradients (each a mean over b samples) is the gradient of the k·b samples together,
        and the update is the same. The same seed gives the same order of samples, so the k
        micro-batches of an update hold exactly the samples of the big batch. Two epochs at
        lr 0.1, in float64 and in float32, against batch 64 without accumulation:
        """),
        code("""
        def weights(batch_size, accumulate, dtype, batch_norm=False, X_part=X_n, y_part=y_n):
            model = build(dtype=dtype, batch_norm=batch_norm)
            mg.fit(model, X_part.astype(dtype), y_part, optimizer=mg.SGD(model.parameters(), lr=0.1),
                   epochs=2, batch_size=batch_size, accumulate=accumulate, seed=0, verbose=0)
            return model.flat_values.astype(np.float64)

        SPLITS = ((32, 2), (16, 4), (8, 8), (4, 16))
        gaps = {}
        for dtype in (np.float64, np.float32):
            reference = weights(64, 1, dtype)
            for b, k in SPLITS:
                gaps[dtype.__name__, b, k] = np.max(np.abs(weights(b, k, dtype) - reference))
            gaps[dtype.__name__, 16, 1] = np.max(np.abs(weights(16, 1, dtype) - reference))
            print(f"{dtype.__name__}: largest weight difference from batch 64 after two epochs")
            for b, k in SPLITS + ((16, 1),):
                print(f"    batch {b:2d} x accumulate {k:2d} = {b * k:3d}: {gaps[dtype.__name__, b, k]:.2e}")
        scale = np.max(np.abs(reference))
        """),
        code("""
        f64 = [gaps["float64", b, k] for b, k in SPLITS]
        f32 = [gaps["float32", b, k] for b, k in SPLITS]
        alone = gaps["float64", 16, 1]
        # the claims of the text below, checked
        assert max(f64) < 1e-12                     # the same update, up to rounding
        assert max(f32) < 1e-4 * scale              # float32: rounding of a different sum order
        assert alone > 1e4 * max(f32)               # batch 16 alone is a different run
        say(f"In float64 every split of 64 into k micro-batches of b ends within {max(f64):.0e} of "
            f"batch 64 (the largest weight is {scale:.2f}): the same updates, up to the order "
            f"in which the sums are rounded. In float32 the rounding shows more, at most "
            f"{max(f32):.0e}. Batch 16 without accumulation, by contrast, ends {alone:.2f} away: "
            f"four times as many updates, each on a quarter of the samples.")
        """),
        md("""
        ## What it buys: memory

        The memory a batch needs grows with its rows: the batch of inputs (rows x 784 values)
        and every layer's outputs and their gradients (rows x 128 for the hidden layer) are
        kept for the backward pass; with accumulation, only one micro-batch's at a time. `tracemalloc` records the peak memory NumPy allocates
        during one epoch of `fit`; each run has the same effective batch, 1024 (the data,
        already in memory, are not counted).
        """),
        code("""
        import time
        import tracemalloc

        EFFECTIVE = 1024
        MICRO = (1024, 256, 64, 16)

        def one_epoch(micro, repeats=1):
            best, peak = np.inf, 0
            for _ in range(repeats):
                model = build()
                optimizer = mg.SGD(model.parameters(), lr=0.1)
                tracemalloc.start()
                history = mg.fit(model, X_n, y_n, optimizer=optimizer, epochs=1, batch_size=micro,
                                 accumulate=EFFECTIVE // micro, seed=0, verbose=0)
                peak = max(peak, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
                best = min(best, history.epochs["seconds"][0] / history.n_iterations)
            return peak, best, history.n_iterations

        measured = {micro: one_epoch(micro, repeats=3) for micro in MICRO}
        buffer = {micro: micro * (784 + 128) * 4 for micro in MICRO}   # inputs + hidden, float32
        for micro, (peak, per_update, updates) in measured.items():
            print(f"micro-batch {micro:4d} x {EFFECTIVE // micro:2d}: {updates} updates, peak "
                  f"{peak / 1e6:6.2f} MB (one micro-batch's inputs and hidden values {buffer[micro] / 1e6:5.2f} MB), "
                  f"{1e3 * per_update:6.2f} ms per update")

        fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(12, 4))
        labels = [f"{m} x {EFFECTIVE // m}" for m in MICRO]
        bars = ax_mem.bar(labels, [measured[m][0] / 1e6 for m in MICRO])
        ax_mem.bar_label(bars, [f"{measured[m][0] / 1e6:.2f}" for m in MICRO], fontsize=8)
        ax_mem.set(xlabel="micro-batch x accumulate (effective batch 1024)",
                   ylabel="peak memory during fit (MB)", title="what accumulation buys")
        bars = ax_time.bar(labels, [1e3 * measured[m][1] for m in MICRO], color="tab:orange")
        ax_time.bar_label(bars, [f"{1e3 * measured[m][1]:.1f}" for m in MICRO], fontsize=8)
        ax_time.set(xlabel="micro-batch x accumulate (effective batch 1024)",
                    ylabel="milliseconds per update", title="what it costs")
        fig.tight_layout()
        plt.show()
        """),
        code("""
        peak = {m: measured[m][0] for m in MICRO}
        per_update = {m: measured[m][1] for m in MICRO}
        weights_mb = model.flat_values.nbytes / 1e6
        cheapest = min(MICRO, key=per_update.get)
        # the claims of the text below, checked
        assert all(peak[a] >= 0.98 * peak[b] for a, b in zip(MICRO, MICRO[1:]))  # never more memory
        assert peak[1024] > 3 * peak[16] and peak[256] < 0.8 * peak[1024]
        assert abs(peak[64] - peak[16]) < 0.1 * peak[16]         # a floor that the batch does not set
        assert per_update[16] > 1.5 * per_update[1024]           # but slower per update
        say(f"One batch of 1024 peaks at {peak[1024] / 1e6:.2f} MB; 4 micro-batches of 256 at "
            f"{peak[256] / 1e6:.2f} MB and 16 of 64 at {peak[64] / 1e6:.2f} MB, "
            f"{peak[1024] / peak[64]:.1f}x less. Below that the peak stops falling "
            f"({peak[16] / 1e6:.2f} MB at micro-batch 16): what is left does not depend on the "
            f"batch (for scale, the weights alone are {weights_mb:.2f} MB), while one "
            f"micro-batch's inputs and hidden values have shrunk from {buffer[1024] / 1e6:.2f} MB "
            f"to {buffer[16] / 1e6:.3f} MB. The price is time: "
            f"an update of 1024 samples takes {1e3 * per_update[16]:.1f} ms as 64 micro-batches "
            f"of 16 against {1e3 * per_update[1024]:.1f} ms as one batch, "
            f"{per_update[16] / per_update[1024]:.1f}x longer, because each small matrix product "
            f"uses the processor less well and every micro-batch pays the fixed cost of a step "
            f"(notebook 12); the cheapest here was micro-batch {cheapest} "
            f"({1e3 * per_update[cheapest]:.1f} ms). Accumulate when the batch you want does not "
            f"fit, with micro-batches as large as fit.")
        """),
        md("""
        ## Where k x b is not k·b: BatchNorm

        The equality needs the loss to be a mean of per-sample terms. BatchNorm breaks it: in
        training mode each sample is normalised with the statistics of its own batch, which
        is now the micro-batch.
        """),
        code("""
        bn_reference = weights(64, 1, np.float64, batch_norm=True)
        bn_split = weights(16, 4, np.float64, batch_norm=True)
        bn_gap = np.max(np.abs(bn_split - bn_reference))
        print(f"BatchNorm network, float64: batch 16 x 4 against batch 64, largest weight difference {bn_gap:.2e}")
        assert bn_gap > 1e6 * max(f64)
        say(f"With a BatchNorm layer, 4 micro-batches of 16 end {bn_gap:.1e} from batch 64, "
            f"against {max(f64):.0e} without it: each micro-batch is normalised by its own 16 "
            f"samples' statistics (notebook 11 measures how noisy those are), so the effective "
            f"batch is 64 for the gradient but 16 for the normalisation.")
        """),
    ]


@notebook("10_trajectories.ipynb")
def trajectories():
    return [
        md("""
        # 10. Trajectories on a loss surface

        A network has too many weights to draw its loss surface. A model with two parameters
        has a surface you can see: linear regression `y = w x + b` is a `Dense(1, 1)` layer,
        one weight and one bias, and its mean squared error is a bowl in the (w, b) plane. This
        notebook trains that model with `mg.fit`, records the two parameters after every update
        with a small callback, and draws the path on the contours of the bowl: full-batch
        gradient descent, SGD, a mini-batch and momentum; the "noise ball" SGD ends in, and
        how batch size and lr shrink it; and the largest stable learning rate, 2 / lambda_max,
        held and exceeded.

        The data are synthetic and the learning rates come from the surface's curvature,
        computed below; no choice is made on a test set, because there is none to fit. Every
        number in the text is computed by the cell above it, and every claim is an `assert`.
        """),
        code("""
        %matplotlib inline
        import matplotlib.pyplot as plt
        import numpy as np
        from IPython.display import Markdown, display
        import minigd as mg


        def say(text):
            \"\"\"Show a sentence whose numbers were computed above.\"\"\"
            display(Markdown(text))
        """),
        md("""
        ## Two bowls from the same data

        10,000 points `y = 2 x - 1 + noise`. The loss is the mean squared error
        `L(w, b) = mean((w x + b - y)^2)` (torch's `MSELoss`; written below as a small
        `mg.Loss` subclass, the way any loss is added to minigd). Its curvature is
        the same everywhere, the Hessian `H = 2 [[mean(x^2), mean(x)], [mean(x), 1]]`, and its
        eigenvalues lambda_min and lambda_max are the curvatures along the bowl's two axes.
        With `x` centred (mean 0, standard deviation 1), `H = 2 I`: a round bowl. The same
        points shifted to mean 2 (`x + 2`, as raw, uncentred features often are) give an
        ill-conditioned bowl: a long, narrow valley.
        """),
        code("""
        class SquaredError(mg.Loss):
            \"\"\"Mean squared error over all elements (torch's MSELoss), written by hand.\"\"\"
            target_kind = "values"

            def value_and_grad(self, outputs, targets):
                diff = outputs - targets
                return float(np.mean(diff ** 2)), 2 * diff / diff.size


        LOSS = SquaredError()
        N = 10_000
        rng = np.random.default_rng(0)
        x = rng.standard_normal(N)
        x = (x - x.mean()) / x.std()
        noise = 0.5 * rng.standard_normal(N)

        class Problem:
            \"\"\"The data with x shifted to mean ``shift``, its Hessian, eigenvalues and minimum.\"\"\"

            def __init__(self, name, shift):
                self.name = name
                self.X = (x + shift).reshape(-1, 1)
                self.y = 2.0 * x - 1.0 + noise           # the same targets for both
                A = np.column_stack([self.X[:, 0], np.ones(N)])
                self.H = 2 * A.T @ A / N
                self.lam_min, self.lam_max = np.linalg.eigvalsh(self.H)
                self.steep = np.linalg.eigh(self.H)[1][:, 1]          # the steep axis
                self.best = np.linalg.lstsq(A, self.y, rcond=None)[0]    # (w*, b*)
                self.A = A

            def loss(self, w, b):
                \"\"\"L(w, b) on arrays of w and b (for the contours).\"\"\"
                r = w[..., None] * self.X[:, 0] + b[..., None] - self.y
                return np.mean(r ** 2, axis=-1)

        round_, narrow = Problem("centred x: round bowl", 0.0), Problem("x + 2: narrow valley", 2.0)
        for p in (round_, narrow):
            print(f"{p.name:24s} lambda_min {p.lam_min:.3f}  lambda_max {p.lam_max:.3f}  "
                  f"condition number {p.lam_max / p.lam_min:5.1f}  minimum (w*, b*) = "
                  f"({p.best[0]:.3f}, {p.best[1]:.3f})")
        assert abs(round_.lam_max / round_.lam_min - 1) < 1e-6 and narrow.lam_max / narrow.lam_min > 20
        """),
        md("""
        ## Recording the path: a callback

        `fit` calls `on_iteration_end` after every update; the callback copies the model's flat
        parameter buffer (`model.flat_values`: here the weight, then the bias). A callback with
        that hook makes `fit` take its per-iteration path, which records the same history.
        """),
        code("""
        class Trajectory(mg.Callback):
            \"\"\"Record the model's parameters before training and after every update.\"\"\"

            def on_train_begin(self, state):
                self.points = [state.model.flat_values.copy()]

            def on_iteration_end(self, state):
                self.points.append(state.model.flat_values.copy())


        START = (-1.0, 4.0)

        def path(problem, lr, batch_size, updates, momentum=0.0, start=START, seed=0):
            \"\"\"Train Dense(1, 1) from ``start`` for ``updates`` updates; return the (w, b) path
            (updates + 1 points) and the History.\"\"\"
            model = mg.Sequential(mg.Dense(1, 1), seed=seed, dtype=np.float64)
            model.load_state_dict({"0.weight": np.array([[start[0]]]), "0.bias": np.array([start[1]])})
            per_epoch = -(-N // batch_size)
            recorder = Trajectory()
            history = mg.fit(model, problem.X, problem.y, loss=LOSS,
                             optimizer=mg.SGD(model.parameters(), lr=lr, momentum=momentum),
                             epochs=-(-updates // per_epoch), batch_size=batch_size, seed=seed,
                             callbacks=[recorder], verbose=0)
            return np.array(recorder.points[:updates + 1]), history

        points, history = path(round_, lr=0.1, batch_size=N, updates=3)
        print(points)
        print("losses recorded by fit:", np.round(history.iterations["loss"], 4))
        assert np.allclose(history.iterations["loss"][0], round_.loss(*points[0]))
        """),
        md("""
        ## Four ways down each bowl

        Each run makes 60 updates from the same start (the black square), with learning rates
        computed from the bowl's curvature, not tuned:

        * **full-batch GD** (`batch_size=N`) at lr = 2 / (lambda_max + lambda_min), the best
          constant step for gradient descent on a quadratic;
        * **momentum** (full batch) at Polyak's values for a quadratic,
          lr = 4 / (sqrt(lambda_max) + sqrt(lambda_min))^2 and
          momentum = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2, kappa = lambda_max / lambda_min
          (momentum 0 on the round bowl, where there is nothing to damp);
        * **a mini-batch of 32** and **SGD** (`batch_size=1`) at a quarter of GD's lr: a single
          point's curvature, 2 (x_i^2 + 1), can be far above the average, and batch 1 at GD's
          own lr does not settle (measured below).
        """),
        code("""
        UPDATES = 60

        def settings(p):
            kappa = p.lam_max / p.lam_min
            gd_lr = 2 / (p.lam_max + p.lam_min)
            return {"full-batch GD": dict(lr=gd_lr, batch_size=N),
                    "momentum (Polyak)": dict(lr=4 / (np.sqrt(p.lam_max) + np.sqrt(p.lam_min)) ** 2,
                                              batch_size=N,
                                              momentum=round(((np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)) ** 2, 12)),
                    "mini-batch 32, lr / 4": dict(lr=gd_lr / 4, batch_size=32),
                    "SGD batch 1, lr / 4": dict(lr=gd_lr / 4, batch_size=1)}

        RUNS = list(settings(round_))
        paths = {}
        for p in (round_, narrow):
            for name, kwargs in settings(p).items():
                paths[p.name, name] = path(p, updates=UPDATES, **kwargs)[0]
                print(f"{p.name:24s} {name:22s} " + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in kwargs.items()))
        sgd_at_gd_lr = path(round_, settings(round_)["full-batch GD"]["lr"], 1, UPDATES)[0]

        def contours(ax, p, span=(3.5, 6.0)):
            w = np.linspace(p.best[0] - span[0], p.best[0] + span[0], 121)
            b = np.linspace(p.best[1] - span[1], p.best[1] + span[1], 121)
            W, B = np.meshgrid(w, b)
            L = p.loss(W, B)
            ax.contour(W, B, L, levels=np.geomspace(L.min() * 1.02, L.max(), 14), colors="0.75",
                       linewidths=0.8)
            ax.plot(*p.best, "k*", ms=12)
            ax.plot(*START, "ks", ms=7)
            ax.set(xlabel="weight w", ylabel="bias b", title=p.name,
                   xlim=(w[0], w[-1]), ylim=(b[0], b[-1]))

        fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
        for ax, p, span in zip(axes, (round_, narrow), ((3.5, 6.0), (3.5, 10.0))):
            contours(ax, p, span)
            for name in RUNS:
                ax.plot(*paths[p.name, name].T, ".-", ms=3, lw=1, label=name)
        axes[0].legend(fontsize="small")
        plt.show()

        def distance(points, p):
            return np.linalg.norm(points[-1] - p.best)

        print(f"distance from the minimum after {UPDATES} updates (start: "
              f"{np.linalg.norm(np.array(START) - round_.best):.2f} and "
              f"{np.linalg.norm(np.array(START) - narrow.best):.2f})")
        for name in RUNS:
            print(f"  {name:24s} round {distance(paths[round_.name, name], round_):10.3g}   "
                  f"narrow {distance(paths[narrow.name, name], narrow):10.3g}")
        print(f"  SGD batch 1 at GD's lr   round {distance(sgd_at_gd_lr, round_):10.3g}")
        """),
        code("""
        d = {(p.name, n): distance(paths[p.name, n], p) for p in (round_, narrow) for n in RUNS}
        R, V = round_.name, narrow.name
        gd, mom, mini, sgd = RUNS
        start_v = np.linalg.norm(np.array(START) - narrow.best)
        zigzag = np.sign(np.diff(paths[V, gd] @ narrow.steep))
        flips = int(np.sum(zigzag[1:] != zigzag[:-1]))
        wild = distance(sgd_at_gd_lr, round_)
        # the claims of the text below, checked
        assert d[R, gd] < 1e-6                                  # the round bowl: GD lands at once
        assert d[V, gd] > 0.01 * start_v                        # the valley: GD is still on its way
        assert d[V, mom] < 0.01 * d[V, gd]                      # momentum gets much further
        assert flips > UPDATES // 2                             # GD bounces across the valley
        assert d[R, sgd] > d[R, mini] > d[R, gd]                # noise: batch 1 > 32 > N
        assert wild > 10 * d[R, sgd]                            # batch 1 at GD's lr: far off
        rate_gd = (narrow.lam_max - narrow.lam_min) / (narrow.lam_max + narrow.lam_min)
        kappa = narrow.lam_max / narrow.lam_min
        rate_mom = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
        say(f"**What to notice.** On the round bowl full-batch GD lands on the minimum in one "
            f"update (distance {d[R, gd]:.1e} after {UPDATES}). In the narrow valley, with "
            f"condition number {kappa:.0f}, the best constant lr still leaves GD {d[V, gd]:.3f} "
            f"from the minimum after {UPDATES} updates (it started {start_v:.2f} away): the step "
            f"the steep walls allow is small along the flat floor, and across the valley GD "
            f"bounces ({flips} changes of direction in {UPDATES} updates). Each update shrinks its "
            f"error by at best {rate_gd:.3f}; momentum's by {rate_mom:.3f}: it adds up the "
            f"consistent steps along the floor while the bounces across cancel, and it ends "
            f"{d[V, mom]:.1e} away. SGD and the mini-batch follow the downhill direction with "
            f"noise: each step uses 1 or 32 points instead of all {N}, so on the round bowl they "
            f"end {d[R, sgd]:.3f} and {d[R, mini]:.3f} from the minimum instead of on it. "
            f"Batch 1 at GD's own lr ends {wild:.3g} away. Centring x, the left panel, is what "
            f"turns the valley back into a bowl.")
        """),
        md("""
        ## The noise ball

        SGD with a constant lr does not converge to the minimum: near it, the average gradient
        is zero but each batch's is not, so the parameters keep moving in a cloud around it,
        the noise ball. Theory for small lr: the cloud's mean squared radius grows like lr / B.
        Each run below starts at the minimum of the narrow valley and makes 4000 updates; the
        first 1000 are left out (the cloud takes time to fill), the rest are averaged.
        """),
        code("""
        BALL_UPDATES, BURN_IN = 4000, 1000
        base_lr = 0.5 / narrow.lam_max

        def ball(lr, batch_size):
            points = path(narrow, lr, batch_size, BALL_UPDATES, start=tuple(narrow.best))[0]
            cloud = points[BURN_IN:]
            return cloud, np.mean(np.sum((cloud - narrow.best) ** 2, axis=1))

        BATCH_SIZES, LR_FACTORS = (1, 4, 16, 64), (0.125, 0.25, 0.5, 1.0)
        by_batch = {b: ball(base_lr, b) for b in BATCH_SIZES}
        by_lr = {f: ball(f * base_lr, 4) for f in LR_FACTORS}
        slope_b = np.polyfit(np.log(BATCH_SIZES), np.log([by_batch[b][1] for b in BATCH_SIZES]), 1)[0]
        slope_lr = np.polyfit(np.log(LR_FACTORS), np.log([by_lr[f][1] for f in LR_FACTORS]), 1)[0]
        for b in BATCH_SIZES:
            print(f"lr {base_lr:.4f}, batch {b:3d}: mean squared radius {by_batch[b][1]:.2e}")
        for f in LR_FACTORS:
            print(f"lr {f * base_lr:.4f}, batch   4: mean squared radius {by_lr[f][1]:.2e}")
        print(f"fitted slopes on log-log axes: {slope_b:.2f} against batch size, {slope_lr:.2f} against lr")
        flat = np.linalg.eigh(narrow.H)[1][:, 0]
        spread = {b: np.std((by_batch[b][0] - narrow.best) @ narrow.steep) /
                  np.std((by_batch[b][0] - narrow.best) @ flat) for b in BATCH_SIZES}
        print("spread along the steep axis / along the flat axis:",
              ", ".join(f"batch {b}: {r:.2f}" for b, r in spread.items()))

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        contours(axes[0], narrow, span=(0.3, 0.7))
        for b in (1, 16):
            axes[0].plot(*by_batch[b][0][::5].T, ".", ms=2, alpha=0.5, label=f"batch {b}")
        axes[0].set_title(f"the noise ball, lr {base_lr:.3f} (every 5th update)")
        axes[0].set_aspect("equal")
        axes[0].legend(markerscale=5)
        axes[1].loglog(BATCH_SIZES, [by_batch[b][1] for b in BATCH_SIZES], "o-", label="measured")
        axes[1].loglog(BATCH_SIZES, by_batch[1][1] / np.array(BATCH_SIZES), "--", color="0.5",
                       label="slope -1: lr / B")
        axes[1].set(xlabel="batch size", ylabel="mean squared radius", title=f"lr {base_lr:.3f}")
        lrs = np.array(LR_FACTORS) * base_lr
        axes[2].loglog(lrs, [by_lr[f][1] for f in LR_FACTORS], "o-", label="measured")
        axes[2].loglog(lrs, by_lr[LR_FACTORS[-1]][1] * lrs / lrs[-1], "--", color="0.5",
                       label="slope 1: lr / B")
        axes[2].set(xlabel="learning rate", title="batch 4")
        for ax in axes[1:]:
            ax.legend(fontsize="small")
        fig.tight_layout()
        plt.show()
        """),
        code("""
        radii = [by_batch[b][1] for b in BATCH_SIZES]
        radii_lr = [by_lr[f][1] for f in LR_FACTORS]
        # the claims of the text below, checked
        assert all(a > b for a, b in zip(radii, radii[1:]))        # larger batch, smaller ball
        assert all(a < b for a, b in zip(radii_lr, radii_lr[1:]))  # smaller lr, smaller ball
        assert -1.4 < slope_b < -0.6 and 0.6 < slope_lr < 1.4
        assert all(0.5 < r < 2 for r in spread.values())          # nearly round
        say(f"**What to notice.** The cloud shrinks with both knobs: from batch 1 to batch 64 "
            f"its mean squared radius falls {radii[0] / radii[-1]:.0f}-fold (fitted slope "
            f"{slope_b:.2f}, theory -1), and from lr {lrs[-1]:.3f} to {lrs[0]:.4f} it falls "
            f"{radii_lr[-1] / radii_lr[0]:.0f}-fold (slope {slope_lr:.2f}, theory 1). The ball "
            f"is nearly round (its spread along the steep axis is {min(spread.values()):.2f} to "
            f"{max(spread.values()):.2f} times that along the floor), not stretched along the "
            f"floor: for least squares the gradient noise is largest along the steep axis, just "
            f"where the pull back to the minimum is strongest, and the two cancel. This is why a decaying lr (notebook 5) or a growing batch lets SGD settle: both "
            f"shrink the ball.")
        """),
        md("""
        ## The largest stable learning rate: 2 / lambda_max

        Along the steep axis, one step of full-batch GD multiplies the distance from the
        minimum by `1 - lr * lambda_max`. Below lr = 2 / lambda_max that factor lies between
        -1 and 1 and the distance shrinks, bouncing from side to side once lr is above
        1 / lambda_max; above 2 / lambda_max it is below -1 and every step overshoots further
        than the last. Five runs of 60 updates on the narrow valley:
        """),
        code("""
        LIMIT = 2 / narrow.lam_max
        FACTORS = (0.5, 0.9, 0.99, 1.02, 1.1)
        STEPS = 60
        edge = {f: path(narrow, f * LIMIT, N, STEPS) for f in FACTORS}

        fig, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(14, 5))
        contours(ax_path, narrow, span=(6, 12))
        for f in FACTORS:
            points, history = edge[f]
            ax_path.plot(*points[:20].T, ".-", lw=1, ms=3, label=f"lr {f:g} x 2/lambda_max")
            ax_loss.semilogy(np.arange(1, STEPS + 1), history.iterations["loss"],
                             label=f"lr {f:g} x 2/lambda_max = {f * LIMIT:.4f}")
        ax_path.set_title("the first 20 updates")
        ax_path.legend(fontsize="small")
        ax_loss.set(xlabel="update", ylabel="training loss (log scale)",
                    title=f"2 / lambda_max = {LIMIT:.4f}")
        ax_loss.legend(fontsize="small")
        plt.show()

        growth = {}
        for f in FACTORS:
            along = np.abs((edge[f][0] - narrow.best) @ narrow.steep)   # distance along the steep axis
            growth[f] = (along[25] / along[5]) ** (1 / 20)              # per step, updates 5 to 25
            measured = "done in one step" if f == 0.5 else f"x{growth[f]:.4f}"
            print(f"lr {f:4g} x 2/lambda_max: first loss {edge[f][1].iterations['loss'][0]:9.3f}, "
                  f"last {edge[f][1].iterations['loss'][-1]:12.4g}; per step along the steep axis "
                  f"{measured} (predicted |1 - lr lambda_max| = {abs(1 - f * LIMIT * narrow.lam_max):.4f})")
        """),
        code("""
        first = {f: edge[f][1].iterations["loss"][0] for f in FACTORS}
        last = {f: edge[f][1].iterations["loss"][-1] for f in FACTORS}
        # the claims of the text below, checked
        for f in FACTORS:
            if f != 0.5:        # at 0.5 the steep axis is done in one step (factor 0)
                assert abs(growth[f] - abs(1 - f * 2)) < 0.01     # the measured factor is the theory's
            if f < 1:
                assert last[f] < first[f]                         # below the limit: converges
            else:
                assert last[f] > first[f] and not edge[f][1].diverged   # above: grows (no NaN yet)
        say(f"**What to notice.** At 0.5, 0.9 and 0.99 times 2 / lambda_max = {LIMIT:.4f} the loss "
            f"falls, from {first[0.99]:.2f} to {last[0.99]:.2f} at 0.99 in {STEPS} updates, even though "
            f"at 0.99 each step overshoots the valley floor by 98% of the distance. Just past the "
            f"limit, at 1.02, it climbs to {last[1.02]:.3g}, and at 1.1 to {last[1.1]:.3g}: each "
            f"step multiplies the distance along the steep axis by {growth[1.02]:.3f} and "
            f"{growth[1.1]:.3f}, as |1 - lr lambda_max| predicts. The limit is set by the steepest "
            f"direction alone: one badly scaled or uncentred feature caps the lr for every "
            f"other direction, which is why inputs are standardised before training.")
        """),
    ]


@notebook("11_batch_normalization.ipynb")
def batch_normalization():
    return [
        md("""
        # 11. Batch normalization

        `mg.BatchNorm` normalises each feature over the batch, `(x - batch mean) / batch std`,
        then scales and shifts it by two learned vectors. A claim often repeated is that this
        allows higher learning rates. This notebook measures it: the same network with and
        without a BatchNorm layer, trained at learning rates from 0.03 to 10, five seeds each,
        on the bundled digits. Then it looks at what BatchNorm depends on: the batch statistics
        are themselves noisy, and much noisier at batch 4 than at 64; and the layer behaves
        differently in training and in evaluation mode.

        Every choice is made on the validation digits; the test digits are used once, at the
        end. Every number in the text is computed by a cell, and every claim is an `assert`.
        """),
        code(SETUP_SPLIT),
        md("""
        ## With and without BatchNorm, lr 0.03 to 10

        `784 -> 128 -> ReLU -> 10`, and the same with `BatchNorm(128)` between the first
        layer and the ReLU. 3000 training digits, three epochs of batch 64 (a longer run gives
        a smoother picture), plain SGD. A model with BatchNorm trains on `fit`'s per-iteration
        path (the layer has no fused kernel), so it is slower per epoch; the numbers are the
        same kind.
        """),
        code("""
        N_TRAIN, EPOCHS, BATCH = 3000, 3, 64
        X_sub, y_sub = X[:N_TRAIN], y[:N_TRAIN]
        LRS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
        SEEDS = range(5)

        def plain(seed):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        def with_bn(seed):
            return mg.Sequential(mg.Dense(784, 128), mg.BatchNorm(128), mg.ReLU(),
                                 mg.Dense(128, 10), seed=seed)

        MODELS = {"plain": plain, "BatchNorm": with_bn}
        sweeps = {name: mg.sweep(build, X_sub, y_sub, batch_sizes=[BATCH], lrs=LRS, epochs=EPOCHS,
                                 seeds=SEEDS, validation_data=(X_val, y_val))
                  for name, build in MODELS.items()}

        def over_seeds(name, lr, column):
            values = np.array([r[column] for r in sweeps[name].rows(lr=lr)], dtype=float)
            return values                       # one per seed; NaN where a seed diverged

        print(f"validation accuracy after {EPOCHS} epochs, mean +- sd over {len(SEEDS)} seeds")
        print(f"{'lr':>6s}" + "".join(f"{name:>22s}" for name in MODELS))
        for lr in LRS:
            cells = [over_seeds(name, lr, "val_accuracy") for name in MODELS]
            print(f"{lr:6g}" + "".join(f"{np.nanmean(c):15.3f} +- {np.nanstd(c):.3f}" for c in cells))
        """),
        code("""
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(13, 4.3))
        for name in MODELS:
            for ax, column in ((ax_acc, "val_accuracy"), (ax_loss, "val_loss")):
                values = np.array([over_seeds(name, lr, column) for lr in LRS])
                ax.errorbar(LRS, np.nanmean(values, 1), yerr=np.nanstd(values, 1), marker="o",
                            capsize=3, label=name)
        ax_acc.axhline(0.1, color="0.5", ls=":", lw=1, label="chance (0.1)")
        ax_loss.axhline(np.log(10), color="0.5", ls=":", lw=1, label="ln 10 (uniform guess)")
        ax_acc.set(xscale="log", xlabel="learning rate", ylabel="validation accuracy",
                   title=f"after {EPOCHS} epochs, mean +- sd over {len(SEEDS)} seeds")
        ax_loss.set(xscale="log", xlabel="learning rate", ylabel="validation loss")
        ax_acc.legend(fontsize="small"); ax_loss.legend(fontsize="small")
        plt.show()
        """),
        code("""
        acc = {(n, lr): np.nanmean(over_seeds(n, lr, "val_accuracy")) for n in MODELS for lr in LRS}
        best = {n: max(acc[n, lr] for lr in LRS) for n in MODELS}
        best_lr = {n: max(LRS, key=lambda lr: acc[n, lr]) for n in MODELS}
        trains = {n: [lr for lr in LRS if acc[n, lr] > best[n] - 0.05] for n in MODELS}
        fails = {n: [lr for lr in LRS if acc[n, lr] < 0.5] for n in MODELS}
        for n in MODELS:
            print(f"{n:10s} best lr {best_lr[n]:g} ({best[n]:.3f}); within 0.05 of its best at lr "
                  f"{trains[n]}; below 0.5 accuracy at lr {fails[n]}")

        def alive_units(name, lr):
            \"\"\"Hidden ReLU units that fire on at least one validation digit (seed 0, eval mode).\"\"\"
            net = MODELS[name](0)
            mg.fit(net, X_sub, y_sub, optimizer=mg.SGD(net.parameters(), lr=lr), epochs=EPOCHS,
                   batch_size=BATCH, seed=0, verbose=0)
            w = net.state_dict()
            h = X_val @ w["0.weight"] + w["0.bias"]
            if name == "BatchNorm":
                h = (h - w["1.running_mean"]) / np.sqrt(w["1.running_var"] + 1e-5) * w["1.weight"] + w["1.bias"]
            return int((h > 0).any(axis=0).sum())

        alive = {n: alive_units(n, 3.0) for n in MODELS}
        print("hidden units alive after training at lr 3 (of 128):", alive)
        # the claims of the text below, checked
        assert fails["plain"] == [3.0, 10.0] and fails["BatchNorm"] == [10.0]
        assert max(trains["BatchNorm"]) > max(trains["plain"])    # BN trains at a higher lr
        assert acc["BatchNorm", 3.0] > acc["plain", 3.0] + 0.3 and acc["plain", 3.0] < 0.2
        assert alive["plain"] < 32 and alive["BatchNorm"] > 100
        low = LRS[0]
        low_text = ("BatchNorm is ahead" if acc["BatchNorm", low] > acc["plain", low] + 0.02 else
                    "the plain network is ahead" if acc["plain", low] > acc["BatchNorm", low] + 0.02
                    else "the two are level")
        say(f"**What to notice.** The claim holds here, within limits. Without BatchNorm the "
            f"network trains well from lr {min(trains['plain']):g} to {max(trains['plain']):g} "
            f"(within 0.05 of its best validation accuracy, {best['plain']:.3f} at lr "
            f"{best_lr['plain']:g}) and fails at lr 3 and 10 ({acc['plain', 3.0]:.3f} at lr 3, "
            f"near chance). With BatchNorm it is within 0.05 of its best ({best['BatchNorm']:.3f} "
            f"at lr {best_lr['BatchNorm']:g}) from lr {min(trains['BatchNorm']):g} to "
            f"{max(trains['BatchNorm']):g}, {acc['BatchNorm', 3.0]:.3f} at lr 3, and fails only "
            f"at lr 10 ({acc['BatchNorm', 10.0]:.3f}): it moves the limit up, it does not remove "
            f"it. At the smallest lr, {low:g}, {low_text} ({acc['BatchNorm', low]:.3f} against "
            f"{acc['plain', low]:.3f}). Why lr 3 kills the plain network: its first steps push "
            f"most hidden units' inputs below zero for every digit, and after training only "
            f"{alive['plain']} of 128 units still fire (notebook 2's dead units). BatchNorm "
            f"re-centres and rescales those inputs on every batch, so they cannot all drift below "
            f"zero: {alive['BatchNorm']} of 128 still fire.")
        """),
        md("""
        ## The batch statistics are noisy, more so for small batches

        In training mode BatchNorm normalises each feature by the mean and standard deviation
        of the current batch, which are estimates of the whole data's. A BatchNorm network
        is trained at the best lr found above; then the first layer's outputs (the inputs of
        BatchNorm) are computed for 2000 random batches of 4 and of 64 training digits, and
        the spread of the batch mean of each feature, relative to that feature's standard
        deviation over all digits, is measured. Sampling theory says 1 / sqrt(B): 0.5 at
        batch 4, 0.125 at batch 64.
        """),
        code("""
        LR_BN = best_lr["BatchNorm"]
        model = with_bn(0)
        mg.fit(model, X_sub, y_sub, optimizer=mg.SGD(model.parameters(), lr=LR_BN), epochs=EPOCHS,
               batch_size=BATCH, seed=0, verbose=0)
        weights = model.state_dict()
        h = X_sub @ weights["0.weight"] + weights["0.bias"]        # BatchNorm's input, all digits
        rng = np.random.default_rng(0)
        noise, means = {}, {}
        for b in (4, 64):
            idx = np.array([rng.choice(len(h), size=b, replace=False) for _ in range(2000)])
            means[b] = h[idx].mean(axis=1)                           # (2000 batches, 128 features)
            noise[b] = np.median(means[b].std(axis=0) / h.std(axis=0))
            print(f"batch {b:2d}: spread of a feature's batch mean = {noise[b]:.3f} x its std "
                  f"(median over the 128 features; 1 / sqrt({b}) = {1 / np.sqrt(b):.3f})")

        unit = int(np.argmax(h.std(axis=0)))
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for b in (4, 64):
            ax.hist(means[b][:, unit], bins=60, alpha=0.6, density=True, label=f"batch {b}")
        ax.axvline(h[:, unit].mean(), color="k", lw=1, label="mean over all digits")
        ax.set(xlabel=f"batch mean of feature {unit}", ylabel="density",
               title="the mean BatchNorm subtracts, over 2000 random batches")
        ax.legend(fontsize="small")
        plt.show()
        ratio = noise[4] / noise[64]
        assert 3 < ratio < 5 and abs(noise[4] - 0.5) < 0.1         # the 1 / sqrt(B) law
        say(f"The batch mean wanders {noise[4]:.2f} standard deviations at batch 4 and "
            f"{noise[64]:.3f} at batch 64, {ratio:.1f}x less (sqrt(16) = 4 predicted). At batch 4 "
            f"every digit is normalised by statistics that are half a standard deviation off, and "
            f"differently in every batch: BatchNorm works best with batches large enough that its "
            f"statistics are good estimates.")
        """),
        md("""
        ## Training mode against evaluation mode

        In evaluation mode (`model.eval()`, which `predict` and `evaluate` use) BatchNorm
        normalises by the running mean and variance it accumulated during training, so a
        digit's prediction depends on the digit alone. In training mode it depends on the
        other digits in its batch. The same trained model, its validation accuracy computed
        four ways (on a copy, `model.clone()`, because a forward pass in training mode also
        moves the running statistics):
        """),
        code("""
        def accuracy_in_train_mode(batches):
            copy = model.clone().train()
            right = 0
            for idx in batches:
                right += int(np.sum(np.argmax(copy.forward(X_val[idx]), axis=1) == y_val[idx]))
            return right / sum(len(idx) for idx in batches)

        order = np.random.default_rng(1).permutation(len(X_val))
        by_class = [np.flatnonzero(y_val == c) for c in range(10)]
        ways = {
            "eval mode (running statistics)": mg.evaluate(model, X_val, y_val)["accuracy"],
            "train mode, shuffled batches of 64": accuracy_in_train_mode(np.array_split(order, len(order) // 64)),
            "train mode, shuffled batches of 4": accuracy_in_train_mode(np.array_split(order, len(order) // 4)),
            "train mode, batches of one class": accuracy_in_train_mode(by_class),
        }
        for way, value in ways.items():
            print(f"{way:36s} validation accuracy {value:.3f}")

        digit = int(order[0])
        copy = model.clone().train()
        company = {"with 63 shuffled digits": order[:64], "with 63 digits of its own class":
                   np.concatenate([[digit], by_class[y_val[digit]][by_class[y_val[digit]] != digit][:63]])}
        probs = {}
        for name, idx in company.items():
            logits = copy.forward(X_val[idx])[0]
            probs[name] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        eval_probs = model.predict_proba(X_val[[digit]])[0]

        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        width = 0.27
        for k, (name, p) in enumerate([("eval mode", eval_probs)] + list(probs.items())):
            ax.bar(np.arange(10) + (k - 1) * width, p, width, label=name)
        ax.set(xticks=range(10), xlabel="class", ylabel="predicted probability",
               title=f"one validation digit (a {y_val[digit]}), three ways")
        ax.legend(fontsize="small")
        plt.show()
        """),
        code("""
        e, t64, t4, one = ways.values()
        own = probs["with 63 digits of its own class"]
        # the claims of the text below, checked
        assert abs(e - t64) < 0.03                 # big shuffled batches: statistics close to the running ones
        assert t4 < t64                            # small batches: noisier statistics
        assert one < e - 0.3                       # one-class batches: the statistics are wrong
        assert np.argmax(own) != y_val[digit] or own[y_val[digit]] < 0.5 * eval_probs[y_val[digit]]
        say(f"In eval mode the model scores {e:.3f}. In train mode with shuffled batches of 64 "
            f"it scores {t64:.3f}: such batches' statistics are close to the running ones. With "
            f"batches of 4 it drops to {t4:.3f}, and with batches holding one class each to "
            f"{one:.3f}: every digit is then normalised against digits like itself, which "
            f"erases what sets it apart. The bar chart shows one digit: among its own class its "
            f"prediction changes, although the digit is the same. That is why `predict` and "
            f"`evaluate` switch to eval mode, and why a model with BatchNorm must be put back "
            f"into training mode (`fit` does this) before it trains again.")
        """),
        md("""
        ## The test set, once

        Each network at its own best lr from the sweep above (chosen on the validation
        digits), seed 0, scored on the test digits.
        """),
        code("""
        test = {}
        for name, build in MODELS.items():
            net = build(0)
            mg.fit(net, X_sub, y_sub, optimizer=mg.SGD(net.parameters(), lr=best_lr[name]),
                   epochs=EPOCHS, batch_size=BATCH, seed=0, verbose=0)
            test[name] = mg.evaluate(net, X_test, y_test)["accuracy"]
            print(f"{name:10s} lr {best_lr[name]:g}: test accuracy {test[name]:.3f} "
                  f"(validation, mean over seeds: {acc[name, best_lr[name]]:.3f})")
        assert all(abs(test[n] - acc[n, best_lr[n]]) < 0.05 for n in MODELS)
        gap = test["BatchNorm"] - test["plain"]
        say(f"At their own best lr, BatchNorm's network scores {test['BatchNorm']:.3f} on the test "
            f"digits and the plain one {test['plain']:.3f} "
            + ("(level within 0.01): here BatchNorm's gain is the range of learning rates that "
               "work, not a better best." if abs(gap) <= 0.01 else
               f"({gap:+.3f}). The larger gain measured here is the range of learning rates "
               f"that work."))
        """),
    ]


@notebook("12_time_not_updates.ipynb")
def time_not_updates():
    return [
        md("""
        # 12. Time, not updates

        Notebooks 1 and 3 counted progress in updates and in epochs. What you pay for is
        seconds. This notebook runs d2l's race: the same network trained with batch 1, 16, 256
        and the full batch, each for the same budget of wall-clock seconds, on both backends,
        with the loss plotted against time. Then it asks why the winner wins (vectorisation:
        one update on B samples costs far less than B updates on one), and finally measures a
        claim often repeated about batch size, that smaller batches generalise better.

        Timings depend on the machine and on what else it is doing, so the seconds change from
        run to run (the machine that built this notebook is printed below); the claims checked
        with `assert` are orders and ratios with a wide margin. Choices are made on the
        validation digits; the test digits are used once, at the end.
        """),
        code(SETUP_SPLIT),
        code("""
        import os
        import platform

        print("CPU:", platform.processor() or platform.machine(), "| cores:", os.cpu_count(),
              "| Numba threads:", os.environ.get("NUMBA_NUM_THREADS", "default"),
              "| BLAS threads:", os.environ.get("OPENBLAS_NUM_THREADS", "default"))
        """),
        md("""
        ## The contestants, each at its own learning rate

        The race uses 1000 training digits, so that the full batch is 1000 samples. A larger
        batch takes a larger step (notebook 4), so each batch size gets its own lr: a grid a
        factor of 2 apart, each lr trained for five epochs, and the lr with the lowest
        validation loss kept. (Five epochs are five updates for the full batch: its lr is
        chosen for a short run, a stated simplification.)
        """),
        code("""
        N_RACE = 1000
        X_race, y_race = X[:N_RACE], y[:N_RACE]
        BATCHES = (1, 16, 256, N_RACE)
        GRIDS = {1: (0.0125, 0.025, 0.05, 0.1, 0.2), 16: (0.05, 0.1, 0.2, 0.4, 0.8),
                 256: (0.2, 0.4, 0.8, 1.6, 3.2), N_RACE: (0.2, 0.4, 0.8, 1.6, 3.2)}
        TUNE_EPOCHS = 5

        def build(seed=0):
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)

        tuning = {b: mg.sweep(build, X_race, y_race, batch_sizes=[b], lrs=grid, epochs=TUNE_EPOCHS,
                              validation_data=(X_val, y_val))
                  for b, grid in GRIDS.items()}
        LR = {}
        for b, grid in GRIDS.items():
            val_loss = [tuning[b].rows(lr=lr)[0]["val_loss"] for lr in grid]
            LR[b] = grid[int(np.nanargmin(val_loss))]
            print(f"batch {b:4d}: validation loss " +
                  "  ".join(f"{lr:g}: {v:.3f}" for lr, v in zip(grid, val_loss)) + f"   -> lr {LR[b]:g}")
            assert grid[0] < LR[b] < grid[-1]          # the chosen lr lies inside its grid
        """),
        md("""
        ## The race

        Every run trains until its training time passes one second, on the Numba and on the
        NumPy backend. A small callback stops it: `on_epoch_end` adds up the `seconds` that
        `fit` records for each epoch (training only: the evaluation is not counted) and sets
        `state.stop_training`. It has no `on_iteration_end`, so the Numba backend keeps its
        fused whole-epoch kernel. The loss plotted is the loss on all 1000 training digits
        (passed as `validation_data`, so that `fit` evaluates it after every epoch): the race
        is about optimisation.
        """),
        code("""
        BUDGET = 1.0                 # seconds of training per run
        TARGET = 0.1                 # training loss that counts as "arrived"

        class TimeBudget(mg.Callback):
            \"\"\"Stop once the run's training seconds reach BUDGET.\"\"\"

            def on_epoch_end(self, state):
                if sum(state.history.epochs["seconds"]) >= BUDGET:
                    state.stop_training = True

        start_loss = mg.evaluate(build(0), X_race, y_race)["loss"]
        race = {}
        for backend in ("numba", "numpy"):
            with mg.use_backend(backend):
                for b in BATCHES:
                    model = build(0)
                    race[backend, b] = mg.fit(
                        model, X_race, y_race, optimizer=mg.SGD(model.parameters(), lr=LR[b]),
                        epochs=100_000, batch_size=b, seed=0, validation_data=(X_race, y_race),
                        callbacks=[TimeBudget()], verbose=0)

        def curve(history):
            \"\"\"(cumulative training seconds, training loss), from the untrained start.\"\"\"
            return (np.concatenate([[0.0], np.cumsum(history.epochs["seconds"])]),
                    np.concatenate([[start_loss], history.epochs["val_loss"]]))

        def time_to(history, target=TARGET):
            seconds, loss = curve(history)
            reached = np.flatnonzero(loss <= target)
            return seconds[reached[0]] if len(reached) else np.inf

        print(f"{'backend':8s} {'batch':>5s} {'lr':>6s} {'epochs':>7s} {'updates':>8s} "
              f"{'samples/s':>10s} {'final loss':>11s} {'time to ' + str(TARGET):>13s}")
        for (backend, b), h in race.items():
            t = time_to(h)
            print(f"{backend:8s} {b:5d} {LR[b]:6g} {h.n_epochs:7d} {h.n_iterations:8d} "
                  f"{np.median(h.epochs['samples_per_second']):10,.0f} {h.epochs['val_loss'][-1]:11.4f} "
                  + (f"{t:11.2f} s" if np.isfinite(t) else f"{'not reached':>13s}"))
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
        colors = dict(zip(BATCHES, ("tab:red", "tab:blue", "tab:green", "tab:purple")))
        for ax, backend in zip(axes[:2], ("numba", "numpy")):
            for b in BATCHES:
                seconds, loss = curve(race[backend, b])
                ax.plot(seconds, loss, marker="o" if len(seconds) < 15 else None, ms=4,
                        color=colors[b], label=f"batch {b}" + (" (full)" if b == N_RACE else "")
                        + f", lr {LR[b]:g}")
            ax.axhline(TARGET, color="0.5", ls=":", lw=1)
            ax.set(yscale="log", xlabel="training seconds", title=f"{backend}: loss against time",
                   xlim=(0, BUDGET * 1.6))
            ax.legend(fontsize="small")
        axes[0].set_ylabel("loss on the 1000 training digits")
        for b in BATCHES:          # the same runs, by epoch (the numbers agree across backends)
            h = race["numba", b]
            axes[2].plot(np.arange(h.n_epochs + 1), curve(h)[1], color=colors[b], label=f"batch {b}")
        axes[2].set(yscale="log", xlabel="epoch (passes over the 1000 digits)", xlim=(0, 12),
                    title="numba: the same runs against epochs")
        axes[2].legend(fontsize="small")
        fig.tight_layout()
        plt.show()
        """),
        code("""
        arrival = {k: time_to(h) for k, h in race.items()}
        winner = {be: min(BATCHES, key=lambda b: arrival[be, b]) for be in ("numba", "numpy")}
        one_pass = {b: race["numba", b].epochs["val_loss"][0] for b in BATCHES}   # after epoch 1
        # the claims of the text below, checked
        for backend in ("numba", "numpy"):
            assert winner[backend] in (16, 256)                       # a mini-batch arrives first
            for b in (1, N_RACE):
                assert arrival[backend, b] > 1.5 * arrival[backend, winner[backend]]
        assert list(one_pass.values()) == sorted(one_pass.values())   # per epoch: smaller is ahead

        def said(t):
            return f"after {t:.2f} s" if np.isfinite(t) else f"not within {BUDGET:g} s"

        say(f"**What to notice.** On both backends a mini-batch reaches training loss {TARGET} "
            f"first: batch {winner['numba']} on Numba ({said(arrival['numba', winner['numba']])}) and "
            f"batch {winner['numpy']} on NumPy ({said(arrival['numpy', winner['numpy']])}). Batch 1 "
            f"gets there {said(arrival['numba', 1])} on Numba and {said(arrival['numpy', 1])} on "
            f"NumPy; the full batch {said(arrival['numba', N_RACE])} on Numba and "
            f"{said(arrival['numpy', N_RACE])} on NumPy. Per epoch (right) the order is that of the "
            f"batch size: after one pass batch 1, with 1000 updates, is at loss {one_pass[1]:.2f}, "
            f"batch 16 at {one_pass[16]:.2f}, batch 256 at {one_pass[256]:.2f} and the full batch, "
            f"with one update, at {one_pass[N_RACE]:.2f}. A mini-batch wins in seconds because it has both: enough "
            f"updates per pass, and a cost per sample far below batch 1's. Why that cost falls "
            f"is the next section.")
        """),
        md("""
        ## Why: vectorisation

        An update on B samples does one matrix product of B rows per layer, instead of B
        products of one row. The fixed cost of an update (the Python calls of a step on NumPy,
        and on both backends the loops around matrix products too small to keep the processor
        busy) is paid once per update, not once per sample. The race's own epochs measure it:
        `fit` records the samples per second of every epoch, and each run's fastest epoch is
        used, which hides the delays that other programs on the machine cause.
        """),
        code("""
        per_sample = {k: 1e6 / np.max(h.epochs["samples_per_second"]) for k, h in race.items()}
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for backend, style in (("numba", "-o"), ("numpy", "--s")):
            ax.plot(BATCHES, [per_sample[backend, b] for b in BATCHES], style, label=backend)
        ax.set(xscale="log", yscale="log", xlabel="batch size",
               ylabel="microseconds per sample (training)", title="the cost of a sample falls with B")
        ax.legend()
        plt.show()
        for backend in ("numba", "numpy"):
            print(backend, "  ".join(f"batch {b}: {per_sample[backend, b]:.1f} us/sample, "
                                     f"{per_sample[backend, b] * b / 1e3:.2f} ms/update" for b in BATCHES))
        gain = {be: per_sample[be, 1] / per_sample[be, 16] for be in ("numba", "numpy")}
        numba_vs_numpy = per_sample["numpy", 1] / per_sample["numba", 1]
        assert gain["numba"] > 2 and gain["numpy"] > 2              # batching pays on both
        assert gain["numpy"] > gain["numba"]                         # most where Python dominates
        assert numba_vs_numpy > 2                                    # compiled loops at batch 1
        for backend in ("numba", "numpy"):                           # then the gain flattens
            assert per_sample[backend, 16] / per_sample[backend, 256] < gain[backend]
        n_weights = sum(p.value.size for p in build(0).parameters())
        say(f"An update on 16 samples costs {16 / gain['numba']:.1f}x an update on one sample on "
            f"Numba and {16 / gain['numpy']:.1f}x on NumPy, not 16x: most of a small update's "
            f"cost does not depend on B (the Python calls on NumPy, and on both backends writing "
            f"the gradient of all {n_weights:,} weights and updating them). "
            f"Going from batch 1 to batch 16 makes a sample {gain['numba']:.1f}x cheaper on Numba "
            f"and {gain['numpy']:.1f}x cheaper on NumPy, whose batch-1 update is a string of "
            f"small Python calls ({per_sample['numpy', 1]:.0f} us per sample against Numba's "
            f"{per_sample['numba', 1]:.0f}, {numba_vs_numpy:.1f}x). Beyond that the gain flattens: "
            f"batch 256 costs {per_sample['numba', 256]:.1f} us per sample on Numba and "
            f"{per_sample['numpy', 256]:.1f} on NumPy, and the full batch "
            f"{per_sample['numba', N_RACE]:.1f} and {per_sample['numpy', N_RACE]:.1f}. Once a "
            f"sample is cheap, more samples per update only mean fewer updates per second: that "
            f"is where the full batch loses the race.")
        """),
        md("""
        ## Do smaller batches generalise better?

        A claim often repeated: "smaller batch sizes ... might lead to better generalization".
        It is measured here, fairly: batch 16 against batch 512 on 2000 training digits, the
        same number of epochs (five), each at its own learning rate tuned on the validation
        digits (a grid of five, five seeds each), then each trained from five seeds at its
        chosen lr and scored on the test digits, once. Generalisation is read two ways: the
        test accuracy, and the gap between training and test accuracy.
        """),
        code("""
        N_GEN, GEN_EPOCHS, SEEDS = 2000, 5, range(5)
        X_gen, y_gen = X[:N_GEN], y[:N_GEN]
        SMALL, LARGE = 16, 512
        GEN_GRIDS = {SMALL: (0.05, 0.1, 0.2, 0.4, 0.8), LARGE: (0.2, 0.4, 0.8, 1.6, 3.2)}
        gen = {b: mg.sweep(build, X_gen, y_gen, batch_sizes=[b], lrs=grid, epochs=GEN_EPOCHS,
                           seeds=SEEDS, validation_data=(X_val, y_val))
               for b, grid in GEN_GRIDS.items()}

        def over_seeds(b, lr, column):
            values = np.array([r[column] for r in gen[b].rows(lr=lr)], dtype=float)
            return np.nanmean(values), np.nanstd(values)

        GEN_LR = {b: min(grid, key=lambda lr: over_seeds(b, lr, "val_loss")[0])
                  for b, grid in GEN_GRIDS.items()}
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
        for ax, (b, grid) in zip(axes, GEN_GRIDS.items()):
            stats = np.array([over_seeds(b, lr, "val_loss") for lr in grid])
            ax.errorbar(grid, stats[:, 0], yerr=stats[:, 1], marker="o", capsize=3)
            ax.axvline(GEN_LR[b], color="tab:green", ls="--", label=f"chosen: lr {GEN_LR[b]:g}")
            ax.set(xscale="log", xlabel="learning rate", title=f"batch {b}")
            ax.legend(fontsize="small")
            print(f"batch {b}: " + "  ".join(f"{lr:g}: {over_seeds(b, lr, 'val_loss')[0]:.3f}"
                                             for lr in grid) + f"   -> lr {GEN_LR[b]:g}")
            assert grid[0] < GEN_LR[b] < grid[-1]
        axes[0].set_ylabel(f"validation loss after {GEN_EPOCHS} epochs\\n(mean +- sd, {len(SEEDS)} seeds)")
        fig.suptitle("tuning each batch size's lr on the validation digits")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        ## The test set, once
        """),
        code("""
        scores = {b: [] for b in GEN_LR}
        for b, lr in GEN_LR.items():
            for seed in SEEDS:
                model = build(seed)
                mg.fit(model, X_gen, y_gen, optimizer=mg.SGD(model.parameters(), lr=lr),
                       epochs=GEN_EPOCHS, batch_size=b, seed=seed, verbose=0)
                train_acc = mg.evaluate(model, X_gen, y_gen)["accuracy"]
                test_acc = mg.evaluate(model, X_test, y_test)["accuracy"]
                scores[b].append((train_acc, test_acc, train_acc - test_acc))
        scores = {b: np.array(v) for b, v in scores.items()}

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, k, label in zip(axes, range(3), ("training accuracy", "test accuracy",
                                                  "gap: training - test accuracy")):
            for i, b in enumerate(GEN_LR):
                ax.plot(np.full(len(SEEDS), i) + np.linspace(-0.08, 0.08, len(SEEDS)),
                        scores[b][:, k], "o", alpha=0.7)
                ax.errorbar(i + 0.25, scores[b][:, k].mean(), yerr=scores[b][:, k].std(),
                            fmt="k_", capsize=4, ms=14)
            ax.set(xticks=range(len(GEN_LR)), xlim=(-0.5, len(GEN_LR) - 0.3), title=label,
                   xticklabels=[f"batch {b}\\nlr {lr:g}" for b, lr in GEN_LR.items()])
        fig.suptitle(f"{len(SEEDS)} seeds each (dots), mean +- sd (bars), {GEN_EPOCHS} epochs")
        fig.tight_layout()
        plt.show()

        mean = {b: s.mean(0) for b, s in scores.items()}
        sd = {b: s.std(0) for b, s in scores.items()}
        for b in GEN_LR:
            print(f"batch {b:3d}, lr {GEN_LR[b]:g}: " + "   ".join(
                f"{name} {m:.3f} +- {s:.3f}" for name, m, s in zip(("train", "test", "gap"), mean[b], sd[b])))
        diff = mean[SMALL][1] - mean[LARGE][1]
        spread = max(sd[SMALL][1], sd[LARGE][1])
        if diff > 2 * spread:
            verdict = f"batch {SMALL} scores higher on the test digits, by more than the spread between seeds"
        elif diff < -2 * spread:
            verdict = f"batch {LARGE} scores higher on the test digits, by more than the spread between seeds"
        else:
            verdict = "the two are level on the test digits, within the spread between seeds"
        gap_text = ("larger" if mean[SMALL][2] > mean[LARGE][2] + spread else
                    "smaller" if mean[SMALL][2] < mean[LARGE][2] - spread else "about the same")
        assert np.all(np.isfinite(np.concatenate(list(scores.values()))))
        assert mean[SMALL][0] > mean[LARGE][0]       # in the same epochs, batch 16 fits further
        say(f"**What to notice.** With the same five epochs, each at its own tuned lr, "
            f"{verdict}: {mean[SMALL][1]:.3f} +- {sd[SMALL][1]:.3f} for batch {SMALL} against "
            f"{mean[LARGE][1]:.3f} +- {sd[LARGE][1]:.3f} for batch {LARGE} (mean +- sd over "
            f"{len(SEEDS)} seeds). But batch {SMALL} also fits its training digits further "
            f"({mean[SMALL][0]:.3f} against {mean[LARGE][0]:.3f}): in five epochs it makes "
            f"{GEN_EPOCHS * -(-N_GEN // SMALL)} updates, batch {LARGE} makes "
            f"{GEN_EPOCHS * -(-N_GEN // LARGE)}. Its gap between training and test accuracy is "
            f"{gap_text} ({mean[SMALL][2]:.3f} against {mean[LARGE][2]:.3f}). So, measured here, "
            f"the small batch's advantage is "
            + ("more optimisation in the same epochs, not a smaller gap" if gap_text != "smaller"
               else "a smaller gap as well as more optimisation")
            + f". Compared at equal epochs, \\"generalises better\\" largely means \\"trained "
            f"further\\"; and a network of 100,000 weights on 2000 digits is far from the large "
            f"models where the claim was made.")
        """),
    ]


# --------------------------------------------------------------------------------------------
def kernel_environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name in THREAD_VARIABLES:
        env.setdefault(name, "1")
    env.pop("MPLBACKEND", None)
    return env


def execute(path, timeout=CELL_TIMEOUT):
    """Run the notebook at ``path`` top to bottom in a fresh kernel and save it with outputs."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute(env=kernel_environment())  # a failed claim (assert) raises here
    finally:
        nbformat.write(nb, path)  # a failed build keeps the outputs so far, to read the numbers
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", type=int, help="notebook numbers (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells only")
    args = parser.parse_args(argv)
    chosen = [
        name for name in NOTEBOOKS if not args.numbers or int(name.split("_")[0]) in args.numbers
    ]
    total = 0.0
    for name in chosen:
        path = HERE / name
        nbformat.write(make_notebook(NOTEBOOKS[name]()), path)
        if args.no_execute:
            print(f"wrote {name}")
            continue
        seconds = execute(path)
        total += seconds
        print(f"{name:45s} {seconds:6.1f} s")
    if not args.no_execute:
        print(f"{'total':45s} {total:6.1f} s")


if __name__ == "__main__":
    sys.exit(main())
