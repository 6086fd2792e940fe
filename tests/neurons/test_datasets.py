import numpy as np
import pytest
from PIL import Image

from gptlab.errors import ConfigError, DataError
from gptlab.neurons import (
    Perceptron,
    load,
    load_digits,
    load_image_folder,
    make_blobs,
    make_xor,
    mistake_bound,
)
from gptlab.neurons.datasets import train_test_split


def test_digits_on_a_20x20_retina(digits01):
    assert digits01.X.shape == (360, 400)
    assert digits01.image_shape == (20, 20)
    assert digits01.class_names == ("0", "1")
    assert set(np.unique(digits01.y)) == {0, 1}
    assert digits01.X.min() >= 0 and digits01.X.max() <= 1 and digits01.X.max() > 0.9


def test_digit_pair_order_sets_labels():
    data = load_digits((7, 2), size=12)
    assert data.class_names == ("7", "2") and data.X.shape[1] == 144


@pytest.mark.parametrize("digits", [(3, 3), (1, 10), (1,), (1, 2, 3)])
def test_bad_digit_pairs(digits):
    with pytest.raises(DataError, match="two different digits"):
        load_digits(digits)


def test_blobs_are_separable_and_reproducible():
    a, b = make_blobs(60, random_state=4), make_blobs(60, random_state=4)
    np.testing.assert_array_equal(a.X, b.X)
    assert mistake_bound(a.X, a.y).margin > 0
    assert make_blobs(2).y.tolist() == [0, 1]
    with pytest.raises(DataError):
        make_blobs(1)


def test_xor():
    data = make_xor()
    assert data.X.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and data.y.tolist() == [0, 1, 1, 0]


def test_image_folder(image_folder):
    data = load_image_folder(image_folder)
    assert data.class_names == ("cats", "dogs")
    assert data.X.shape == (10, 400) and data.image_shape == (20, 20)
    assert data.y.tolist() == [0] * 5 + [1] * 5
    assert data.X[data.y == 0].mean() < 0.4 < data.X[data.y == 1].mean()
    assert Perceptron().fit(data.X, data.y).score(data.X, data.y) == 1.0
    assert load(str(image_folder), size=8).X.shape == (10, 64)


def test_image_folder_without_resizing(image_folder, tmp_path):
    with pytest.raises(DataError, match="1.png: image is 40×31 but earlier ones are 40×30"):
        load_image_folder(image_folder, size=None)
    same = tmp_path / "same"
    for name in ("a", "b"):
        (same / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (6, 4), 40 * i).save(same / name / f"{i}.png")
    data = load_image_folder(same, size=None)
    assert data.X.shape == (4, 24) and data.image_shape == (4, 6)


def _folder(tmp_path, layout):
    root = tmp_path / "data"
    root.mkdir()
    for cls, files in layout.items():
        (root / cls).mkdir()
        for name in files:
            if name.endswith(".png"):
                Image.new("L", (8, 8)).save(root / cls / name)
            else:
                (root / cls / name).write_text("not an image")
    return root


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"cats": ["a.png"]}, "exactly two class subfolders.*found 1: cats"),
        ({"a": ["x.png"], "b": ["y.png"], "c": ["z.png"]}, "found 3"),
        ({"cats": ["a.png"], "dogs": []}, "dogs: no images"),
        ({"cats": ["a.png"], "dogs": ["b.png", "notes.txt"]}, "notes.txt: not an image"),
    ],
)
def test_bad_image_folders(tmp_path, layout, message):
    with pytest.raises(DataError, match=message):
        load_image_folder(_folder(tmp_path, layout))


def test_unknown_source_and_bad_size(tmp_path):
    with pytest.raises(DataError, match="not a built-in"):
        load("nonexistent-folder")
    with pytest.raises(DataError, match="not a directory"):
        (tmp_path / "f.txt").write_text("x")
        load_image_folder(tmp_path / "f.txt")
    with pytest.raises(ConfigError, match="size"):
        load_digits(size=0)


def test_train_test_split(digits38):
    train, test = train_test_split(digits38, 0.25, random_state=0)
    assert len(train) + len(test) == len(digits38)
    assert set(np.unique(test.y)) == {0, 1}
    assert abs(len(test) - 0.25 * len(digits38)) <= 2
    with pytest.raises(ConfigError):
        train_test_split(digits38, 1.0)
