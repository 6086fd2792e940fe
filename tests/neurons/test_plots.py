import numpy as np
import pytest
from PIL import Image

from gptlab.errors import DataError
from gptlab.neurons import MLP, Perceptron
from gptlab.neurons.plots import _line_points, plot_curve, plot_decision_boundary, plot_linear_boundary, plot_retina


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


def test_retina_boundary_and_curve(tmp_path, digits01, xor):
    p = Perceptron().fit(digits01.X, digits01.y)
    assert _is_png(plot_retina(p.coef_, digits01.image_shape, tmp_path / "w.png"))
    net = MLP(max_epochs=10, random_state=0).fit(xor.X, xor.y)
    assert _is_png(plot_decision_boundary(net, xor.X, xor.y, tmp_path / "sub" / "b.png", resolution=50))
    assert _is_png(plot_curve(net.loss_curve_, tmp_path / "c.png", ylabel="loss", title="t", log_scale=True))


def test_plot_errors(tmp_path, digits01):
    with pytest.raises(DataError, match="retina"):
        plot_retina(np.ones(10), (20, 20), tmp_path / "w.png")
    with pytest.raises(DataError, match="2-D"):
        plot_decision_boundary(Perceptron(), digits01.X, digits01.y, tmp_path / "b.png")
    with pytest.raises(DataError, match="empty"):
        plot_curve([], tmp_path / "c.png", ylabel="y", title="t")


def test_line_points_lie_on_the_line():
    box = (-1.0, 2.0, -3.0, 4.0)
    for coef, b in [((1.0, -1.0), 0.0), ((0.0, 2.0), -1.0), ((3.0, 0.0), 1.5), ((0.2, -5.0), 0.7)]:
        points = _line_points(np.array(coef), b, box)
        np.testing.assert_allclose(points @ np.array(coef) + b, 0.0, atol=1e-12)
    assert _line_points(np.zeros(2), 1.0, box) is None  # w = 0: no line


def test_linear_boundary_with_epoch_lines_and_zero_weights(tmp_path, xor):
    p = Perceptron(max_epochs=6, shuffle=True, random_state=0, pocket=True).fit(xor.X, xor.y)
    earlier = [*p.epoch_weights_, (np.zeros(2), 0.0)]
    path = plot_linear_boundary(p.pocket_coef_, p.pocket_intercept_, xor.X, xor.y, tmp_path / "x.png",
                                earlier=earlier, resolution=40)
    assert _is_png(path)
    assert _is_png(plot_linear_boundary(np.zeros(2), 0.0, xor.X, xor.y, tmp_path / "zero.png", resolution=40))
