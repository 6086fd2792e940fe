import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlab.errors import ConfigError, DataError
from gptlab.neurons import MLP

TORCH_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def torch_loss_and_grads(model, X, y):
    """The same network in torch float64: autograd's gradients of the same loss."""
    Ws = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in model.coefs_]
    bs = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in model.intercepts_]
    h = torch.tensor(X, dtype=torch.float64)
    for layer, (W, b) in enumerate(zip(Ws, bs)):
        h = h @ W + b
        if layer < len(Ws) - 1:
            h = TORCH_ACTIVATIONS[model.activation](h)
    index = torch.tensor(np.searchsorted(model.classes_, y))
    if len(model.classes_) == 2:
        loss = F.binary_cross_entropy_with_logits(h[:, 0], index.to(torch.float64))
    else:
        loss = F.cross_entropy(h, index)
    loss.backward()
    return loss.item(), [W.grad.numpy() for W in Ws], [b.grad.numpy() for b in bs]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("hidden, n_classes", [((5,), 2), ((6, 4), 2), ((5, 3), 3), ((), 2)])
def test_gradients_match_torch_autograd(activation, hidden, n_classes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 4))
    y = np.arange(16) % n_classes
    # a few steps of training first, so the check is not only at the initialisation
    model = MLP(
        hidden_layer_sizes=hidden, activation=activation, learning_rate=0.3, max_epochs=3, random_state=1
    ).fit(X, y)
    loss, grad_W, grad_b = model.loss_and_gradients(X, y)
    ref_loss, ref_W, ref_b = torch_loss_and_grads(model, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert len(grad_W) == len(ref_W) == len(hidden) + 1
    for ours, ref in zip(grad_W + grad_b, ref_W + ref_b):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(8, 3)), np.array([0, 1] * 4)
    model = MLP(hidden_layer_sizes=(4,), activation="tanh", max_epochs=1, random_state=0).fit(X, y)
    _, grad_W, _ = model.loss_and_gradients(X, y)
    eps = 1e-6
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        W = model.coefs_[0]
        W[i, j] += eps
        up = model.loss_and_gradients(X, y)[0]
        W[i, j] -= 2 * eps
        down = model.loss_and_gradients(X, y)[0]
        W[i, j] += eps
        assert grad_W[0][i, j] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


def test_step_activation_has_no_gradient_below_the_output():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 2)), np.arange(10) % 2
    model = MLP(hidden_layer_sizes=(3, 3), activation="step", max_epochs=1, random_state=0).fit(X, y)
    _, grad_W, grad_b = model.loss_and_gradients(X, y)
    for g in grad_W[:-1] + grad_b[:-1]:
        np.testing.assert_array_equal(g, 0.0)
    assert np.any(grad_W[-1] != 0)  # only the output layer learns
    before = [W.copy() for W in model.coefs_]
    hidden_biases = [b.copy() for b in model.intercepts_[:-1]]
    model.partial_fit(X, y)
    np.testing.assert_array_equal(model.coefs_[0], before[0])
    for b, start in zip(model.intercepts_[:-1], hidden_biases):
        np.testing.assert_array_equal(b, start)  # fixed ...
        assert np.all(b != 0)  # ... at random values: the hidden lines miss the origin


def test_only_step_units_start_with_random_biases():
    X, y = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0, 1])
    for activation in ("tanh", "sigmoid", "relu"):
        model = MLP(hidden_layer_sizes=(3,), activation=activation, max_epochs=1, learning_rate=1e-9,
                    random_state=0).partial_fit(X, y)
        assert np.all(np.abs(model.intercepts_[0]) < 1e-8)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_backprop_learns_xor(xor, activation):
    model = MLP(
        hidden_layer_sizes=(4,), activation=activation, learning_rate=0.5, max_epochs=2000, random_state=0
    ).fit(xor.X, xor.y)
    assert model.score(xor.X, xor.y) == 1.0
    np.testing.assert_array_equal(model.predict(xor.X), [0, 1, 1, 0])
    assert model.loss_curve_[-1] < 0.1 < model.loss_curve_[0]


def test_two_hidden_units_suffice_for_xor(xor):
    model = MLP(hidden_layer_sizes=2, activation="tanh", max_epochs=2000, random_state=0).fit(xor.X, xor.y)
    assert model.score(xor.X, xor.y) == 1.0


def test_minibatches_and_multiclass():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    model = MLP(
        hidden_layer_sizes=(8,), learning_rate=0.1, max_epochs=100, batch_size=16, random_state=0
    ).fit(X, y)
    assert model.score(X, y) > 0.95
    proba = model.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.decision_function(X).shape == (150, 3)


def test_reproducible_and_partial_fit(xor):
    a = MLP(max_epochs=5, random_state=3).fit(xor.X, xor.y)
    b = MLP(max_epochs=5, random_state=3)
    for _ in range(5):
        b.partial_fit(xor.X, xor.y)
    for Wa, Wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(Wa, Wb)
    assert a.loss_curve_ == b.loss_curve_


def test_bad_input(xor):
    with pytest.raises(ConfigError, match="activation"):
        MLP(activation="gelu").fit(xor.X, xor.y)
    with pytest.raises(ConfigError, match="hidden layer"):
        MLP(hidden_layer_sizes=(0,)).fit(xor.X, xor.y)
    with pytest.raises(ConfigError, match="batch_size"):
        MLP(batch_size=0).fit(xor.X, xor.y)
    with pytest.raises(DataError, match="two classes"):
        MLP().fit(xor.X, [1, 1, 1, 1])
    model = MLP(max_epochs=1).fit(xor.X, xor.y)
    with pytest.raises(DataError, match="features"):
        model.predict(np.ones((2, 3)))
