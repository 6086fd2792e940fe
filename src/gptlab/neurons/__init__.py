"""The first chapter: one artificial neuron, its limits, and the hidden layer that breaks them.

- :class:`Perceptron` — Rosenblatt's rule (1958), with :func:`mistake_bound` for Novikoff's
  convergence theorem: at most (R/γ)² mistakes on separable data.
- :class:`Adaline` — Widrow and Hoff's LMS rule (1960): gradient descent on squared error.
- :class:`MLP` — hidden layers trained by backpropagation (1986), written out in numpy.
- :mod:`gptlab.neurons.datasets` — digits on a 20×20 retina, your own two-class image folder,
  separable blobs, XOR; :mod:`gptlab.neurons.plots` — weight heat maps, boundaries, curves.

Estimators follow scikit-learn's conventions (``fit``, ``partial_fit``, ``predict``, ``score``,
``coef_``, ``intercept_``, ``random_state``) and speak its estimator protocol, so they work in
``cross_val_score``, pipelines and ``GridSearchCV``, yet need only numpy; data sets and plots
import scikit-learn, Pillow and matplotlib when used (the ``neurons`` extra).
"""

from gptlab.neurons.adaline import Adaline
from gptlab.neurons.base import NotFittedError
from gptlab.neurons.datasets import Dataset, load, load_digits, load_image_folder, make_blobs, make_xor
from gptlab.neurons.mlp import MLP
from gptlab.neurons.perceptron import MistakeBound, Perceptron, mistake_bound

__all__ = [
    "MLP",
    "Adaline",
    "Dataset",
    "MistakeBound",
    "NotFittedError",
    "Perceptron",
    "load",
    "load_digits",
    "load_image_folder",
    "make_blobs",
    "make_xor",
    "mistake_bound",
]
