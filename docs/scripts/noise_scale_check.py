"""Gradient noise scale of the MNIST sample, and a batch-size loop that checks it.

    OPENBLAS_NUM_THREADS=1 python docs/scripts/noise_scale_check.py

1. B_simple of 784-128-10 at initialisation and after 1 epoch of SGD (batch 64, lr 0.1),
   50 pairs of batches 32 / 1024, for model/data seeds 0, 1, 2.
2. B_simple tracked every 10 updates over 3 epochs -> docs/img/noise_scale.png.
3. B_simple near each target loss, averaged over the tracked measurements around it.
4. The check (McCandlish et al. 2018, sec. 2.2): for each batch size B, the fewest updates S
   that reach each target training loss (best lr of a grid from 0.05 to 1.13 in steps of
   sqrt 2; the loss on 2000 fixed training images after every update). The paper's model
   S = S_min (1 + B_crit / B) is fitted by least squares in 1/B, and B_crit is compared with
   B_simple at that loss.
"""

import math
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import minigd as mg  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = (0.5, 0.35)
BATCHES = (16, 32, 64, 128, 256, 512, 1024)
LRS = tuple(round(0.05 * 2 ** (k / 2), 3) for k in range(10))  # 0.05 ... 1.13
MAX_EXAMPLES = 96_000


def model(seed=0):
    return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)


def noise_scale_at_init_and_after_one_epoch(X, y):
    print("1. B_simple (50 pairs, batches 32 / 1024), SGD lr 0.1, batch 64")
    for seed in (0, 1, 2):
        m = model(seed)
        rows = []
        for epoch in (0, 1):
            if epoch:
                mg.fit(
                    m,
                    X,
                    y,
                    optimizer=mg.SGD(m.parameters(), lr=0.1),
                    epochs=1,
                    batch_size=64,
                    seed=seed,
                    verbose=0,
                )
            e = mg.gradient_noise_scale(m, X, y, 32, 1024, n_pairs=50, seed=seed, details=True)
            rows.append(
                f"epoch {epoch}: loss {e.loss:.3f}  B_simple {e.b_simple:6.1f} +- "
                f"{e.b_simple_stderr:4.1f}  (|G|^2 {e.grad_sq:.3f}, tr {e.trace:.1f})"
            )
        print(f"  seed {seed}:  " + "   ".join(rows))


def tracked_run(X, y):
    m = model(0)
    tracker = mg.GradientNoiseScale(32, 1024, n_pairs=10, every=10, seed=0)
    mg.fit(
        m,
        X,
        y,
        optimizer=mg.SGD(m.parameters(), lr=0.1),
        epochs=3,
        batch_size=64,
        seed=0,
        callbacks=[tracker],
        verbose=0,
    )
    fig = mg.plot.noise_scale(tracker)
    fig.set_size_inches(6.4, 4.2)
    fig.axes[0].set_yscale("log")
    fig.tight_layout()
    mg.plot.save(fig, os.path.join(HERE, "..", "img", "noise_scale.png"), dpi=90)
    r = {k: np.asarray(v, dtype=float) for k, v in tracker.records.items()}
    print("2. tracked every 10 updates over 3 epochs (batch 64, lr 0.1, 10 pairs each)")
    for step in (0, 10, 20, 50, 100, 150, 200, 250, 300, 370):
        i = int(np.flatnonzero(r["step"] == step)[0])
        print(
            f"  step {step:4d}  loss {r['loss'][i]:.3f}  B_simple {r['b_simple'][i]:6.1f} "
            f"+- {r['b_simple_stderr'][i]:5.1f}"
        )
    print(
        "3. B_simple near each target loss: mean tr(Sigma) / mean |G|^2 over the tracked "
        "measurements with loss within 15% of the target"
    )
    for target in TARGETS:
        near = np.abs(r["loss"] / target - 1) <= 0.15
        ratio = r["trace"][near].mean() / r["grad_sq"][near].mean()
        print(
            f"  loss {target}: B_simple {ratio:.0f} ({near.sum()} measurements, steps "
            f"{int(r['step'][near].min())}-{int(r['step'][near].max())})"
        )


class _Reached(Exception):
    pass


class StepsToTargets(mg.Callback):
    """Records the first update after which the loss on a fixed subset is <= each target;
    stops fit (by raising) once the lowest target is reached."""

    def __init__(self, X_eval, y_eval, targets=TARGETS):
        self.data, self.targets = (X_eval, y_eval), sorted(targets, reverse=True)
        self.steps = {}

    def on_iteration_end(self, state):
        loss = mg.evaluate(state.model, *self.data)["loss"]
        for target in self.targets:
            if target not in self.steps and loss <= target:
                self.steps[target] = state.step
        if len(self.steps) == len(self.targets):
            raise _Reached()


def run_to_targets(X, y, X_eval, y_eval, batch_size, lr):
    m = model(0)
    tracker = StepsToTargets(X_eval, y_eval)
    try:
        mg.fit(
            m,
            X,
            y,
            optimizer=mg.SGD(m.parameters(), lr=lr),
            epochs=math.ceil(MAX_EXAMPLES / len(X)),
            batch_size=batch_size,
            seed=0,
            verbose=0,
            callbacks=[tracker],
        )
    except _Reached:
        pass
    return tracker


def critical_batch_check(X, y, X_eval, y_eval):
    print(f"4. fewest updates to training losses {TARGETS} (best lr of {LRS})")
    best = {target: {} for target in TARGETS}
    for B in BATCHES:
        runs = {lr: run_to_targets(X, y, X_eval, y_eval, B, lr).steps for lr in LRS}
        for target in TARGETS:
            steps = {lr: r.get(target, math.inf) for lr, r in runs.items()}
            lr = min(steps, key=steps.get)
            best[target][B] = steps[lr]
            print(
                f"  target {target}  B {B:5d}: S {steps[lr]:5} updates, E {steps[lr] * B:7} "
                f"examples, best lr {lr:g}"
            )
    fits = {}
    for target in TARGETS:
        Bs = np.array([B for B in BATCHES if math.isfinite(best[target][B])], dtype=float)
        S = np.array([best[target][B] for B in Bs], dtype=float)
        slope, intercept = np.polyfit(1 / Bs, S, 1)
        fits[target] = slope / intercept
        print(
            f"  target {target}: fit S = S_min (1 + B_crit / B): S_min {intercept:.1f}, "
            f"B_crit {slope / intercept:.0f}"
        )
    return fits


def main():
    X, y, _, _ = mg.datasets.load_mnist_sample()
    X_eval, y_eval = X[:2000], y[:2000]
    noise_scale_at_init_and_after_one_epoch(X, y)
    tracked_run(X, y)
    critical_batch_check(X, y, X_eval, y_eval)


if __name__ == "__main__":
    main()
