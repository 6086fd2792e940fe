"""A multi-layer perceptron written out by hand: forward pass, loss, backpropagation, gradient descent.

Minsky and Papert (1969) showed that one neuron cannot compute XOR; a hidden layer can, but the
perceptron rule has no way to tell a hidden unit what it should have done. Backpropagation
(Rumelhart, Hinton and Williams, 1986) does: with a *differentiable* activation, the chain rule
sends the output error back through every layer, and each weight moves against its gradient.
The step function of the perceptron has derivative zero wherever it is defined, so no error ever
reaches the layers below the output — that is why the smooth sigmoid replaced it. With
``activation="step"`` this network therefore trains only its output layer on fixed random hidden
units (random weights and random biases), much like the random "association units" of
Rosenblatt's Mark I.

Everything is plain numpy in float64; ``tests/neurons/test_mlp.py`` checks every gradient against
PyTorch autograd.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+e^-z), without overflow for large |z|


Function = Callable[[np.ndarray], np.ndarray]  # f(z)
Derivative = Callable[[np.ndarray, np.ndarray], np.ndarray]  # f'(z), given z and a = f(z)

ACTIVATIONS: dict[str, tuple[Function, Derivative]] = {
    "step": (lambda z: (z > 0).astype(np.float64), lambda z, a: np.zeros_like(z)),
    "sigmoid": (_sigmoid, lambda z, a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(np.float64)),
}


class MLP(Estimator):
    """A fully connected classifier: hidden layers of ``activation``, then an output layer.

    ``hidden_layer_sizes`` may be an int (one hidden layer) or empty (no hidden layer: logistic
    regression, a single sigmoid neuron). Two classes: one sigmoid output unit, p = P(``classes_[1]``).
    More: a softmax over one unit per class. The loss is the mean cross-entropy (log loss);
    training is gradient descent on it, full-batch by default (``batch_size=None``) or on
    mini-batches. Weights start from Glorot's uniform initialisation drawn with
    ``random_state``; biases at zero, except the hidden biases of ``activation="step"``, which
    start random from the same range: nothing trains them (see above), and zero biases would
    put every hidden unit's line through the origin.

    Learned attributes follow scikit-learn's ``MLPClassifier``: ``coefs_`` (one (n_in, n_out)
    matrix per layer), ``intercepts_``, ``classes_``, ``n_features_in_``, ``n_iter_``,
    ``loss_curve_`` (training loss before each epoch's updates, averaged over its batches) and
    ``accuracy_curve_`` (training accuracy after each epoch).
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (4,),
        activation: str = "tanh",
        learning_rate: float = 0.5,
        max_epochs: int = 2000,
        batch_size: int | None = None,
        shuffle: bool = True,
        random_state: int | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.random_state = random_state

    # -- checks and set-up -------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
            )
        for size in self._hidden_sizes():
            check_positive("each hidden layer size", size, integer=True)
        check_positive("learning_rate", self.learning_rate)
        check_positive("max_epochs", self.max_epochs, integer=True)
        if self.batch_size is not None:
            check_positive("batch_size", self.batch_size, integer=True)

    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        return (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)

    def _initialize(self, n_features: int, classes: np.ndarray) -> None:
        self.classes_ = classes
        self.n_features_in_ = n_features
        n_out = 1 if len(classes) == 2 else len(classes)
        sizes = [n_features, *self._hidden_sizes(), n_out]
        self._rng = np.random.default_rng(self.random_state)
        self.coefs_: list[np.ndarray] = []
        self.intercepts_: list[np.ndarray] = []
        for n_in, n_next in itertools.pairwise(sizes):
            limit = np.sqrt(6.0 / (n_in + n_next))
            self.coefs_.append(self._rng.uniform(-limit, limit, size=(n_in, n_next)))
            fixed = self.activation == "step" and len(self.coefs_) < len(sizes) - 1
            self.intercepts_.append(self._rng.uniform(-limit, limit, size=n_next) if fixed else np.zeros(n_next))
        self.n_iter_ = 0
        self.loss_curve_: list[float] = []
        self.accuracy_curve_: list[float] = []

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """One column per output unit: (n, 1) of 0/1 for two classes, else one-hot (n, k)."""
        index = np.searchsorted(self.classes_, y)
        if len(self.classes_) == 2:
            return index[:, None].astype(np.float64)
        return np.eye(len(self.classes_))[index]

    # -- the network ---------------------------------------------------------------------------
    def _forward(self, X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations ``zs`` and activations ``activations`` of every layer (``activations[0]``
        is X; the last entry is the output probabilities)."""
        f = ACTIVATIONS[self.activation][0]
        activations, zs = [X], []
        for layer, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            z = activations[-1] @ W + b  # (n, n_out of this layer)
            zs.append(z)
            if layer < len(self.coefs_) - 1:
                activations.append(f(z))
            elif z.shape[1] == 1:
                activations.append(_sigmoid(z))
            else:
                e = np.exp(z - z.max(axis=1, keepdims=True))
                activations.append(e / e.sum(axis=1, keepdims=True))
        return zs, activations

    def _loss(self, z_out: np.ndarray, T: np.ndarray) -> float:
        """Mean cross-entropy computed from the output logits (stable for any size of z)."""
        if z_out.shape[1] == 1:
            return float(np.mean(np.logaddexp(0.0, z_out) - T * z_out))
        shifted = z_out - z_out.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-np.mean(np.sum(T * log_p, axis=1)))

    def _backward(
        self, zs: list[np.ndarray], activations: list[np.ndarray], T: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of the mean loss with respect to every weight matrix and bias vector."""
        derivative = ACTIVATIONS[self.activation][1]
        n = len(T)
        delta = (activations[-1] - T) / n  # dL/dz at the output: sigmoid/softmax + cross-entropy
        grad_W: list[np.ndarray] = [np.empty(0)] * len(self.coefs_)
        grad_b: list[np.ndarray] = [np.empty(0)] * len(self.coefs_)
        for layer in range(len(self.coefs_) - 1, -1, -1):
            grad_W[layer] = activations[layer].T @ delta
            grad_b[layer] = delta.sum(axis=0)
            if layer > 0:  # chain rule: back through the weights, then through the activation
                delta = (delta @ self.coefs_[layer].T) * derivative(zs[layer - 1], activations[layer])
        return grad_W, grad_b

    def loss_and_gradients(self, X: Any, y: Any) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """The mean cross-entropy on ``(X, y)`` and its gradients with respect to ``coefs_`` and
        ``intercepts_`` (same shapes), by backpropagation. Does not change the weights."""
        self._check_fitted()
        X, y = check_X_y(X, y, self.n_features_in_, min_samples=1, owner="MLP")
        check_classes(y, self.classes_)
        T = self._targets(y)
        zs, activations = self._forward(X)
        return (self._loss(zs[-1], T), *self._backward(zs, activations, T))

    # -- training ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> MLP:
        """Train from a fresh random initialisation for ``max_epochs`` epochs. Returns ``self``."""
        self._check_params()
        X, y = check_X_y(X, y, owner="MLP")
        self._initialize(X.shape[1], check_classes(y))
        T = self._targets(y)
        for _ in range(self.max_epochs):
            self._one_epoch(X, T, y)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLP:
        """One epoch over ``(X, y)`` from the current weights. The first call initialises the
        network; ``classes`` then lists every label (if omitted, ``y`` must show all of them)."""
        self._check_params()
        first = not hasattr(self, "classes_")
        X, y = check_X_y(X, y, None if first else self.n_features_in_, owner="MLP")
        if first:
            self._initialize(X.shape[1], check_classes(y, classes))
        else:
            check_classes(y, self.classes_)
        self._one_epoch(X, self._targets(y), y)
        return self

    def _one_epoch(self, X: np.ndarray, T: np.ndarray, y: np.ndarray) -> None:
        order = epoch_order(len(X), self.shuffle and self.batch_size is not None, self._rng)
        size = len(X) if self.batch_size is None else self.batch_size
        losses, weights = [], []
        for start in range(0, len(X), size):
            batch = order[start : start + size]
            zs, activations = self._forward(X[batch])
            losses.append(self._loss(zs[-1], T[batch]))
            weights.append(len(batch))
            grad_W, grad_b = self._backward(zs, activations, T[batch])
            for W, b, gW, gb in zip(self.coefs_, self.intercepts_, grad_W, grad_b):
                W -= self.learning_rate * gW
                b -= self.learning_rate * gb
        self.n_iter_ += 1
        self.loss_curve_.append(float(np.average(losses, weights=weights)))
        self.accuracy_curve_.append(self.score(X, y))

    # -- prediction ----------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_, owner="MLP")
        p = self._forward(X)[1][-1]
        return np.hstack([1.0 - p, p]) if p.shape[1] == 1 else p

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample (``classes_[1]`` when p > 0.5 for two classes)."""
        proba = self.predict_proba(X)
        if proba.shape[1] == 2:
            return self.classes_[(proba[:, 1] > 0.5).astype(int)]
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_function(self, X: Any) -> np.ndarray:
        """The output layer's logits: shape (n_samples,) for two classes, else (n_samples, k)."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_, owner="MLP")
        z = self._forward(X)[0][-1]
        return z[:, 0] if z.shape[1] == 1 else z

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of samples whose predicted label equals ``y``."""
        self._check_fitted()
        X, y = check_X_y(X, y, self.n_features_in_, min_samples=1, owner="MLP")
        return float(np.mean(self.predict(X) == y))
