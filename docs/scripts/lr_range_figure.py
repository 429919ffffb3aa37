"""Make docs/img/lr_range.png and check the suggested learning rates by training with them.

    OPENBLAS_NUM_THREADS=1 python docs/scripts/lr_range_figure.py

Prints the range test's suggestions (model seed 0, data seed 0) and the held-out accuracy
after 3 epochs of SGD, batch 64, at each suggestion and at the reference lr 0.1.
"""

import os

import matplotlib

matplotlib.use("Agg")
import minigd as mg  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def model(seed=0):
    return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)


def main():
    X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    result = mg.lr_range_test(model(), X, y, seed=0)
    print(result)
    ax = mg.plot.lr_range_test(result)
    ax.figure.set_size_inches(6.4, 3.6)
    ax.figure.tight_layout()
    mg.plot.save(ax.figure, os.path.join(HERE, "..", "img", "lr_range.png"), dpi=90)
    candidates = dict(result.suggestions, reference=0.1)
    print(f"{'rule':<11} {'lr':>7} {'test acc after 3 epochs':>24}")
    for rule, lr in candidates.items():
        m = model()
        mg.fit(
            m,
            X,
            y,
            optimizer=mg.SGD(m.parameters(), lr=lr),
            epochs=3,
            batch_size=64,
            seed=0,
            verbose=0,
        )
        print(f"{rule:<11} {lr:>7.3g} {100 * mg.accuracy(m, X_test, y_test):>23.2f}%")


if __name__ == "__main__":
    main()
