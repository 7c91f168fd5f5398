"""Datasets for the book's networks: MNIST (with the book's splits) and an offline 8x8 digits fallback.

MNIST comes from the four canonical gzipped IDX files. They are looked up in ``$NNEXP_DATA_DIR`` when that
variable is set (a shared, read-only copy; nothing is ever downloaded there), otherwise in the user cache
(``platformdirs.user_cache_dir("nnexp")/mnist``), where missing files are downloaded from ``MIRRORS``.
Every file is checked against its published md5 and its IDX header before use, so a truncated or
corrupted file fails loudly with a ``DataError`` naming it instead of silently training on garbage.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import operator
import os
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from nnexp.engine.components import dtype_of
from nnexp.engine.files import write_atomically

DATASETS = ("mnist", "digits")

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# file name -> (md5 of the .gz file, IDX magic number, expected dimensions)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 2049, (60000,)),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 2049, (10000,)),
}

# Per dataset: end of training, end of validation, end of test, in the order the images are stored.
# MNIST is the book's split (the last 10,000 of the 60,000 training images held out for validation, then
# t10k); sklearn's 1,797 digits are split 1000 / 397 / 400 in their stored order.
# Also the image side (for expand) and the maximum pixel value (for scaling to [0, 1]).
_LAYOUT = {
    "mnist": ((50000, 60000, 70000), 28, 255),
    "digits": ((1000, 1397, 1797), 8, 16),
}

TRAIN_SIZES = {name: bounds[0] for name, (bounds, _, _) in _LAYOUT.items()}  # known without loading
N_CLASSES = 10  # the digits 0-9, in every dataset here
# An example as a convolutional network sees it, (channels, height, width): square grey images
IMAGE_SHAPES = {name: (1, side, side) for name, (_, side, _) in _LAYOUT.items()}


class DataError(Exception):
    """A data file is missing, truncated, corrupted or could not be downloaded (one-line message)."""


@dataclass(frozen=True)
class Split:
    """One part of a dataset. ``pixels`` (n, n_inputs) are the images as stored, small whole numbers in
    bytes (uint8: a quarter of float32's memory, a fifth of a gigabyte less for MNIST); a network takes
    them scaled to [0, 1] in the dataset's ``dtype``: ``X``, or ``inputs(rows)`` for some of them.
    ``y`` (n,) are the labels, int64."""

    pixels: np.ndarray
    y: np.ndarray
    scale: float  # pixels * scale is in [0, 1]
    dtype: np.dtype

    def inputs(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """The network's inputs of ``rows`` (a slice or indices): ``pixels[rows] * scale``, in ``dtype``."""
        return np.multiply(self.pixels[rows], self.dtype.type(self.scale), dtype=self.dtype)

    @property
    def X(self) -> np.ndarray:
        """All the inputs, (n, n_inputs) in [0, 1], made anew on each call: for some rows, ``inputs``."""
        return self.inputs()


@dataclass(frozen=True)
class Dataset:
    """Training, validation and test splits of one dataset, as the book uses them."""

    name: str
    train: Split
    validation: Split
    test: Split

    @property
    def n_inputs(self) -> int:
        return self.train.pixels.shape[1]

    @property
    def n_classes(self) -> int:
        return N_CLASSES


def load(
    name: str = "mnist", train_size: int | None = None, expand: bool = False, dtype: str = "float32"
) -> Dataset:
    """Load ``name`` with the book's splits.

    ``train_size`` keeps the first n training images (the book's 1,000-image overfitting runs); it is applied
    before ``expand``, which adds each training image's four one-pixel shifts and shuffles the result once
    (5x the training set, the book's expand_mnist.py; validation and test are left alone; also works on
    the 8x8 digits).
    ``dtype`` is "float32" or "float64".
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (accepted: {', '.join(DATASETS)})")
    dtype = dtype_of(dtype)
    bounds, side, scale = _LAYOUT[name]
    n_train = bounds[0] if train_size is None else _check_train_size(train_size, bounds[0])
    images, labels = _mnist_arrays() if name == "mnist" else _digits_arrays()

    train_X, train_y = images[:n_train], labels[:n_train]
    if expand:
        order = expanded_order(5 * n_train)
        train_X, train_y = expand_shifts(train_X, side)[order], np.repeat(train_y, 5)[order]

    def split(pixels, y):
        return Split(pixels=pixels.astype(np.uint8), y=y.astype(np.int64), scale=1 / scale, dtype=dtype)

    return Dataset(
        name=name,
        train=split(train_X, train_y),
        validation=split(images[bounds[0] : bounds[1]], labels[bounds[0] : bounds[1]]),
        test=split(images[bounds[1] : bounds[2]], labels[bounds[1] : bounds[2]]),
    )


def _check_train_size(train_size: object, available: int) -> int:
    try:
        n = operator.index(train_size)
    except TypeError:
        n = None
    if n is None or isinstance(train_size, bool) or not 1 <= n <= available:
        raise ValueError(
            f"train_size={train_size!r} out of range (accepted: an integer 1..{available} or None)"
        )
    return n


EXPANDED_SEED = 0  # the expanded set's one shuffle: the same for every run, so it is part of the data


def expanded_order(n: int) -> np.ndarray:
    """The order the expanded training set is shuffled into, once (``n`` images): the book's
    expand_mnist.py shuffles it, and network3 then takes its mini-batches in that fixed order, where
    an image beside its own four shifts would fill half a mini-batch with one digit."""
    return np.random.default_rng(EXPANDED_SEED).permutation(n)


def expand_shifts(X: np.ndarray, side: int) -> np.ndarray:
    """Return each flattened ``side`` x ``side`` image followed by its four one-pixel shifts.

    Order per image, as in the book's expand_mnist.py: original, down, up, right, left; the row or column
    that a shift uncovers is zero-filled (not wrapped around). ``load`` then shuffles the set once.
    """
    images = X.reshape(-1, side, side)
    out = np.zeros((len(images), 5, side, side), dtype=X.dtype)
    out[:, 0] = images
    out[:, 1, 1:, :] = images[:, :-1, :]  # down
    out[:, 2, :-1, :] = images[:, 1:, :]  # up
    out[:, 3, :, 1:] = images[:, :, :-1]  # right
    out[:, 4, :, :-1] = images[:, :, 1:]  # left
    return out.reshape(-1, side * side)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits (pixel values 0..16): an MNIST stand-in that needs no download."""
    from sklearn.datasets import load_digits  # lazy: only this offline fallback needs scikit-learn

    digits = load_digits()
    return digits.data, digits.target


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST images (uint8, flattened) and labels: the 60,000 training ones, then t10k.

    Decoding the gzipped files takes most of a second; a run instead reads the arrays decoded once
    into the user cache (``decoded_cache_dir``), in milliseconds. The cache records each source
    file's size, modification time and md5: a file that changed since is decoded (and checked) again.
    """
    directory = find_mnist()
    sources = {name: directory / name for name in MNIST_FILES}
    cache = decoded_cache_dir()
    cached = _read_decoded(cache, sources)
    if cached is not None:
        return cached
    train_images, train_labels, test_images, test_labels = (read_idx(path) for path in sources.values())
    images = np.concatenate([train_images, test_images]).reshape(-1, 28 * 28)
    labels = np.concatenate([train_labels, test_labels])
    _write_decoded(cache, sources, images, labels)
    return images, labels


def decoded_cache_dir() -> Path:
    """Where the decoded MNIST arrays are kept: the user cache, beside downloads (the MNIST directory
    itself may be a shared, read-only copy)."""
    return Path(platformdirs.user_cache_dir("nnexp")) / "mnist-decoded"


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_decoded(cache: Path, sources: dict[str, Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, if they were decoded from these very files (same size and time)."""
    try:
        record = json.loads((cache / "sources.json").read_text())
        if any(
            {**_stamp(path), "md5": MNIST_FILES[name][0]} != record.get(name)
            for name, path in sources.items()
        ):
            return None
        return np.load(cache / "images.npy"), np.load(cache / "labels.npy")
    except (OSError, ValueError):
        return None


def _write_decoded(cache: Path, sources: dict[str, Path], images: np.ndarray, labels: np.ndarray) -> None:
    """Keep the decoded arrays (each file written atomically, the record of their sources last); a
    cache that cannot be written is no error, the next run decodes again."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for name, array in (("images.npy", images), ("labels.npy", labels)):
            buffer = io.BytesIO()
            np.save(buffer, array)
            write_atomically(cache / name, buffer.getvalue())
        record = {name: {**_stamp(path), "md5": MNIST_FILES[name][0]} for name, path in sources.items()}
        write_atomically(cache / "sources.json", json.dumps(record, indent=1).encode())
    except OSError:
        pass


def find_mnist() -> Path:
    """The directory holding the MNIST files: ``$NNEXP_DATA_DIR`` if set, else the (filled) user cache.

    An explicit ``$NNEXP_DATA_DIR`` lacking files is an error rather than a silent download, so a
    misconfigured shared copy is noticed instead of each run fetching its own.
    """
    env = os.environ.get("NNEXP_DATA_DIR")
    if not env:
        return fetch_mnist()
    directory = Path(env)
    missing = [name for name in MNIST_FILES if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"NNEXP_DATA_DIR={directory} lacks {', '.join(missing)} "
            f"(put the four MNIST .gz files there or unset NNEXP_DATA_DIR to download them)"
        )
    return directory


def default_cache_dir() -> Path:
    """Where downloaded MNIST files are kept: per user, outside any repository or run directory."""
    return Path(platformdirs.user_cache_dir("nnexp")) / "mnist"


def fetch_mnist(
    cache_dir: str | Path | None = None, mirrors: Sequence[str] | None = None, timeout: float = 30.0
) -> Path:
    """Make sure ``cache_dir`` holds the four verified MNIST files, downloading any missing or bad one.

    ``cache_dir`` defaults to the user cache and ``mirrors`` to ``MIRRORS`` (read at call time, so setting
    ``nnexp.data.MIRRORS`` redirects every download). Mirrors (URL prefixes) are tried in order; a download
    is kept only if its md5 matches, and it is written to a temporary file in ``cache_dir`` then renamed,
    so an interrupted download never leaves a partial file that a later run would mistake for data.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    mirrors = MIRRORS if mirrors is None else mirrors
    directory.mkdir(parents=True, exist_ok=True)
    for name, (md5, _, _) in MNIST_FILES.items():
        path = directory / name
        if not (path.is_file() and _md5(path.read_bytes()) == md5):
            _download(name, md5, path, mirrors, timeout)
    return directory


def _download(name: str, md5: str, path: Path, mirrors: Sequence[str], timeout: float) -> None:
    failures = []
    for prefix in mirrors:
        url = prefix + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/HTTPError/timeout: OSError
            failures.append(f"{url}: {exc}")
            continue
        if _md5(payload) != md5:
            failures.append(f"{url}: md5 mismatch")
            continue
        write_atomically(path, payload)
        return
    raise DataError(
        f"could not download {name} into {path.parent} (offline? set NNEXP_DATA_DIR to a "
        f"directory with the MNIST files); tried: {'; '.join(failures) or 'no mirrors'}"
    )


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Decode one canonical MNIST IDX .gz file into a uint8 array, after checking its md5 and structure."""
    path = Path(path)
    md5, magic, dims = MNIST_FILES[path.name]
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read MNIST file {path}: {exc.strerror or exc}") from exc
    try:
        raw = gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"MNIST file {path} is truncated or not valid gzip ({exc}); replace it") from exc
    header = 4 * (1 + len(dims))
    found = tuple(int(v) for v in np.frombuffer(raw[:header], dtype=">u4")) if len(raw) >= header else ()
    expected_len = header + int(np.prod(dims))
    if found != (magic, *dims) or len(raw) != expected_len:
        raise DataError(
            f"MNIST file {path} has a bad IDX structure (header {found}, {len(raw)} bytes; "
            f"expected header {(magic, *dims)}, {expected_len} bytes)"
        )
    if _md5(payload) != md5:
        raise DataError(f"MNIST file {path} is corrupted (md5 {_md5(payload)}, expected {md5})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
