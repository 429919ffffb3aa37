"""Make the plots and numbers of docs/guides/sweeps.md, docs/guides/batch_size_schedules.md and
docs/guides/estimator.md:  python docs/scripts/make_experiment_plots.py [sweep|batch|estimator ...]

Writes docs/img/sweep_heatmap.png, sweep_curves.png, batch_schedule.png, estimator_grid.png and
prints the numbers quoted in the text. About a minute on 2 cores.
"""

import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import minigd as mg  # noqa: E402
from minigd.schedules import StepBatchSize, StepDecay  # noqa: E402

IMG = os.path.join(os.path.dirname(__file__), "..", "img")


def sweep_plots():
    X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    started = time.perf_counter()
    result = mg.sweep(
        mg.MLPBuilder((784, 128, 10)),
        X,
        y,
        batch_sizes=[16, 64, 256, 1024],
        lrs=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        epochs=3,
        validation_data=(X_test, y_test),
        n_jobs=2,
    )
    print(f"sweep: {len(result)} cells in {time.perf_counter() - started:.1f} s (n_jobs=2)")
    for row in result.table:
        print(
            f"  B={row['batch_size']:5d} lr={row['lr']:<5g} val_acc={row['val_accuracy']:.4f} "
            f"train_loss={row['train_loss']:.4f} updates={row['updates']:5d} "
            f"{row['seconds']:.2f} s diverged={row['diverged']}"
        )
    print("best:", result.best("val_accuracy"))
    ax = mg.plot.sweep_heatmap(result, value="val_accuracy")
    mg.plot.save(ax.figure, os.path.join(IMG, "sweep_heatmap.png"), dpi=80)
    best_lr = {
        b: max(result.rows(batch_size=b), key=lambda r: r["val_accuracy"])["lr"]
        for b in [16, 64, 256, 1024]
    }
    print("best lr per batch size:", best_lr)
    scaled = mg.sweep(
        mg.MLPBuilder((784, 128, 10)),
        X,
        y,
        batch_sizes=[16, 64, 256, 1024],
        scaling="sqrt",
        base_lr=0.1,
        base_batch_size=64,
        epochs=3,
        validation_data=(X_test, y_test),
        n_jobs=2,
    )
    for row in scaled.table:
        print(
            f"  sqrt: B={row['batch_size']:5d} lr={row['lr']:.4g} "
            f"val_acc={row['val_accuracy']:.4f} updates={row['updates']}"
        )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    mg.plot.sweep_curves(scaled, x="epoch", ax=axes[0])
    mg.plot.sweep_curves(scaled, x="update", ax=axes[1])
    axes[0].set_title("sqrt scaling from lr 0.1 at batch 64: loss per epoch", fontsize="medium")
    axes[1].set_title("the same runs against updates", fontsize="medium")
    mg.plot.save(fig, os.path.join(IMG, "sweep_curves.png"), dpi=80)


def batch_schedule_plot():
    X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    runs = {
        "A: batch 32, lr 0.5 / 5 every 2 epochs": (32, StepDecay(0.5, 2, 0.2)),
        "B: lr 0.5, batch 32 x 5 every 2 epochs": (StepBatchSize(32, 2, 5), None),
        "C: batch 32, lr 0.5 throughout": (32, None),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, (batch_size, schedule) in runs.items():
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.5),
            epochs=6,
            batch_size=batch_size,
            schedule=schedule,
            seed=0,
            verbose=0,
            validation_data=(X_test, y_test),
        )
        losses = history.epochs["train_loss"]
        ends = [
            max(
                s
                for e, s in zip(history.iterations["epoch"], history.iterations["step"])
                if e == epoch
            )
            for epoch in history.epochs["epoch"]
        ]
        print(
            f"{label}: train loss per epoch {np.round(losses, 4).tolist()}, "
            f"val accuracy {np.round(history.epochs['val_accuracy'], 4).tolist()}, "
            f"{history.n_iterations} updates, batch sizes "
            f"{sorted(set(history.iterations['batch_size']))}"
        )
        axes[0].plot(history.epochs["epoch"], losses, "o-", ms=3, label=label)
        axes[1].plot(ends, losses, "o-", ms=3, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("updates (optimizer steps)")
    for ax in axes:
        ax.set_ylabel("train loss (epoch mean)")
        ax.set_yscale("log")
    axes[0].legend(fontsize="small")
    axes[0].set_title("per epoch, B tracks A", fontsize="medium")
    axes[1].set_title("per update, B needs far fewer", fontsize="medium")
    fig.tight_layout()
    mg.plot.save(fig, os.path.join(IMG, "batch_schedule.png"), dpi=80)


def estimator_plot():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    pipe = Pipeline(
        [("scale", StandardScaler()), ("mlp", mg.MLPClassifier(hidden=(64,), epochs=3, seed=0))]
    )
    lrs, batches = [0.003, 0.01, 0.03, 0.1], [16, 64, 256]
    started = time.perf_counter()
    grid = GridSearchCV(pipe, {"mlp__lr": lrs, "mlp__batch_size": batches}, cv=3, n_jobs=2)
    grid.fit(X, y)
    print(
        f"GridSearchCV: {len(lrs) * len(batches)} candidates x 3 folds in "
        f"{time.perf_counter() - started:.1f} s; best {grid.best_params_} "
        f"cv accuracy {grid.best_score_:.4f}; test accuracy {grid.score(X_test, y_test):.4f}"
    )
    scores = np.zeros((len(lrs), len(batches)))
    for params, score in zip(grid.cv_results_["params"], grid.cv_results_["mean_test_score"]):
        scores[lrs.index(params["mlp__lr"]), batches.index(params["mlp__batch_size"])] = score
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    image = ax.imshow(scores[::-1], cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="mean cv accuracy")
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs[::-1]])
    for i, row in enumerate(scores[::-1]):
        for j, value in enumerate(row):
            ax.text(
                j,
                i,
                f"{100 * value:.1f}%",
                ha="center",
                va="center",
                fontsize="small",
                color="white" if value < scores.mean() else "black",
            )
    ax.set_xlabel("mlp__batch_size")
    ax.set_ylabel("mlp__lr")
    ax.set_title("GridSearchCV(Pipeline(StandardScaler, MLPClassifier))", fontsize="medium")
    fig.tight_layout()
    mg.plot.save(fig, os.path.join(IMG, "estimator_grid.png"), dpi=80)


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["sweep", "batch", "estimator"]
    for name, make in (
        ("sweep", sweep_plots),
        ("batch", batch_schedule_plot),
        ("estimator", estimator_plot),
    ):
        if name in wanted:
            make()
