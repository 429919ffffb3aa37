"""The README's mechanics example; run it to regenerate docs/img/history.png."""

import matplotlib

matplotlib.use("Agg")

import minigd as mg

X, y, X_test, y_test = mg.datasets.load_mnist_sample()
it = mg.BatchIterator(X, y, batch_size=64)
print(it.describe())
print(len(it), "iterations per epoch; batch sizes of one epoch:", it.batch_sizes()[-3:])

model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
optimizer = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
history = mg.fit(
    model,
    X,
    y,
    optimizer=optimizer,
    epochs=5,
    batch_size=64,
    seed=0,
    schedule=mg.schedules.CosineAnnealing(0.05, t_max=5),
    validation_data=(X_test, y_test),
    verbose=2,
)
print(history)
print({k: v[:3] for k, v in history.iterations.items()})
print(f"test accuracy {mg.accuracy(model, X_test, y_test):.4f}")
mg.plot.save(mg.plot.history(history), "docs/img/history.png")
