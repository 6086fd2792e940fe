import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.errors import ConfigError, DataError
from gptlab.neurons import NotFittedError, Perceptron, mistake_bound


def sklearn_perceptron(X, y, epochs):
    from sklearn.linear_model import Perceptron as SkPerceptron

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: we ask for exactly `epochs`
        return SkPerceptron(
            eta0=1.0, penalty=None, shuffle=False, fit_intercept=True, tol=None, max_iter=epochs
        ).fit(X, y)


@pytest.mark.parametrize("data_name", ["digits01", "digits38", "blobs", "xor"])
@pytest.mark.parametrize("epochs", [1, 3, 8])
def test_parity_with_sklearn(request, data_name, epochs):
    data = request.getfixturevalue(data_name)
    ours = Perceptron(max_epochs=epochs).fit(data.X, data.y)
    ref = sklearn_perceptron(data.X, data.y, epochs)
    np.testing.assert_allclose(ours.coef_, ref.coef_.ravel(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_[0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(data.X), ref.predict(data.X))
    np.testing.assert_array_equal(ours.decision_function(data.X) > 0, ref.decision_function(data.X) > 0)


def test_parity_with_string_labels(blobs):
    labels = np.array(["cat", "dog"])[blobs.y]
    ours = Perceptron(max_epochs=5).fit(blobs.X, labels)
    ref = sklearn_perceptron(blobs.X, labels, 5)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_array_equal(ours.predict(blobs.X), ref.predict(blobs.X))
    np.testing.assert_allclose(ours.coef_, ref.coef_.ravel(), atol=1e-12)


def test_boundary_counts_as_mistake():
    # zero weights: w·x + b = 0 for the first sample, which must trigger an update
    p = Perceptron(max_epochs=1).fit([[1.0, 0.0], [-2.0, 0.0]], [1, 0])
    assert p.mistakes_ == [1]
    np.testing.assert_array_equal(p.coef_, [1.0, 0.0])
    assert p.intercept_ == 1.0
    # after that update, x = (-1, 0) lies exactly on the boundary w·x + b = 0: also a mistake
    p = Perceptron(max_epochs=1).fit([[1.0, 0.0], [-1.0, 0.0]], [1, 0])
    assert p.mistakes_ == [2]
    np.testing.assert_array_equal(p.coef_, [2.0, 0.0])
    assert p.intercept_ == 0.0


def test_stops_after_an_epoch_without_mistakes(digits01):
    p = Perceptron(max_epochs=100).fit(digits01.X, digits01.y)
    assert p.mistakes_[-1] == 0 and all(m > 0 for m in p.mistakes_[:-1])
    assert p.n_iter_ == len(p.mistakes_) == len(p.accuracy_curve_) < 100
    assert p.score(digits01.X, digits01.y) == 1.0


@pytest.mark.parametrize("data_name", ["digits01", "digits38", "blobs"])
def test_convergence_theorem(request, data_name):
    data = request.getfixturevalue(data_name)
    bound = mistake_bound(data.X, data.y)
    assert bound.radius > 0 and bound.margin > 0
    assert bound.bound == pytest.approx((bound.radius / bound.margin) ** 2)
    # the bound holds for any presentation order
    for seed in range(3):
        p = Perceptron(max_epochs=1000, shuffle=True, random_state=seed).fit(data.X, data.y)
        assert p.mistakes_[-1] == 0
        assert p.total_mistakes_ <= bound.bound


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), dim=st.integers(1, 5))
def test_convergence_theorem_on_random_separable_data(seed, n, dim):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=dim), rng.normal()
    X = rng.normal(size=(n, dim)) * 3
    score = X @ w + b
    keep = np.abs(score) > 0.3 * np.linalg.norm(w)  # a margin, so the SVM finds a separator
    X, y = X[keep], (score[keep] > 0).astype(int)
    if len(np.unique(y)) < 2:
        return
    bound = mistake_bound(X, y)
    p = Perceptron(max_epochs=100_000).fit(X, y)
    assert p.mistakes_[-1] == 0
    assert p.total_mistakes_ <= bound.bound


def test_mistake_bound_rejects_xor(xor):
    with pytest.raises(DataError, match="not linearly separable"):
        mistake_bound(xor.X, xor.y)


def test_xor_is_never_learned(xor):
    # provable: no line separates XOR, so every epoch has at least one mistake
    for seed in range(5):
        p = Perceptron(max_epochs=200, shuffle=True, random_state=seed).fit(xor.X, xor.y)
        assert p.n_iter_ == 200
        assert min(p.mistakes_) >= 1
        assert max(p.accuracy_curve_) < 1.0
        assert p.score(xor.X, xor.y) < 1.0


