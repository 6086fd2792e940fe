import numpy as np
import pytest

from gptlab.neurons.datasets import load_digits, make_blobs, make_xor


@pytest.fixture(scope="session")
def digits01():
    return load_digits((0, 1))


@pytest.fixture(scope="session")
def digits38():
    return load_digits((3, 8))


@pytest.fixture(scope="session")
def blobs():
    return make_blobs(random_state=0)


@pytest.fixture(scope="session")
def xor():
    return make_xor()


@pytest.fixture
def image_folder(tmp_path):
    """Two classes of small images of different sizes and modes: dark squares vs bright ones."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(5):
        (tmp_path / "pets" / "cats").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pets" / "dogs").mkdir(parents=True, exist_ok=True)
        dark = rng.integers(0, 80, size=(30 + i, 40), dtype=np.uint8)
        Image.fromarray(dark).save(tmp_path / "pets" / "cats" / f"{i}.png")
        bright = rng.integers(150, 255, size=(25, 25, 3), dtype=np.uint8)
        Image.fromarray(bright).save(tmp_path / "pets" / "dogs" / f"{i}.jpg")
    (tmp_path / "pets" / ".DS_Store").write_text("ignored")
    return tmp_path / "pets"
