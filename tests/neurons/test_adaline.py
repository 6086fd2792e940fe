import warnings

import numpy as np
import pytest

from gptlab.errors import ConfigError
from gptlab.neurons import Adaline


def sklearn_lms(X, targets, learning_rate, epochs):
    from sklearn.linear_model import SGDRegressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: we ask for exactly `epochs`
        return SGDRegressor(
            loss="squared_error",
            penalty=None,
            learning_rate="constant",
            eta0=learning_rate,
            shuffle=False,
            max_iter=epochs,
            tol=None,
            fit_intercept=True,
        ).fit(X, targets)


@pytest.mark.parametrize(
    "data_name, learning_rate",
    [("digits01", 0.001), ("digits38", 0.0005), ("blobs", 0.01), ("xor", 0.1)],
)
@pytest.mark.parametrize("epochs", [1, 5])
def test_parity_with_sklearn_sgd_regressor(request, data_name, learning_rate, epochs):
    data = request.getfixturevalue(data_name)
    ours = Adaline(learning_rate=learning_rate, max_epochs=epochs).fit(data.X, data.y)
    ref = sklearn_lms(data.X, np.where(data.y == 1, 1.0, -1.0), learning_rate, epochs)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.decision_function(data.X), ref.predict(data.X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(data.X), np.where(ref.predict(data.X) > 0, 1, 0))


def test_loss_decreases_and_separates_digits(digits01):
    model = Adaline(learning_rate=0.0005, max_epochs=20).fit(digits01.X, digits01.y)
    assert model.n_iter_ == 20 == len(model.loss_curve_) == len(model.accuracy_curve_)
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.score(digits01.X, digits01.y) == 1.0


def test_converges_to_least_squares_on_xor(xor):
    # LMS with a small step ends near the least-squares fit, which for XOR is the constant 0
    model = Adaline(learning_rate=0.01, max_epochs=3000).fit(xor.X, xor.y)
    Z = np.hstack([xor.X, np.ones((4, 1))])
    w, *_ = np.linalg.lstsq(Z, np.where(xor.y == 1, 1.0, -1.0), rcond=None)
    np.testing.assert_allclose(np.append(model.coef_, model.intercept_), w, atol=0.05)
    assert model.score(xor.X, xor.y) < 1.0


def test_divergence_is_a_clear_error(blobs):
    with pytest.raises(ConfigError, match="diverged.*too large"):
        Adaline(learning_rate=10.0, max_epochs=50).fit(blobs.X, blobs.y)


def test_partial_fit_continues(blobs):
    full = Adaline(learning_rate=0.01, max_epochs=3).fit(blobs.X, blobs.y)
    step = Adaline(learning_rate=0.01)
    for _ in range(3):
        step.partial_fit(blobs.X, blobs.y)
    np.testing.assert_allclose(step.coef_, full.coef_)
    assert step.loss_curve_ == pytest.approx(full.loss_curve_)


def test_shuffle_is_reproducible(blobs):
    a = Adaline(max_epochs=3, shuffle=True, random_state=1).fit(blobs.X, blobs.y)
    b = Adaline(max_epochs=3, shuffle=True, random_state=1).fit(blobs.X, blobs.y)
    c = Adaline(max_epochs=3, shuffle=True, random_state=2).fit(blobs.X, blobs.y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
