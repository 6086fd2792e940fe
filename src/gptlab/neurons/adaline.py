"""ADALINE (Widrow and Hoff, 1960): the same neuron, trained on its error instead of its mistakes.

The perceptron learns only when the thresholded output is wrong. ADALINE (ADAptive LINear
Element) looks at the weighted sum itself and nudges it toward the target ±1 on every sample:
``w += η·(s − ŷ)·x`` — stochastic gradient descent on the squared error ½(s − ŷ)², the
least-mean-squares (LMS) rule. The threshold is applied only to predict. It converges even when
no line separates the classes (to the least-squares fit), which is the idea backpropagation
generalises to many layers.
"""

from __future__ import annotations

import numpy as np

from gptlab.neurons.linear import LinearUnit


class Adaline(LinearUnit):
    """Widrow–Hoff LMS, one update per sample, for ``max_epochs`` epochs.

    The update equals scikit-learn's ``SGDRegressor(loss="squared_error", penalty=None,
    learning_rate="constant", eta0=learning_rate, shuffle=False, tol=None)`` fitted on the
    targets ±1, so ``coef_`` and ``intercept_`` match it. Too large a ``learning_rate``
    diverges (a ConfigError says so); about ``1/max‖x‖²`` or less is safe.

    Learned attributes besides :class:`LinearUnit`'s: ``loss_curve_``, the mean squared error
    ``mean((s − ŷ)²)`` over the epoch's samples after each epoch.
    """

    def __init__(
        self,
        learning_rate: float = 0.01,
        max_epochs: int = 50,
        fit_intercept: bool = True,
        shuffle: bool = False,
        random_state: int | None = None,
    ) -> None:
        super().__init__(learning_rate, max_epochs, fit_intercept, shuffle, random_state)

    def _reset_curves(self) -> None:
        super()._reset_curves()
        self.loss_curve_: list[float] = []

    def _record(self, value: float) -> None:
        self.loss_curve_.append(float(value))

    def _train_epoch(self, X: np.ndarray, s: np.ndarray, order: np.ndarray) -> float:
        w, eta = self.coef_, self.learning_rate
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by the caller
            for i in order:
                update = eta * (s[i] - (X[i] @ w + self.intercept_))  # −η · d(½(s−ŷ)²)/dŷ
                w += update * X[i]  # in place: w is self.coef_
                if self.fit_intercept:
                    self.intercept_ += update
            return float(np.mean((s - (X @ w + self.intercept_)) ** 2))
