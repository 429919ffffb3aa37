"""Write the teaching notebooks from the cells below, then execute them in place.

    python notebooks/build_notebooks.py              # write and execute all eight
    python notebooks/build_notebooks.py 2 5          # only notebooks 02 and 05
    python notebooks/build_notebooks.py --no-execute # write the cells only

The cells live here, as plain text, so a change to a notebook is reviewed as a change to this
file and the .ipynb files can always be regenerated. Executing runs every notebook from a fresh
``python3`` kernel in the notebooks folder, with this checkout first on PYTHONPATH, and keeps
the outputs (plots as PNG) so they show on a code host. BLAS and OpenMP threads are pinned to 1
unless already set: the matrices are small, extra threads only contend on a busy 2-core
machine, and one thread keeps the numbers bit-for-bit repeatable.
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
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CELL_TIMEOUT = 600

SETUP = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import minigd as mg

X, y, X_test, y_test = mg.datasets.load_mnist_sample()
print(f"train {X.shape} {X.dtype}, test {X_test.shape}; classes {np.unique(y)}")"""


def md(text):
    return ("markdown", text)


def code(text):
    return ("code", text)


def make_notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(cells):
        text = textwrap.dedent(text).strip("\n")
        cell = (nbformat.v4.new_markdown_cell(text) if kind == "markdown"
                else nbformat.v4.new_code_cell(text))
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

        Everything runs on the 10,000 MNIST digits bundled with minigd, with fixed seeds, in a
        few seconds: a longer run gives a smoother picture.
        """),
        code(SETUP),
        md("""
        ## The arithmetic

        `BatchIterator` is what `fit` uses. `describe()` states its plan; iterating over it is
        one epoch.
        """),
        code("""
        for batch_size in (64, 100, 300, 8000, 1):
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
        """),
        md("""
        8000 samples in batches of 300 make 26 full batches and one of 200: 27 iterations.
        With `drop_last=True` the epoch has 26 iterations and 200 samples sit out, a different
        200 every epoch, because the order is reshuffled each epoch.

        ## One run, iteration by iteration

        Three epochs of batch 64 are 3 x 125 = 375 updates. `mg.plot.history` draws the loss of
        every batch, the epoch means, the held-out loss at each epoch end, and grey lines where
        one epoch ends and the next begins.
        """),
        code("""
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=3,
                         batch_size=64, seed=0, validation_data=(X_test, y_test), verbose=0)
        print(history)
        print("iterations per epoch:", [history.iterations["epoch"].count(e) for e in (1, 2, 3)])
        print("last update:", {k: v[-1] for k, v in history.iterations.items()})
        mg.plot.history(history)
        plt.show()
        """),
        md("""
        Each batch's loss scatters around the epoch mean because each batch is a different
        sample of 64 digits. The lr panel is flat: no schedule here.

        ## Batch GD, mini-batch, pure SGD

        Same model, same seed, same lr 0.05, on a 2000-image slice of the training set so that
        pure SGD (one Python step per sample) stays quick. Held-out accuracy is measured on
        1000 test images by `mg.EvaluateEvery`, which evaluates every few updates.

        **Budget of epochs**: three passes over the data each.
        """),
        code("""
        X_small, y_small = X[:2000], y[:2000]
        X_held, y_held = X_test[:1000], y_test[:1000]
        LR = 0.05

        def train(X_part, y_part, batch_size, epochs, every, shuffle=True):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            probe = mg.EvaluateEvery(X_held, y_held, every=every)
            history = mg.fit(model, X_part, y_part, optimizer=mg.SGD(model.parameters(), lr=LR),
                             epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=0,
                             callbacks=[probe], verbose=0)
            return history, probe

        same_epochs = {"batch GD (B = 2000)": train(X_small, y_small, 2000, 3, every=1),
                       "mini-batch (B = 64)": train(X_small, y_small, 64, 3, every=4),
                       "pure SGD (B = 1)": train(X_small, y_small, 1, 3, every=100)}
        print(f"{'run':22s} {'updates':>8s} {'samples seen':>13s} {'held-out acc':>13s}")
        for name, (history, probe) in same_epochs.items():
            print(f"{name:22s} {history.n_iterations:8d} {sum(history.iterations['batch_size']):13d}"
                  f" {probe.accuracy[-1]:13.3f}")
        """),
        md("""
        **Budget of updates**: 96 updates each. For batch GD that is 96 epochs; for mini-batch
        3 epochs; for pure SGD 96 samples, the first 96 of its shuffled order (so the slice
        `order[:96]` trained without shuffling makes exactly the first 96 updates of a seeded
        run).
        """),
        code("""
        order = mg.BatchIterator(X_small, y_small, batch_size=1, seed=0).permutation(0)[:96]
        same_updates = {"batch GD (B = 2000)": train(X_small, y_small, 2000, 96, every=4),
                        "mini-batch (B = 64)": same_epochs["mini-batch (B = 64)"],
                        "pure SGD (B = 1)": train(X_small[order], y_small[order], 1, 1, every=4,
                                                  shuffle=False)}
        for name, (history, probe) in same_updates.items():
            print(f"{name:22s} {history.n_iterations:4d} updates, "
                  f"{sum(history.iterations['batch_size']):7d} samples seen, "
                  f"held-out acc {probe.accuracy[-1]:.3f}")

        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
        for name, (history, probe) in same_epochs.items():
            left.plot(probe.epochs, probe.accuracy, marker="o" if len(probe.steps) < 10 else None,
                      label=f"{name}: {history.n_iterations} updates")
        for name, (history, probe) in same_updates.items():
            right.plot(probe.steps, probe.accuracy,
                       label=f"{name}: {sum(history.iterations['batch_size'])} samples")
        left.set(title="same budget of epochs (3)", xlabel="epoch", ylabel="held-out accuracy")
        right.set(title="same budget of updates (96)", xlabel="update (step)")
        left.legend(fontsize="small"); right.legend(fontsize="small")
        plt.show()
        """),
        md("""
        **What to notice.** Per epoch, small batches win: pure SGD makes 2000 updates per pass,
        batch GD makes one, and three full-batch steps barely move the model. Per update, the
        picture flips: 96 single-sample steps have seen only 96 digits and their path zigzags,
        while batch GD uses the exact gradient of all 2000 at every step. Mini-batch keeps
        pace with batch GD per update at 1/31 of the work: 64 digits already estimate the
        gradient well. That, and using the hardware far better than B = 1, is why mini-batches
        are the default.
        """),
    ]


@notebook("02_learning_rate.ipynb")
def learning_rate():
    return [
        md("""
        # 2. Learning rate

        The learning rate is the size of each step: `w <- w - lr * gradient`. Too small and
        the loss crawls; a good value converges; too large and the steps overshoot, the loss
        jumps up and training falls apart. Five values of plain SGD on the same model, seed
        and batches (batch 64, three epochs; a longer run gives a smoother picture).
        """),
        code(SETUP),
        code("""
        def train(lr, epochs=3, **fit_args):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=lr),
                             epochs=epochs, batch_size=64, seed=0, verbose=0, **fit_args)
            return model, history

        runs = {lr: train(lr) for lr in (1e-6, 0.01, 0.1, 1.0, 3.0)}
        print(f"{'lr':>6s} {'first loss':>11s} {'largest loss':>13s} {'last-epoch loss':>16s}"
              f" {'test acc':>9s}")
        for lr, (model, history) in runs.items():
            losses = history.iterations["loss"]
            print(f"{lr:6g} {losses[0]:11.3f} {max(losses):13.3g} "
                  f"{history.epochs['train_loss'][-1]:16.3f} {mg.accuracy(model, X_test, y_test):9.3f}")

        ax = mg.plot.compare({f"lr {lr:g}": h for lr, (m, h) in runs.items()}, smooth=10, log=True)
        ax.lines[0].set_linestyle("--")
        ax.axhline(np.log(10), color="0.5", ls=":", lw=1)
        ax.text(370, np.log(10) * 1.12, "ln 10 = loss of a uniform guess", color="0.3",
                fontsize=8, ha="right")
        ax.set_title("batch loss, mean of the last 10 updates (log scale)")
        plt.show()
        """),
        md("""
        **What to notice.** lr 1e-6 crawls: after 375 updates the loss has hardly left its
        starting value (dashed). 0.01 converges slowly and 0.1 well. On this data, with
        He-initialised weights, lr 1.0 still trains: its first updates spike, then it recovers
        and even ends lowest after three epochs. At lr 3.0 the loss shoots up by two orders of
        magnitude within a few updates and then settles at ln 10 = 2.30, on top of the crawling
        1e-6 run: from the loss alone, "too slow" and "broken" look alike. Why lr 3 settles
        there instead of going to infinity is in the next cell.
        """),
        code("""
        model, history = runs[3.0]
        weights = model.state_dict()
        hidden = np.maximum(X_test @ weights["0.weight"] + weights["0.bias"], 0)
        print("hidden units that fire on at least one test image:",
              int((hidden > 0).any(axis=0).sum()), "of", hidden.shape[1])
        print("predicted classes on the test set:", np.bincount(model.predict(X_test), minlength=10))
        """),
        md("""
        The huge first steps pushed almost every ReLU unit's input below zero for every image:
        those units are dead, their gradient is zero, and nothing can revive them. The output
        hardly depends on the input any more (every test image gets the same class), so the
        loss stays finite, at about ln 10. This is divergence
        in every sense that matters, but not a NaN, so `fit` has nothing to flag.

        ## The divergence report

        `fit` stops a run when the loss becomes NaN or infinite, keeps the history up to that
        point and says where it happened. With this ReLU network in float32 that needs an
        absurd step; lr 1e8 overflows float32 within a few updates. By default `fit` warns
        and marks the history. The warnings are caught here and printed, NumPy's own overflow
        warnings included:
        """),
        code("""
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, history = train(1e8)
        for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
            print(message)
        print()
        print("diverged:", history.diverged)
        print("where:", history.divergence)
        print(history)
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
        **What to notice.** The update that produced the non-finite loss was never applied, and
        every iteration before it is kept, so the plot shows the loss climbing by many orders
        of magnitude before the red line. A good learning rate for this setup lies between
        about 0.05 and 1; the next notebooks keep to that range.
        """),
    ]


@notebook("03_batch_size.ipynb")
def batch_size():
    return [
        md("""
        # 3. Batch size

        A batch of B samples gives a gradient estimate whose noise shrinks like 1 / sqrt(B),
        and an epoch of N samples takes ceil(N / B) updates. So a small batch means noisy steps
        but many of them per epoch; a large batch means smooth steps but few. Batch 16 against
        batch 256, same lr 0.1, same model and seed, five epochs (a longer run gives a
        smoother picture).
        """),
        code(SETUP),
        code("""
        runs, probes = {}, {}
        for batch_size, every in ((16, 10), (256, 4)):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            probe = mg.EvaluateEvery(X_test, y_test, every=every)
            name = f"batch {batch_size}"
            runs[name] = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                                epochs=5, batch_size=batch_size, seed=0, callbacks=[probe],
                                verbose=0)
            probes[name] = probe
            losses = np.array(runs[name].iterations["loss"])
            last_epoch = losses[np.array(runs[name].iterations["epoch"]) == 5]
            print(f"{name}: {len(last_epoch)} updates per epoch, {len(losses)} in total; "
                  f"batch loss in the last epoch {last_epoch.mean():.3f} +- {last_epoch.std():.3f} "
                  f"(mean +- std); held-out accuracy {probe.accuracy[-1]:.3f}")
        """),
        code("""
        fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
        mg.plot.compare(runs, x="step", ax=axes[0, 0])
        mg.plot.compare(runs, x="epoch", ax=axes[0, 1])
        for name, probe in probes.items():
            axes[1, 0].plot(probe.steps, probe.accuracy, label=name)
            axes[1, 1].plot(probe.epochs, probe.accuracy, label=name)
        axes[0, 0].set(title="per update: batch loss (the 160 updates batch 256 makes)", xlim=(0, 165))
        axes[0, 1].set_title("per epoch: batch loss")
        axes[1, 0].set(xlabel="update (step)", ylabel="held-out accuracy", ylim=(0.5, 1), xlim=(0, 165))
        axes[1, 1].set(xlabel="epoch", ylabel="held-out accuracy", ylim=(0.5, 1))
        axes[1, 0].legend(fontsize="small"); axes[1, 1].legend(fontsize="small")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        **What to notice.** Per update (left, over the 160 updates batch 256 makes in five
        epochs), batch 256 is ahead and its loss is a thin line, while batch 16's jumps around:
        each of its steps sees only 16 digits. Per epoch (right) the order flips: batch 16
        makes 500 updates per pass against 32, and after five passes it is more accurate on
        held-out digits. Which one is "faster" depends on whether you pay per update or per
        sample; notebook 8 measures what each costs in time.
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
        the noise of the update about constant. Starting from batch 16 at lr 0.1, batches 16,
        64 and 256 are trained for six epochs with each rule and with the lr left fixed (a
        longer run gives a smoother picture).
        """),
        code(SETUP),
        code("""
        BASE_BATCH, BASE_LR, EPOCHS = 16, 0.1, 6
        rules = {"fixed": lambda b: BASE_LR,
                 "sqrt": lambda b: mg.sqrt_scaling(BASE_LR, b, BASE_BATCH),
                 "linear": lambda b: mg.linear_scaling(BASE_LR, b, BASE_BATCH)}

        def train(batch_size, lr, schedule=None, seed=0):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)
            return mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=lr),
                          schedule=schedule, epochs=EPOCHS, batch_size=batch_size, seed=seed,
                          validation_data=(X_test, y_test), verbose=0)

        BATCHES = (16, 64, 256)
        runs = {}
        for batch_size in BATCHES:
            for rule, scale in rules.items():
                lr = scale(batch_size)
                if batch_size == BASE_BATCH and rule != "fixed":
                    runs[rule, batch_size] = runs["fixed", batch_size]  # every rule gives 0.1 here
                else:
                    runs[rule, batch_size] = train(batch_size, lr)

        print("held-out accuracy after 6 epochs (lr in brackets)")
        print(f"{'':12s}" + "".join(f"{'batch ' + str(b):>17s}" for b in BATCHES))
        for rule, scale in rules.items():
            cells = [f"{runs[rule, b].epochs['val_accuracy'][-1]:.3f} (lr {scale(b):g})"
                     for b in BATCHES]
            print(f"{rule + ' rule':12s}" + "".join(f"{cell:>17s}" for cell in cells))
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
        for ax, rule in zip(axes, rules):
            mg.plot.compare({f"batch {b}, lr {rules[rule](b):g}": runs[rule, b] for b in BATCHES},
                            x="epoch", y="train_loss", ax=ax, log=True)
            ax.set_title(f"{rule} lr")
        axes[1].set_ylabel(""); axes[2].set_ylabel("")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        **What to notice.** With a fixed lr, larger batches fall behind per epoch: fewer updates
        of the same size. The square-root rule closes part of the gap. The linear rule closes
        it completely at batch 64: with lr 0.4 its per-epoch curve lies on top of batch 16's,
        which is the rule's promise (the same progress per epoch from 4x fewer updates). At
        batch 256 it breaks: lr 1.6 is past what this network tolerates in its first updates
        (notebook 2), the loss jumps and accuracy drops to near chance.

        ## Warmup repairs the linear rule (mostly)

        Goyal et al. start at the base lr and raise it linearly to the scaled lr over the first
        epochs. `mg.schedules.Warmup` does this in front of any schedule; here a constant lr per
        iteration, warmed up over the first two epochs from 0.1 to 1.6.
        """),
        code("""
        ITERATIONS_PER_EPOCH = len(mg.BatchIterator(X, y, batch_size=256))
        target = mg.linear_scaling(BASE_LR, 256, BASE_BATCH)

        def warmup():
            return mg.schedules.Warmup(mg.schedules.Constant(target, unit="iteration"),
                                       warmup_steps=2 * ITERATIONS_PER_EPOCH,
                                       start_factor=BASE_LR / target)

        runs["linear + warmup", 256] = train(256, target, schedule=warmup())
        compared = {"batch 256, linear rule, no warmup": runs["linear", 256],
                    "batch 256, linear rule + 2-epoch warmup": runs["linear + warmup", 256],
                    "batch 256, sqrt rule": runs["sqrt", 256]}
        fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(13, 4))
        mg.plot.compare(compared, x="epoch", smooth=8, log=True, ax=ax_loss)
        mg.plot.compare(compared, x="epoch", y="lr", ax=ax_lr)
        ax_loss.set_title("batch loss (mean of 8 updates)"); ax_lr.set_title("lr of each update")
        fig.tight_layout()
        plt.show()

        print("seed   no warmup   with warmup   (held-out accuracy, batch 256, lr 1.6)")
        for seed in range(4):
            plain = train(256, target, seed=seed).epochs["val_accuracy"][-1]
            warmed = train(256, target, schedule=warmup(), seed=seed).epochs["val_accuracy"][-1]
            print(f"{seed:4d} {plain:11.3f} {warmed:13.3f}")
        """),
        md("""
        **What to notice.** Without warmup the first full-size steps blow the loss up and the
        run never recovers. With warmup the network first moves to a calmer region with small
        steps, and the same lr 1.6 then trains and ends level with the square-root rule. The
        bump just after epoch 2, when the lr reaches 1.6, and the seed table are the honest
        part: 1.6 sits near the edge of stability for this network, so warmed-up runs are
        bumpy and vary from seed to seed. The linear rule holds while k x lr stays below that
        edge; past it, no warmup helps, and the square-root rule's smaller lr is the safer
        choice.
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
        batch 64 (750 updates; a longer run gives a smoother picture), and compared on how many
        updates it needs to reach a target held-out accuracy.
        """),
        code(SETUP),
        code("""
        EPOCHS, BATCH = 6, 64
        PER_EPOCH = len(mg.BatchIterator(X, y, batch_size=BATCH))
        UPDATES = EPOCHS * PER_EPOCH
        S = mg.schedules
        schedules = {
            "constant 0.1": S.Constant(0.1),
            "step: x0.5 every 2 epochs": S.StepDecay(0.3, step_size=2, gamma=0.5),
            "exponential: x0.7 per epoch": S.ExponentialDecay(0.3, gamma=0.7),
            "cyclic triangular": S.CyclicLR(0.02, 0.4, step_size=PER_EPOCH // 2),
            "cyclic triangular2": S.CyclicLR(0.02, 0.4, step_size=PER_EPOCH // 2, mode="triangular2"),
            "cyclic exp_range": S.CyclicLR(0.02, 0.4, step_size=PER_EPOCH // 2, mode="exp_range",
                                           gamma=0.998),
            "cosine": S.CosineAnnealing(0.3, t_max=UPDATES, unit="iteration"),
            "warmup + cosine": S.Warmup(S.CosineAnnealing(0.3, t_max=UPDATES, unit="iteration"),
                                        warmup_steps=PER_EPOCH, start_factor=0.1),
        }
        for name, schedule in schedules.items():
            print(f"{name:28s} {schedule!r}")
        """),
        code("""
        fig, axes = plt.subplots(2, 4, figsize=(15, 6), sharey=True)
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
        drawn as steps over 6 epochs; the others change it every update, over 750 updates.
        The three cyclic modes rise and fall every epoch between 0.02 and 0.4: `triangular`
        keeps its height, `triangular2` halves it each cycle, `exp_range` shrinks it by
        gamma ** t (t in iterations).

        ## Training with each schedule
        """),
        code("""
        runs, probes = {}, {}
        for name, schedule in schedules.items():
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            probes[name] = mg.EvaluateEvery(X_test, y_test, every=25)
            runs[name] = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                                schedule=schedule, epochs=EPOCHS, batch_size=BATCH, seed=0,
                                callbacks=[probes[name]], verbose=0)

        TARGET = 0.92
        print(f"{'schedule':28s} {'updates to ' + format(TARGET, '.0%'):>16s} {'final accuracy':>15s}")
        for name in sorted(schedules, key=lambda n: probes[n].steps_to_reach(TARGET) or 10**9):
            reached = probes[name].steps_to_reach(TARGET)
            print(f"{name:28s} {reached if reached is not None else 'not reached':>16} "
                  f"{probes[name].accuracy[-1]:15.3f}")
        """),
        code("""
        fig, (ax_lr, ax_acc) = plt.subplots(1, 2, figsize=(14, 4.5))
        mg.plot.compare(runs, y="lr", ax=ax_lr)
        ax_lr.set_title("lr that fit used for each update")
        ax_lr.get_legend().remove()
        for name, probe in probes.items():
            ax_acc.plot(probe.steps, probe.accuracy, label=name)
        ax_acc.axhline(TARGET, color="0.5", ls=":")
        ax_acc.set(ylim=(0.85, 0.96), xlabel="update (step)",
                   ylabel="held-out accuracy (every 25 updates)")
        ax_acc.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        plt.show()
        """),
        md("""
        **What to notice.** The left panel is read back from each run's history: the lr `fit`
        actually used, update by update, which is exactly the schedule evaluated at each t.
        On the right, the schedules that start high (step, exponential, cosine) reach the
        target first, and the constant 0.1 last, at about twice as many updates; the warmup
        spends its first epoch at a small lr and starts slower. Near the end what counts is how
        low the lr has come: the decaying schedules settle, while a cyclic run's last accuracy
        depends on where in its cycle it stops (here the triangular cycle ends at its
        bottom). Accuracy is checked every 25 updates, so runs within 25 updates are tied.
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

        The same model, seed, batches and budget (four epochs of batch 64 = 500 updates), five
        ways to turn a gradient into a step, all with torch.optim's update rules:

        * **SGD**: `w <- w - lr * g`
        * **momentum**: `b <- 0.9 b + g;  w <- w - lr * b`, a running sum of past gradients
        * **Nesterov**: the same, but steps with `g + 0.9 b`, a look-ahead
        * **Adam**: per-weight steps, `lr * m / (sqrt(v) + eps)` from running means of g and g^2
        * **AdamW**: Adam with decoupled weight decay, `w <- w (1 - lr * wd)` every step

        Each gets a learning rate usual for it: with momentum 0.9 the buffer grows to about
        10 g, so lr 0.01 with momentum takes steps like lr 0.1 without. A longer run gives a
        smoother picture.
        """),
        code(SETUP),
        code("""
        def make(name, params):
            if name == "SGD lr 0.1":
                return mg.SGD(params, lr=0.1)
            if name == "momentum 0.9, lr 0.01":
                return mg.SGD(params, lr=0.01, momentum=0.9)
            if name == "Nesterov 0.9, lr 0.01":
                return mg.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
            if name == "Adam lr 1e-3":
                return mg.Adam(params, lr=1e-3)
            if name == "AdamW lr 1e-3, wd 0.1":
                return mg.AdamW(params, lr=1e-3, weight_decay=0.1)

        names = ["SGD lr 0.1", "momentum 0.9, lr 0.01", "Nesterov 0.9, lr 0.01", "Adam lr 1e-3",
                 "AdamW lr 1e-3, wd 0.1"]
        runs, probes, models = {}, {}, {}
        for name in names:
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            probes[name] = mg.EvaluateEvery(X_test, y_test, every=20)
            runs[name] = mg.fit(model, X, y, optimizer=make(name, model.parameters()), epochs=4,
                                batch_size=64, seed=0, callbacks=[probes[name]], verbose=0)
            models[name] = model

        print(f"{'optimizer':24s} {'acc @100':>9s} {'acc @500':>9s} {'train loss':>11s} "
              f"{'|weights|':>10s}")
        for name in names:
            weights = np.concatenate([v.ravel() for v in models[name].state_dict().values()])
            at_100 = probes[name].accuracy[probes[name].steps.index(100)]
            print(f"{name:24s} {at_100:9.3f} {probes[name].accuracy[-1]:9.3f} "
                  f"{runs[name].epochs['train_loss'][-1]:11.4f} {np.linalg.norm(weights):10.2f}")
        """),
        code("""
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14, 4.5))
        mg.plot.compare(runs, smooth=25, log=True, ax=ax_loss)
        ax_loss.set_title("batch loss, mean of the last 25 updates")
        for name, probe in probes.items():
            ax_acc.plot(probe.steps, probe.accuracy, label=name)
        ax_acc.set(ylim=(0.8, 0.98), xlabel="update (step)", ylabel="held-out accuracy",
                   title="held-out accuracy every 20 updates")
        ax_acc.legend(fontsize="small")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        **What to notice.** Momentum and Nesterov at lr 0.01 track plain SGD at lr 0.1 closely:
        the momentum buffer turns a small lr into a large effective step, and the look-ahead
        changes little here. Adam starts fastest, because it scales each weight's step to that
        weight's gradient history. AdamW's decay shows in the weight norm, the last column:
        it keeps the weights smaller at nearly the same loss. Rankings between optimizers move
        with the learning rate; compare them at their own good lr, as here, not at one shared
        value.
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
        doing, so they change from run to run, unlike the other notebooks' numbers.
        """),
        code(SETUP),
        code("""
        import os
        import time

        print("cores:", os.cpu_count(), "| BLAS threads:",
              os.environ.get("OPENBLAS_NUM_THREADS", "default"), "| default backend:", mg.get_backend())
        """),
        code("""
        def make_model():
            return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)

        def one_epoch(batch_size):
            model = make_model()
            history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
                             epochs=1, batch_size=batch_size, seed=0, verbose=0)
            return history

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

        Each timing is the best of three epochs of 8000 samples (one epoch for batch 1), which
        hides one-off delays caused by other programs.
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
        for batch_size in BATCHES:
            line = "   ".join(f"{name} {speed[name, batch_size]:9,.0f} samples/s" for name in backends)
            ratio = (f"   numba / numpy = {speed['numba', batch_size] / speed['numpy', batch_size]:.1f}x"
                     if "numba" in backends else "")
            print(f"batch {batch_size:4d}: {line}{ratio}")

        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(backends)
        for k, name in enumerate(backends):
            ax.bar(np.arange(len(BATCHES)) + k * width, [speed[name, b] for b in BATCHES],
                   width, label=name)
        ax.set_xticks(np.arange(len(BATCHES)) + width * (len(backends) - 1) / 2,
                      [f"batch {b}" for b in BATCHES])
        ax.set(yscale="log", ylabel="samples per second (one epoch)", title="training throughput")
        ax.legend()
        plt.show()
        """),
        md("""
        ## What one iteration spends its time on

        One batch of 64, the steps of an iteration called one by one through the public API:
        drawing the batch, the forward pass, the loss, its gradient, the backward pass and the
        optimizer's update. Each step is timed over 200 repetitions and the median is kept.
        `loss.forward` computes the gradient in the same pass, so `loss.backward` only hands
        it over. The public calls check their inputs and return copies, and `model.backward`
        also computes the gradient with respect to the input images, which `fit` skips; so on
        a quiet machine `fit`'s own time per iteration, printed below the bars' numbers, is
        less than their sum.
        """),
        code("""
        def phase_times(repeats=200, batch_size=64):
            model = make_model()
            loss = mg.SoftmaxCrossEntropy()
            optimizer = mg.SGD(model.parameters(), lr=0.1)
            batches = mg.BatchIterator(X, y, batch_size=batch_size, seed=0).batches(0)
            times = {k: [] for k in ("next batch", "model.forward", "loss.forward", "loss.backward",
                                     "model.backward", "optimizer.step")}
            for _ in range(repeats):
                t0 = time.perf_counter()
                try:
                    xb, yb = next(batches)
                except StopIteration:
                    batches = mg.BatchIterator(X, y, batch_size=batch_size, seed=0).batches(0)
                    xb, yb = next(batches)
                t1 = time.perf_counter(); logits = model.forward(xb)
                t2 = time.perf_counter(); loss.forward(logits, yb)
                t3 = time.perf_counter(); dlogits = loss.backward()
                t4 = time.perf_counter(); model.backward(dlogits)
                t5 = time.perf_counter(); optimizer.step()
                t6 = time.perf_counter()
                for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                    times[key].append(dt)
            return {key: 1e6 * float(np.median(v)) for key, v in times.items()}

        phases = {}
        for name in backends:
            with mg.use_backend(name):
                phases[name] = phase_times()
            total = sum(phases[name].values())
            print(f"{name}: " + ", ".join(f"{k} {v:.0f} us" for k, v in phases[name].items())
                  + f"; total {total:.0f} us per iteration")
            print(f"{'':7s}fit's own iteration at batch 64: {1e6 * 64 / speed[name, 64]:.0f} us")

        fig, ax = plt.subplots(figsize=(8, 3.8))
        keys = list(next(iter(phases.values())))
        width = 0.8 / len(backends)
        for k, name in enumerate(backends):
            ax.barh(np.arange(len(keys)) + k * width, [phases[name][key] for key in keys], width,
                    label=name)
        ax.set_yticks(np.arange(len(keys)) + width * (len(backends) - 1) / 2, keys)
        ax.invert_yaxis()
        ax.set(xlabel="microseconds (median of 200)", title="one iteration, batch 64, step by step")
        ax.legend()
        plt.show()
        """),
        md("""
        **What to notice.** The forward and backward passes hold the matrix products of the
        Dense layers, and in a 784-128-10 network the first layer's (784 x 128 weights) dominate;
        the loss and the update are cheap, the update touching each of the 101,770 weights
        once. Every iteration also pays a fixed cost (Python calls per layer and per kernel)
        whatever the batch size, which is why throughput in the first chart climbs steeply
        from batch 1 to 16 and more slowly after. Compare the backends bar by bar: the ratios
        printed above the chart are the measured answer for this machine.
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
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            coalesce_streams=True, resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    client.execute(env=kernel_environment())
    seconds = time.perf_counter() - started
    nbformat.write(nb, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", type=int, help="notebook numbers (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells only")
    args = parser.parse_args(argv)
    chosen = [name for name in NOTEBOOKS
              if not args.numbers or int(name.split("_")[0]) in args.numbers]
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
