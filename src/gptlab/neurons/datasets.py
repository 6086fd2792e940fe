"""The data of the first chapter: two-class pictures on a 20×20 "retina", separable blobs, and XOR.

Rosenblatt's Mark I Perceptron (1958) looked at the world through a 20×20 grid of photocells;
here every picture is reduced to 20×20 grayscale in [0, 1], one input per cell (400 inputs).
Built in: two digits of scikit-learn's bundled 8×8 digits set (no download). Your own: a folder
with one subfolder per class, e.g. ``pets/cats/`` and ``pets/dogs/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gptlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

RETINA_SIZE = 20  # the Mark I's 20×20 photocells
BUILTIN = ("digits", "blobs", "xor")


@dataclass(frozen=True)
class Dataset:
    """Samples ``X`` (n_samples, n_features) float64, labels ``y`` (n_samples,) int class indices
    into ``class_names``, and ``image_shape`` (height, width) when each row is a flattened image."""

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.y)


def make_xor() -> Dataset:
    """The four corners of the unit square, labelled by exclusive or: no line separates them."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return Dataset("xor", X, np.array([0, 1, 1, 0]), ("0", "1"))


def make_blobs(n_samples: int = 100, *, margin: float = 0.25, random_state: int | None = 0) -> Dataset:
    """Two Gaussian clouds in 2-D, guaranteed linearly separable: samples closer than ``margin``
    to the line x₁ + x₂ = 0 (or on its wrong side) are drawn again."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise DataError(f"need at least 2 samples, got {n_samples!r}")
    if not margin >= 0:
        raise ConfigError(f"margin must be >= 0, got {margin!r}")
    rng = np.random.default_rng(random_state)
    y = np.arange(n_samples) % 2  # alternate classes: both present for any n >= 2
    center = np.where(y[:, None] == 1, 1.0, -1.0) * np.ones((n_samples, 2))
    X = center + rng.normal(size=(n_samples, 2))
    sign = np.where(y == 1, 1.0, -1.0)
    while True:
        bad = sign * X.sum(axis=1) / np.sqrt(2.0) < margin
        if not bad.any():
            break
        X[bad] = center[bad] + rng.normal(size=(int(bad.sum()), 2))
    return Dataset("blobs", X, y, ("0", "1"))


def _to_retina(image: Image.Image, size: int | None) -> np.ndarray:
    """A Pillow image as a float64 (h, w) array in [0, 1]: grayscale, resized to size×size
    (mode "F" images are taken to be in [0, 1] already)."""
    from PIL import Image

    if image.mode != "F":
        image = image.convert("L").convert("F")
        scale = 255.0
    else:
        scale = 1.0
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float64) / scale, 0.0, 1.0)


def load_digits(digits: Sequence[int] = (0, 1), *, size: int = RETINA_SIZE) -> Dataset:
    """Two digits of scikit-learn's bundled handwritten digits, each 8×8 image upsampled to
    ``size``×``size`` with Pillow. Label 0 is ``digits[0]``, label 1 is ``digits[1]``."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits

    digits = tuple(digits)
    if (
        len(digits) != 2
        or len(set(digits)) != 2
        or not all(isinstance(d, (int, np.integer)) and 0 <= d <= 9 for d in digits)
    ):
        raise DataError(f"choose two different digits from 0 to 9, got {list(digits)}")
    _check_size(size)
    bunch = sklearn_digits()
    keep = np.isin(bunch.target, digits)
    images = bunch.images[keep] / 16.0  # (n, 8, 8), pixel values 0..16 → [0, 1]
    X = np.stack([_to_retina(Image.fromarray(im.astype(np.float32)), size).ravel() for im in images])
    y = (bunch.target[keep] == digits[1]).astype(int)
    return Dataset(f"digits-{digits[0]}-vs-{digits[1]}", X, y, tuple(str(d) for d in digits), (size, size))


def _check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"image size must be a positive integer, got {size!r}")


def load_image_folder(path: str | Path, *, size: int | None = RETINA_SIZE) -> Dataset:
    """Pictures of two classes: ``path`` holds exactly two subfolders (their sorted names are the
    class names), each with at least one image Pillow can read. Files and folders whose names
    start with "." are ignored; anything else that is not an image is an error.

    Every image is converted to grayscale and resized to ``size``×``size`` (the retina). With
    ``size=None`` images are kept at their own size, which must then be the same for all.
    Raises DataError naming the offending file or folder.
    """
    from PIL import Image, UnidentifiedImageError

    _check_size(size)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected a folder with two class subfolders)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) != 2:
        names = ", ".join(p.name for p in class_dirs) or "none"
        raise DataError(
            f"{root}: need exactly two class subfolders (e.g. cats/ and dogs/), found "
            f"{len(class_dirs)}: {names}"
        )
    rows, labels, shape = [], [], None
    for label, folder in enumerate(class_dirs):
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        for file in files:
            if file.is_dir():
                log.debug("skipping nested folder %s", file)
                continue
            try:
                with Image.open(file) as image:
                    pixels = _to_retina(image, size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"{file}: not an image Pillow can read ({exc.__class__.__name__})") from None
            if shape is None:
                shape = pixels.shape
            elif pixels.shape != shape:
                raise DataError(
                    f"{file}: image is {pixels.shape[1]}×{pixels.shape[0]} but earlier ones are "
                    f"{shape[1]}×{shape[0]}; resize them all to one size"
                )
            rows.append(pixels.ravel())
            labels.append(label)
        if labels.count(label) == 0:
            raise DataError(f"{folder}: no images in this class folder")
    assert shape is not None
    return Dataset(
        root.name or str(root),
        np.stack(rows),
        np.array(labels),
        tuple(p.name for p in class_dirs),
        (int(shape[0]), int(shape[1])),
    )


def load(
    source: str,
    *,
    digits: Sequence[int] = (0, 1),
    size: int | None = RETINA_SIZE,
    random_state: int | None = 0,
) -> Dataset:
    """The data set named by ``source``: ``"digits"``, ``"blobs"``, ``"xor"``, or a folder of two
    class subfolders (see :func:`load_image_folder`). Unknown names are a DataError."""
    if source == "digits":
        return load_digits(digits, size=size if size is not None else RETINA_SIZE)
    if source == "blobs":
        return make_blobs(random_state=random_state)
    if source == "xor":
        return make_xor()
    if Path(source).exists():
        return load_image_folder(source, size=size)
    raise DataError(f"{source}: no such folder, and not a built-in data set ({', '.join(BUILTIN)})")


def train_test_split(
    data: Dataset, test_fraction: float, *, random_state: int | None = 0
) -> tuple[Dataset, Dataset]:
    """Hold out ``test_fraction`` of the samples of each class (at least one, leaving at least one
    to train on), chosen with ``random_state``. Returns (train, test)."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(random_state)
    test = np.zeros(len(data.y), dtype=bool)
    for label in np.unique(data.y):
        members = np.flatnonzero(data.y == label)
        if len(members) < 2:
            raise DataError(
                f"class {data.class_names[label]!r} has {len(members)} sample: too few to hold any out"
            )
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test[rng.choice(members, size=n_test, replace=False)] = True

    def subset(mask: np.ndarray, suffix: str) -> Dataset:
        return Dataset(
            f"{data.name}-{suffix}", data.X[mask], data.y[mask], data.class_names, data.image_shape
        )

    return subset(~test, "train"), subset(test, "test")
