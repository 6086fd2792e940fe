import numpy as np
import pytest
from PIL import Image

from gptlab.errors import DataError
from gptlab.neurons import MLP, Perceptron
from gptlab.neurons.plots import plot_curve, plot_decision_boundary, plot_retina


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
