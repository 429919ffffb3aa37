"""EvaluateEvery: held-out loss and metrics every few updates, finer than once per epoch."""

from . import _validation as check
from .callbacks import Callback
from .metrics import check_loss, evaluate


class EvaluateEvery(Callback):
    """Evaluate the model on (X, y) before training and after every ``every``-th update.

    Each record holds the update count ``step`` (0 = the initial weights), the position in
    epochs ``epoch`` (= epoch - 1 + iteration / iterations per epoch), the ``loss`` and each
    metric that :func:`minigd.evaluate` gives (``accuracy``; ``metrics["mse"]`` and
    ``metrics["r2"]`` for a regression loss). The last update of the run is recorded
    too, so the curve ends where training ended. ``steps_to_reach(target)`` answers "how many
    updates until held-out accuracy first reached target?" at a resolution of ``every`` updates.

    Parameters
    ----------
    X : array-like (n, features), the held-out inputs (only read)
    y : array-like, their targets: class ids (n,), or values for a regression loss
    every : int >= 1, default 25 (updates between evaluations)
    loss : Loss or None, default None (SoftmaxCrossEntropy); must be the loss fit trains with

    Because it acts after every update, this callback makes ``fit`` call Python once per
    iteration (see :class:`minigd.Callback`); an evaluation of n samples costs about one forward
    pass of n rows.

    Example
    -------
    >>> probe = mg.EvaluateEvery(X_test, y_test, every=25)
    >>> history = mg.fit(model, X, y, optimizer=opt, epochs=3, batch_size=64, callbacks=[probe])
    >>> probe.steps_to_reach(0.9)
    150
    """

    def __init__(self, X, y, every=25, loss=None):
        self.X = check.features("X", X)
        self.loss_fn = check_loss(loss)
        self.y = self.loss_fn.check_targets(y, self.X.shape[0], None)
        self.every = check.positive_int("every", every)
        self.reset()

    def reset(self):
        self.steps, self.epochs, self.loss = [], [], []
        self.metrics = {name: [] for name in self.loss_fn.metric_names}

    @property
    def accuracy(self):
        """The recorded accuracies (a classification loss only)."""
        return self.metrics["accuracy"]

    def _record(self, state, epoch_position):
        result = evaluate(state.model, self.X, self.y, loss=self.loss_fn)
        self.steps.append(state.step)
        self.epochs.append(epoch_position)
        self.loss.append(result["loss"])
        for name, values in self.metrics.items():
            values.append(result[name])

    def on_train_begin(self, state):
        if type(state.loss) is not type(self.loss_fn):
            raise ValueError(
                f"EvaluateEvery evaluates {type(self.loss_fn).__name__} but fit "
                f"trains with {type(state.loss).__name__}: pass "
                f"loss=<that loss> to EvaluateEvery"
            )
        self.reset()
        self._record(state, 0.0)

    def on_iteration_end(self, state):
        if state.step % self.every == 0:
            self._record(state, self._position(state))

    def on_train_end(self, state):
        if self.steps and self.steps[-1] != state.step:
            self._record(state, self._position(state))

    @staticmethod
    def _position(state):
        return state.epoch - 1 + state.iteration / len(state.iterator)

    def steps_to_reach(self, accuracy):
        """First recorded step whose accuracy is >= ``accuracy``, or None if never reached."""
        target = check.real("accuracy", accuracy, low=0.0, high=1.0)
        if "accuracy" not in self.metrics:
            raise ValueError(
                f"steps_to_reach needs accuracy; {type(self.loss_fn).__name__} "
                f"records {tuple(self.metrics)}"
            )
        for step, value in zip(self.steps, self.accuracy):
            if value >= target:
                return step
        return None

    def __repr__(self):
        return f"EvaluateEvery(n={self.X.shape[0]}, every={self.every}, records={len(self.steps)})"
