"""What every estimator of the first chapter shares: scikit-learn's conventions without importing it.

The estimators speak scikit-learn's estimator protocol themselves instead of inheriting from
``sklearn.base.BaseEstimator``, so that numpy is all they need: ``get_params`` / ``set_params``
(for ``clone`` and grid search), ``__sklearn_tags__`` (what ``cross_val_score``, pipelines and
``GridSearchCV`` ask to know that this is a classifier; it imports scikit-learn only when
scikit-learn itself asks), ``__sklearn_is_fitted__``, ``classes_`` and ``n_features_in_``.
``tests/neurons/test_sklearn.py`` runs scikit-learn's own ``check_estimator`` suite on them.

The ``check_*`` helpers turn bad input into a :class:`~gptlab.errors.DataError` (a ValueError,
as scikit-learn expects) with one clear sentence instead of a numpy traceback deep inside training.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np

from gptlab.errors import ConfigError, DataError, GptlabError


class NotFittedError(GptlabError, AttributeError):
    """``predict`` (or any use of learned weights) before ``fit`` or ``partial_fit``."""


class NonNumericError(DataError, TypeError):
    """Input that cannot be read as numbers (a string, a dict in ``X``): a TypeError too."""


class Estimator:
    """Hyperparameters are the ``__init__`` arguments, stored unchanged under the same names and
    checked only by ``fit``; learned state ends with an underscore (``coef_``) and exists only
    after fitting."""

    #: whether the estimator learns more than two classes (scikit-learn's ``multi_class`` tag)
    multi_class: ClassVar[bool] = True

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, as scikit-learn's ``get_params`` (``deep`` is accepted and ignored)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Change hyperparameters; unknown names raise ConfigError. Returns ``self``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ConfigError(f"{type(self).__name__} has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's description of this estimator: a classifier of 2-D numeric input that
        needs ``y`` (``multi_class`` False for the two-class neurons). Imports scikit-learn (≥ 1.6),
        which is only ever called by scikit-learn's own tools."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=self.multi_class),
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` or ``partial_fit`` has run (``sklearn.utils.validation.check_is_fitted``)."""
        return hasattr(self, "classes_")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")


def check_X(X: Any, n_features: int | None = None, *, owner: str = "the model") -> np.ndarray:
    """``X`` as a finite float64 array of shape (n_samples, n_features), or DataError
    (:class:`NonNumericError` for values that are not numbers).

    With ``n_features``, the number of columns must match it (the width ``owner`` was fitted on).
    """
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise DataError("sparse input is not supported: pass a dense array (X.toarray())")
    try:
        X = np.asarray(X)
        if np.iscomplexobj(X):
            raise DataError("Complex data not supported: X holds complex numbers")
        X = X.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise NonNumericError(f"X must be a numeric array: {exc}") from None
    if X.ndim != 2:
        raise DataError(
            f"X must be 2-D (n_samples, n_features), got shape {X.shape}: Reshape your data, "
            "e.g. with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample"
        )
    if X.shape[0] < 1:
        raise DataError(f"X is empty: 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] < 1:
        raise DataError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if not np.all(np.isfinite(X)):
        raise DataError("X contains NaN or infinity (inf)")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"X has {X.shape[1]} features, but {owner} is expecting {n_features} features as input "
            "(the width it was fitted on)"
        )
    return X


def check_X_y(
    X: Any, y: Any, n_features: int | None = None, *, min_samples: int = 2, owner: str = "the model"
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``X`` (see :func:`check_X`) and a 1-D ``y`` of the same length, with at least
    ``min_samples`` samples (2 to train: one sample cannot show a boundary)."""
    if y is None:
        raise DataError(f"{owner} requires y to be passed, but the target y is None")
    X = check_X(X, n_features, owner=owner)
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(y) != len(X):
        raise DataError(f"X has {len(X)} samples but y has {len(y)} labels")
    if len(y) < min_samples:
        raise DataError(
            f"need at least {min_samples} samples to learn a boundary, got {len(y)} sample{'s' * (len(y) != 1)}"
        )
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataError("y contains NaN or infinity")
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise DataError(
            "Unknown label type: continuous. y holds fractional numbers, but a classifier needs "
            "class labels (integers or strings)"
        )
    return X, y


def check_classes(y: np.ndarray, classes: Any = None, *, binary: bool = False) -> np.ndarray:
    """The sorted class labels: ``classes`` if given (every label of ``y`` must be among them),
    else the labels found in ``y``. A one-class problem is a DataError; ``binary`` demands exactly 2."""
    found = np.unique(y)
    if classes is None:
        classes = found
    else:
        classes = np.unique(np.asarray(classes))
        unknown = np.setdiff1d(found, classes)
        if len(unknown):
            raise DataError(f"y has labels {unknown.tolist()} not among classes {classes.tolist()}")
    if len(classes) < 2:
        raise DataError(f"need two classes to learn a boundary, got only {classes.tolist()}")
    if binary and len(classes) != 2:
        raise DataError(
            f"Only binary classification is supported: a single neuron separates two classes, "
            f"got {len(classes)}: {classes.tolist()}"
        )
    return classes


def check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a positive (integer) number."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not np.isfinite(value):
        raise ConfigError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def epoch_order(n_samples: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
    """The order in which one epoch visits the samples: data order, or a fresh permutation."""
    return rng.permutation(n_samples) if shuffle else np.arange(n_samples)
