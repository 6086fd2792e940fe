"""One artificial neuron: a weighted sum of the inputs plus a bias, thresholded at zero.

The perceptron and ADALINE are the same unit and differ only in how one training sample changes
the weights; :class:`LinearUnit` holds everything else (labels, epochs, prediction, scoring) and a
subclass supplies ``_train_epoch``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gptlab.errors import ConfigError
from gptlab.neurons.base import (
    Estimator,
    check_classes,
    check_positive,
    check_X,
    check_X_y,
    epoch_order,
)


class LinearUnit(Estimator):
    """Two-class linear threshold unit: ``predict(x) = classes_[1] if w·x + b > 0 else classes_[0]``.

    Labels are mapped to targets ``s = +1`` (``classes_[1]``) and ``s = -1`` (``classes_[0]``), as
    scikit-learn does. Weights start at zero. ``learning_rate`` η scales every update;
    ``max_epochs`` caps the passes over the data; ``fit_intercept=False`` keeps the bias at 0;
    ``shuffle`` visits the samples in a fresh order each epoch, drawn from ``random_state``
    (default: data order, as for parity with scikit-learn's ``shuffle=False``). Learned attributes: ``coef_`` (n_features,),
    ``intercept_`` (a float), ``classes_``, ``n_iter_`` (epochs run), ``accuracy_curve_``
    (training accuracy after each epoch), ``n_features_in_`` and the subclass's per-epoch curve.
    """

    multi_class = False  # one unit, one line: two classes

    def __init__(
        self,
        learning_rate: float = 1.0,
        max_epochs: int = 100,
        fit_intercept: bool = True,
        shuffle: bool = False,
        random_state: int | None = None,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.random_state = random_state

    # -- what a subclass defines -------------------------------------------------------------
    def _train_epoch(self, X: np.ndarray, s: np.ndarray, order: np.ndarray) -> float:
        """Visit the samples in ``order`` once, updating ``coef_``/``intercept_``; return the
        epoch's figure (mistakes, loss) to append to the subclass's curve."""
        raise NotImplementedError

    def _record(self, value: float) -> None:
        """Append an epoch's figure to the subclass's curve."""
        raise NotImplementedError

    def _converged(self) -> bool:
        """Whether training can stop before ``max_epochs``."""
        return False

    def _reset_curves(self) -> None:
        self.accuracy_curve_: list[float] = []
        self.n_iter_ = 0

    # -- training ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_positive("max_epochs", self.max_epochs, integer=True)

    def fit(self, X: Any, y: Any) -> LinearUnit:
        """Train from zero weights for up to ``max_epochs`` epochs (fewer if the subclass says it
        converged). ``y`` must hold exactly two distinct labels. Returns ``self``."""
        self._check_params()
        X, y = check_X_y(X, y, owner=type(self).__name__)
        self._start(X.shape[1], check_classes(y, binary=True))
        s = self._targets(y)
        for _ in range(self.max_epochs):
            self._one_epoch(X, s, y)
            if self._converged():
                break
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> LinearUnit:
        """One epoch over ``(X, y)``, continuing from the current weights.

        On the first call ``classes`` names both labels (as in scikit-learn); if omitted, ``y``
        must contain both. Returns ``self``.
        """
        self._check_params()
        first = not hasattr(self, "classes_")
        X, y = check_X_y(X, y, None if first else self.n_features_in_, owner=type(self).__name__)
        if first:
            self._start(X.shape[1], check_classes(y, classes, binary=True))
        else:
            check_classes(y, self.classes_, binary=True)
        self._one_epoch(X, self._targets(y), y)
        return self

    def _start(self, n_features: int, classes: np.ndarray) -> None:
        """Zero weights for ``n_features`` inputs, empty curves, a fresh random generator."""
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.coef_ = np.zeros(n_features)
        self.intercept_ = 0.0
        self._rng = np.random.default_rng(self.random_state)
        self._reset_curves()

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return np.where(y == self.classes_[1], 1.0, -1.0)

    def _one_epoch(self, X: np.ndarray, s: np.ndarray, y: np.ndarray) -> None:
        value = self._train_epoch(X, s, epoch_order(len(X), self.shuffle, self._rng))
        if not (np.all(np.isfinite(self.coef_)) and np.isfinite(self.intercept_)):
            bound = 2.0 / float(np.max(np.sum(X * X, axis=1)) + self.fit_intercept)
            raise ConfigError(
                f"{type(self).__name__} diverged in epoch {self.n_iter_ + 1}: learning_rate "
                f"{self.learning_rate} is too large for this data (keep it below about {bound:.3g})"
            )
        self.n_iter_ += 1
        self._record(value)
        self.accuracy_curve_.append(self.score(X, y))

    # -- prediction -------------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        """The weighted sums ``X @ coef_ + intercept_``, shape (n_samples,)."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_, owner=type(self).__name__)
        return X @ self.coef_ + self.intercept_

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[1]`` where the weighted sum is > 0, else ``classes_[0]`` (the boundary
        itself goes to ``classes_[0]``, as in scikit-learn)."""
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of samples whose predicted label equals ``y``."""
        self._check_fitted()
        X, y = check_X_y(X, y, self.n_features_in_, min_samples=1, owner=type(self).__name__)
        return float(np.mean(self.predict(X) == y))