def test_learning_rate_only_scales_weights(blobs):
    a = Perceptron(learning_rate=1.0).fit(blobs.X, blobs.y)
    b = Perceptron(learning_rate=0.25).fit(blobs.X, blobs.y)
    assert a.mistakes_ == b.mistakes_
    np.testing.assert_allclose(b.coef_, 0.25 * a.coef_)


def test_partial_fit_equals_fit_epoch_by_epoch(digits38):
    full = Perceptron(max_epochs=4).fit(digits38.X, digits38.y)
    step = Perceptron()
    for _ in range(full.n_iter_):
        step.partial_fit(digits38.X, digits38.y, classes=[0, 1])
    np.testing.assert_array_equal(step.coef_, full.coef_)
    assert step.mistakes_ == full.mistakes_


def test_partial_fit_with_one_class_per_batch_needs_classes():
    X = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(DataError, match="two classes"):
        Perceptron().partial_fit(X, [1, 1])
    p = Perceptron().partial_fit(X, [1, 1], classes=[0, 1])
    with pytest.raises(DataError, match="not among classes"):
        p.partial_fit(X, [2, 2])


def test_sklearn_clone_and_params():
    from sklearn.base import clone

    p = Perceptron(max_epochs=7, shuffle=True, random_state=3)
    q = clone(p)
    assert q.get_params() == p.get_params()
    assert "max_epochs=7" in repr(q)
    with pytest.raises(ConfigError):
        p.set_params(eta=1)


@pytest.mark.parametrize(
    "X, y, message",
    [
        ([[1.0, 2.0]], [1], "at least 2 samples"),
        ([[1.0], [2.0]], [1, 1], "two classes"),
        ([[1.0], [2.0], [3.0]], [0, 1, 2], "two classes"),
        ([[1.0], [2.0]], [0, 1, 1], "2 samples but y has 3"),
        ([1.0, 2.0], [0, 1], "2-D"),
        ([[1.0], [np.nan]], [0, 1], "NaN"),
        ([["a"], ["b"]], [0, 1], "numeric"),
    ],
)
def test_bad_training_data(X, y, message):
    with pytest.raises(DataError, match=message):
        Perceptron().fit(X, y)


def test_bad_hyperparameters_and_use_before_fit(blobs):
    with pytest.raises(ConfigError, match="max_epochs"):
        Perceptron(max_epochs=0).fit(blobs.X, blobs.y)
    with pytest.raises(ConfigError, match="learning_rate"):
        Perceptron(learning_rate=-1).fit(blobs.X, blobs.y)
    with pytest.raises(NotFittedError):
        Perceptron().predict(blobs.X)
    p = Perceptron().fit(blobs.X, blobs.y)
    with pytest.raises(DataError, match="3 features, but Perceptron is expecting 2 features"):
        p.predict(np.ones((4, 3)))


def test_xor_in_data_order_returns_to_zero_every_epoch(xor):
    p = Perceptron(max_epochs=5, pocket=True).fit(xor.X, xor.y)
    assert p.mistakes_ == [4] * 5
    for coef, intercept in p.epoch_weights_:
        np.testing.assert_array_equal(coef, 0.0)
        assert intercept == 0.0
    assert p.pocket_accuracy_ == 0.5  # no weights it passes through do better


@pytest.mark.parametrize("seed", range(6))
def test_pocket_keeps_the_best_line_for_xor(xor, seed):
    p = Perceptron(max_epochs=20, shuffle=True, random_state=seed, pocket=True).fit(xor.X, xor.y)
    plain = Perceptron(max_epochs=20, shuffle=True, random_state=seed).fit(xor.X, xor.y)
    np.testing.assert_array_equal(p.coef_, plain.coef_)  # the pocket does not change training
    assert p.mistakes_ == plain.mistakes_
    # a line gets at most 3 of XOR's 4 corners, and the shuffled perceptron passes through one
    assert p.pocket_accuracy_ == 0.75
    predicted = (xor.X @ p.pocket_coef_ + p.pocket_intercept_ > 0).astype(int)
    assert np.mean(predicted == xor.y) == p.pocket_accuracy_
    assert p.pocket_accuracy_ >= max(p.accuracy_curve_)


def test_pocket_on_separable_data_holds_a_perfect_line(blobs):
    p = Perceptron(pocket=True).fit(blobs.X, blobs.y)
    assert p.pocket_accuracy_ == 1.0 and p.score(blobs.X, blobs.y) == 1.0
    assert len(p.epoch_weights_) == p.n_iter_
    np.testing.assert_array_equal(p.epoch_weights_[-1][0], p.coef_)
