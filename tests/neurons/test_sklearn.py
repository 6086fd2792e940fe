"""The first chapter's estimators inside scikit-learn's own tools: its estimator checks,
``cross_val_score``, pipelines and grid search, compared with scikit-learn's estimators."""

import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from gptlab.neurons import MLP, Adaline, Perceptron
from gptlab.neurons.datasets import make_xor

# Deviations from scikit-learn's contract, on purpose; parametrize_with_checks marks them xfail.
KNOWN_DEVIATIONS = {
    "check_estimators_unfitted": "predicting before fit raises gptlab.neurons.NotFittedError, an "
    "AttributeError like scikit-learn's, but not scikit-learn's class: the estimators need only numpy",
    "check_supervised_y_2d": "a column-vector y of shape (n, 1) is refused with a DataError instead "
    "of being flattened with a DataConversionWarning",
}


def expected_failures(estimator):
    return KNOWN_DEVIATIONS


# Adaline's default learning_rate (0.01) is for inputs of norm ~1; the checks' data reach norms
# of ~100, where LMS is stable only below 2/max‖x‖² ≈ 1e-4 (it raises a ConfigError above).
# The estimators speak the protocol without inheriting BaseEstimator (see gptlab.neurons.base),
# which scikit-learn notes with a UserWarning while it collects the checks.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*does not inherit from `sklearn.base.BaseEstimator`")
    estimator_checks = parametrize_with_checks(
        [Perceptron(), Adaline(learning_rate=1e-5), MLP(max_epochs=40)],
        expected_failed_checks=expected_failures,
    )


@estimator_checks
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)


@pytest.mark.parametrize("estimator", [Perceptron(), Adaline(), MLP()])
def test_tags_say_classifier_and_binary_only(estimator):
    assert is_classifier(estimator)
    tags = estimator.__sklearn_tags__()
    assert tags.classifier_tags.multi_class is isinstance(estimator, MLP)
    assert tags.target_tags.required


def test_importing_the_estimators_does_not_import_sklearn():
    import subprocess

    code = "import sys, gptlab.neurons; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cross_val_score_in_a_pipeline_equals_sklearns_perceptron(digits38):
    X, y = digits38.X, digits38.y
    cv = StratifiedKFold(5)
    ours = cross_val_score(make_pipeline(StandardScaler(), Perceptron(max_epochs=20)), X, y, cv=cv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=None runs every epoch
        ref = cross_val_score(
            make_pipeline(StandardScaler(), SkPerceptron(penalty=None, shuffle=False, tol=None, max_iter=20)),
            X,
            y,
            cv=cv,
        )
    np.testing.assert_array_equal(ours, ref)
    assert ours.mean() > 0.9


def test_cross_val_score_equals_a_hand_written_loop(digits01):
    X, y = digits01.X, digits01.y
    model = make_pipeline(StandardScaler(), Adaline(learning_rate=1e-4, max_epochs=5))
    scores = cross_val_score(model, X, y, cv=StratifiedKFold(4))
    by_hand = []
    for train, test in StratifiedKFold(4).split(X, y):
        fitted = clone(model).fit(X[train], y[train])
        by_hand.append(fitted.score(X[test], y[test]))
    np.testing.assert_array_equal(scores, by_hand)
    assert check_is_fitted(fitted) is None
    assert fitted.classes_.tolist() == [0, 1]


def test_grid_search_finds_that_xor_needs_a_hidden_layer():
    xor = make_xor()
    X = np.repeat(xor.X, 4, axis=0)  # four copies of each corner, so every fold sees all four
    y = np.repeat(xor.y, 4)
    grid = GridSearchCV(
        MLP(max_epochs=600, learning_rate=1.0, random_state=0),
        {"hidden_layer_sizes": [(), (4,)]},
        cv=StratifiedKFold(4, shuffle=True, random_state=0),
    ).fit(X, y)
    means = dict(zip([str(p["hidden_layer_sizes"]) for p in grid.cv_results_["params"]],
                     grid.cv_results_["mean_test_score"]))
    assert means["(4,)"] == 1.0
    assert means["()"] <= 0.75  # logistic regression: one line, at most 3 of the 4 corners
    assert grid.best_params_ == {"hidden_layer_sizes": (4,)}
    assert grid.best_estimator_.n_features_in_ == 2
    assert grid.score(xor.X, xor.y) == 1.0
