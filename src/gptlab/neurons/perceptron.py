"""Rosenblatt's perceptron (1958) and Novikoff's convergence theorem (1962), made checkable.

The rule: show the unit one sample at a time; when it is wrong, add the sample to the weights
(``w += η·s·x``, ``b += η·s`` with target ``s = ±1``), otherwise leave them alone. On linearly
separable data it stops making mistakes after at most ``(R/γ)²`` of them, whatever the order of
presentation; on data that no line separates (XOR) it never stops.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from gptlab.errors import DataError
from gptlab.neurons.base import check_classes, check_X_y
from gptlab.neurons.linear import LinearUnit


class Perceptron(LinearUnit):
    """The perceptron learning rule; stops after the first epoch without a mistake.

    A sample is a mistake when ``s·(w·x + b) <= 0``: a point exactly on the boundary counts, so
    the very first sample (with zero weights) is always one. This is scikit-learn's rule too:
    with ``shuffle=False`` and the same epochs, ``coef_``, ``intercept_`` and predictions equal
    those of ``sklearn.linear_model.Perceptron(eta0=learning_rate, penalty=None, shuffle=False,
    tol=None)``. Because weights start at zero, ``learning_rate`` only scales them: the mistakes
    and predictions do not depend on it.

    ``pocket=True`` adds Gallant's pocket algorithm (1990): after every update the weights are
    scored on the epoch's samples, and the best seen so far are kept "in the pocket". On data that
    no line separates the perceptron never settles (on XOR in data order its four updates cancel
    and the weights return to zero every epoch), but the pocket holds the best line it passed
    through. Together with ``shuffle=True`` it finds, for XOR, a line that gets 3 of the 4 points
    right. The pocket does not change the training itself: ``coef_`` stays the last weights.

    Learned attributes besides :class:`LinearUnit`'s: ``mistakes_``, the mistakes in each epoch;
    ``epoch_weights_``, the ``(coef, intercept)`` after each epoch; with ``pocket``,
    ``pocket_coef_``, ``pocket_intercept_`` and ``pocket_accuracy_`` (its training accuracy).
    """

    def __init__(
        self,
        learning_rate: float = 1.0,
        max_epochs: int = 100,
        fit_intercept: bool = True,
        shuffle: bool = False,
        random_state: int | None = None,
        pocket: bool = False,
    ) -> None:
        super().__init__(learning_rate, max_epochs, fit_intercept, shuffle, random_state)
        self.pocket = pocket

    def _reset_curves(self) -> None:
        super()._reset_curves()
        self.mistakes_: list[int] = []
        self.epoch_weights_: list[tuple[np.ndarray, float]] = []
        if self.pocket:
            self.pocket_coef_ = self.coef_.copy()
            self.pocket_intercept_ = float(self.intercept_)
            self.pocket_accuracy_ = 0.0
            self._pocket_key = (-1.0, -1.0)  # below any score: the first weights scored go in

    def _record(self, value: float) -> None:
        self.mistakes_.append(int(value))
        self.epoch_weights_.append((self.coef_.copy(), float(self.intercept_)))

    def _keep_if_better(self, X: np.ndarray, s: np.ndarray) -> None:
        """Put the current weights in the pocket if they score better on ``(X, s)`` than its own:
        more samples right as ``predict`` has them (a point on the line counts as ``classes_[0]``),
        and on a tie fewer samples right only by lying on the line."""
        z = X @ self.coef_ + self.intercept_
        accuracy = float(np.mean((z > 0) == (s > 0)))
        key = (accuracy, float(np.mean(s * z > 0)))
        if key > self._pocket_key:
            self.pocket_coef_ = self.coef_.copy()
            self.pocket_intercept_ = float(self.intercept_)
            self.pocket_accuracy_ = accuracy
            self._pocket_key = key

    def _converged(self) -> bool:
        return self.mistakes_[-1] == 0

    def _train_epoch(self, X: np.ndarray, s: np.ndarray, order: np.ndarray) -> float:
        w, eta = self.coef_, self.learning_rate
        if self.pocket:
            self._keep_if_better(X, s)
        mistakes = 0
        for i in order:
            if s[i] * (X[i] @ w + self.intercept_) <= 0:
                w += eta * s[i] * X[i]  # in place: w is self.coef_
                if self.fit_intercept:
                    self.intercept_ += eta * s[i]
                mistakes += 1
                if self.pocket:
                    self._keep_if_better(X, s)
        return mistakes

    @property
    def total_mistakes_(self) -> int:
        """All mistakes made during training: the number the convergence theorem bounds."""
        self._check_fitted()
        return sum(self.mistakes_)


@dataclass(frozen=True)
class MistakeBound:
    """Novikoff's bound for one data set: the perceptron makes at most ``(radius/margin)²`` mistakes.

    ``radius`` R is the largest norm of an input (with the constant 1 appended when the unit has a
    bias, since the bias is a weight on that input); ``margin`` γ is the smallest distance of any
    input to a separating hyperplane through the origin of that space, for the unit-norm
    separator ``separator``. Any separator gives a valid bound; the widest margin the best.
    """

    radius: float
    margin: float
    separator: np.ndarray

    @property
    def bound(self) -> float:
        """``(R/γ)²``: no run of the perceptron on this data makes more mistakes."""
        return (self.radius / self.margin) ** 2


def _margin(Z: np.ndarray, s: np.ndarray, u: np.ndarray) -> float:
    """The smallest signed distance s·(u·z)/‖u‖ of any sample to the hyperplane u·z = 0."""
    norm = float(np.linalg.norm(u))
    return float(np.min(s * (Z @ u)) / norm) if norm > 0 else 0.0


def _linear_program_separator(Z: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    """A separating u (max-min s·(u·z) over the box |u_j| <= 1), or None when none exists.

    A linear program decides separability exactly and quickly, even when it fails.
    """
    from scipy.optimize import linprog

    n, d = Z.shape
    objective = np.zeros(d + 1)
    objective[-1] = -1.0  # maximise t subject to s_i (u·z_i) >= t
    constraints = np.hstack([-s[:, None] * Z, np.ones((n, 1))])
    result = linprog(
        objective,
        A_ub=constraints,
        b_ub=np.zeros(n),
        bounds=[(-1.0, 1.0)] * d + [(None, None)],
        method="highs",
    )
    if result.status != 0 or not result.x[-1] > 1e-9:
        return None
    return np.asarray(result.x[:-1])


def mistake_bound(X: Any, y: Any, *, fit_intercept: bool = True) -> MistakeBound:
    """The convergence theorem's ``R``, ``γ`` and ``(R/γ)²`` for two-class data ``(X, y)``.

    A linear program first decides whether any separating hyperplane exists; if one does, a
    hard-margin linear SVM (scikit-learn's ``LinearSVC``) looks for the widest margin, and the
    better of the two separators is kept, its margin measured exactly. Raises DataError when the
    data are not linearly separable: then the theorem promises nothing. Needs scikit-learn
    (and SciPy, which it brings).
    """
    from sklearn.svm import LinearSVC

    X, y = check_X_y(X, y)
    classes = check_classes(y, binary=True)
    s = np.where(y == classes[1], 1.0, -1.0)
    Z = np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X
    candidate = _linear_program_separator(Z, s)
    if candidate is None or not _margin(Z, s, candidate) > 0:
        raise DataError(
            "the two classes are not linearly separable: no hyperplane puts every "
            "sample on its side, so the perceptron never converges"
        )
    svm = LinearSVC(C=1e6, loss="hinge", fit_intercept=False, dual=True, tol=1e-10, max_iter=20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning only weakens the bound, never breaks it
        svm.fit(Z, s)
    u = max([candidate, svm.coef_.ravel()], key=lambda v: _margin(Z, s, v))
    radius = float(np.max(np.linalg.norm(Z, axis=1)))
    return MistakeBound(radius=radius, margin=_margin(Z, s, u), separator=u / np.linalg.norm(u))
