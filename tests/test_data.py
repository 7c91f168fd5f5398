"""Tests of nnexp.engine.data on the real MNIST files (from $NNEXP_DATA_DIR) and sklearn's digits.

Downloads are exercised against a local HTTP server on 127.0.0.1; no test ever reaches a real mirror
(``data.MIRRORS`` is pointed at a closed local port for the tests that could fall back to it).
"""

import functools
import gzip
import hashlib
import os
import re
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from nnexp.engine import data

REAL_DIR = Path(os.environ["NNEXP_DATA_DIR"])  # set by conftest.py
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def real_data_dir(monkeypatch):
    monkeypatch.setenv("NNEXP_DATA_DIR", str(REAL_DIR))


@pytest.fixture(scope="module")
def mnist():
    with pytest.MonkeyPatch.context() as mp:  # module scope cannot use the autouse fixture's monkeypatch
        mp.setenv("NNEXP_DATA_DIR", str(REAL_DIR))
        return data.load()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def copy_real(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in data.MNIST_FILES:
        shutil.copy(REAL_DIR / name, directory / name)
    return directory


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- real MNIST -------------------------------------------------------------------------------------------


@pytest.mark.mnist
def test_book_split_shapes_range_and_dtype(mnist):
    assert mnist.name == "mnist" and mnist.n_inputs == 784 and mnist.n_classes == 10
    for split, n in ((mnist.train, 50000), (mnist.validation, 10000), (mnist.test, 10000)):
        assert split.X.shape == (n, 784) and split.y.shape == (n,)
        assert split.X.dtype == np.float32 and split.y.dtype == np.int64
        assert split.X.min() == 0.0 and split.X.max() == 1.0


@pytest.mark.mnist
def test_label_counts_match_the_real_files(mnist):
    train_and_validation = np.concatenate([mnist.train.y, mnist.validation.y])
    assert np.bincount(train_and_validation).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.test.y).tolist() == TEST_COUNTS


@pytest.mark.mnist
def test_float64_and_train_size_keep_the_first_images(mnist):
    small = data.load(train_size=1000, dtype="float64")
    assert small.train.X.dtype == np.float64 and small.test.X.dtype == np.float64
    assert small.train.X.shape == (1000, 784) and small.validation.X.shape == (10000, 784)
    np.testing.assert_allclose(small.train.X, mnist.train.X[:1000], atol=1e-7)
    np.testing.assert_array_equal(small.train.y, mnist.train.y[:1000])
    np.testing.assert_array_equal(small.test.y, mnist.test.y)


@pytest.mark.parametrize("train_size", [0, -1, 50001, 2.5, True])
def test_train_size_out_of_range(train_size):
    with pytest.raises(ValueError, match=r"train_size=.*1\.\.50000"):
        data.load(train_size=train_size)


def test_unknown_name_and_dtype():
    with pytest.raises(ValueError, match="'cifar'.*mnist, digits"):
        data.load("cifar")
    with pytest.raises(ValueError, match="'float16'.*float32, float64"):
        data.load(dtype="float16")


def rolled(images: np.ndarray, shift: int, axis: int) -> np.ndarray:
    """np.roll with the wrapped-around row/column zeroed: the book's expand_mnist.py shift."""
    out = np.roll(images, shift, axis=axis)
    edge = [slice(None)] * images.ndim
    edge[axis] = 0 if shift > 0 else -1
    out[tuple(edge)] = 0
    return out


@pytest.mark.mnist
def test_expand_full_training_set(mnist):
    expanded = data.load(expand=True)
    assert (
        expanded.train.pixels.shape == (250000, 784)
        and expanded.train.inputs(slice(0, 1)).dtype == np.float32
    )
    assert expanded.validation.pixels.shape == (10000, 784) and expanded.test.pixels.shape == (10000, 784)
    order = data.expanded_order(250000)  # shuffled once, as the book's expand_mnist.py does
    assert not np.array_equal(expanded.train.y, np.repeat(mnist.train.y, 5))
    unshuffled = np.empty_like(expanded.train.pixels[:5000])  # the bytes: X would be 784 MB
    last = np.flatnonzero(order >= 245000)  # where the last 1,000 images and their shifts went
    unshuffled[order[last] - 245000] = expanded.train.pixels[last]
    np.testing.assert_array_equal(expanded.train.y[last], np.repeat(mnist.train.y, 5)[order[last]])
    shifts = unshuffled.reshape(1000, 5, 28, 28)
    original = mnist.train.pixels[-1000:].reshape(1000, 28, 28)
    np.testing.assert_array_equal(shifts[:, 0], original)
    for k, (shift, axis) in enumerate([(1, 1), (-1, 1), (1, 2), (-1, 2)], start=1):
        np.testing.assert_array_equal(shifts[:, k], rolled(original, shift, axis))


@pytest.mark.mnist
def test_train_size_applies_before_expand(mnist):
    expanded = data.load(train_size=100, expand=True)
    assert expanded.train.X.shape == (500, 784)
    originals = np.argsort(data.expanded_order(500))[::5]  # where each image itself went
    np.testing.assert_array_equal(expanded.train.X[originals], mnist.train.X[:100])


def test_expand_shifts_zero_fill_not_wrap():
    # Random images have non-zero borders, so a wrap-around bug cannot hide here as it could on MNIST.
    images = np.random.default_rng(0).integers(1, 256, size=(3, 6, 6), dtype=np.uint8)
    shifts = data.expand_shifts(images.reshape(3, 36), 6).reshape(3, 5, 6, 6)
    np.testing.assert_array_equal(shifts[:, 0], images)
    for k, (shift, axis) in enumerate([(1, 1), (-1, 1), (1, 2), (-1, 2)], start=1):
        np.testing.assert_array_equal(shifts[:, k], rolled(images, shift, axis))


# --- damaged or missing files -----------------------------------------------------------------------------


def load_from(directory: Path, monkeypatch):
    monkeypatch.setenv("NNEXP_DATA_DIR", str(directory))
    return data.load()


@pytest.mark.mnist
def test_md5_mismatch_names_the_file(tmp_path, monkeypatch):
    # A well-formed IDX file with one label changed: only the md5 check can catch it.
    path = copy_real(tmp_path) / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError, match=re.escape(f"{path} is corrupted (md5")):
        load_from(tmp_path, monkeypatch)


@pytest.mark.mnist
def test_flipped_byte_names_the_file(tmp_path, monkeypatch):
    path = copy_real(tmp_path) / "t10k-images-idx3-ubyte.gz"
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(data.DataError, match=re.escape(str(path))):
        load_from(tmp_path, monkeypatch)


@pytest.mark.mnist
def test_truncated_file_names_the_file(tmp_path, monkeypatch):
    path = copy_real(tmp_path) / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5_000_000])
    with pytest.raises(data.DataError, match=re.escape(f"{path} is truncated")):
        load_from(tmp_path, monkeypatch)


@pytest.mark.mnist
def test_wrong_idx_structure_names_the_file(tmp_path, monkeypatch):
    path = copy_real(tmp_path) / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(data.DataError, match=re.escape(f"{path} has a bad IDX structure")):
        load_from(tmp_path, monkeypatch)


@pytest.mark.mnist
def test_missing_file_in_data_dir_is_an_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (closed_port_url(),))
    missing = "t10k-labels-idx1-ubyte.gz"
    (copy_real(tmp_path) / missing).unlink()
    with pytest.raises(data.DataError, match=re.escape(f"NNEXP_DATA_DIR={tmp_path} lacks {missing}")):
        load_from(tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(data.MNIST_FILES) - {missing})


# --- downloading ------------------------------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server with /good/ (the real files), /bad/ (damaged copies) and /empty/ (404s)."""
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "empty").mkdir()
    for name in data.MNIST_FILES:
        (root / "good" / name).symlink_to(REAL_DIR / name)
    for path in copy_real(root / "bad").iterdir():
        path.write_bytes(path.read_bytes()[:1000])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.mnist
def test_download_skips_bad_mirrors_and_fills_cache_atomically(server, tmp_path):
    cache = tmp_path / "cache"
    mirrors = [closed_port_url(), server + "empty/", server + "bad/", server + "good/"]
    assert data.fetch_mnist(cache, mirrors, timeout=5) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.MNIST_FILES)
    for name, (expected, _, _) in data.MNIST_FILES.items():
        assert md5(cache / name) == expected


@pytest.mark.mnist
def test_damaged_cached_file_is_downloaded_again(server, tmp_path):
    cache = copy_real(tmp_path / "cache")
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.fetch_mnist(cache, [server + "good/"], timeout=5)
    assert md5(cache / "train-labels-idx1-ubyte.gz") == data.MNIST_FILES["train-labels-idx1-ubyte.gz"][0]
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.MNIST_FILES)


@pytest.mark.mnist
def test_load_without_data_dir_uses_the_user_cache(server, tmp_path, monkeypatch, mnist):
    monkeypatch.delenv("NNEXP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "MIRRORS", (server + "good/",))
    loaded = data.load(train_size=10)
    assert data.default_cache_dir() == tmp_path / "xdg" / "nnexp" / "mnist"
    assert sorted(p.name for p in data.default_cache_dir().iterdir()) == sorted(data.MNIST_FILES)
    np.testing.assert_array_equal(loaded.test.X, mnist.test.X)


@pytest.mark.mnist
def test_all_mirrors_failing_is_a_clear_offline_error(server, tmp_path):
    cache = tmp_path / "cache"
    message = "could not download train-images-idx3-ubyte.gz .*offline"
    with pytest.raises(data.DataError, match=message) as err:
        data.fetch_mnist(cache, [closed_port_url(), server + "bad/"], timeout=5)
    assert "\n" not in str(err.value) and "md5 mismatch" in str(err.value)
    assert list(cache.iterdir()) == []


# --- digits -----------------------------------------------------------------------------------------------


def test_digits_same_interface():
    digits = data.load("digits", dtype="float64")
    assert digits.name == "digits" and digits.n_inputs == 64 and digits.n_classes == 10
    for split, n in ((digits.train, 1000), (digits.validation, 397), (digits.test, 400)):
        assert split.X.shape == (n, 64) and split.X.dtype == np.float64 and split.y.dtype == np.int64
        assert split.X.min() == 0.0 and split.X.max() == 1.0
        assert set(np.unique(split.y)) == set(range(10))


def test_digits_train_size_and_expand():
    digits = data.load("digits", train_size=200, expand=True)
    assert digits.train.X.shape == (1000, 64) and digits.train.X.dtype == np.float32
    assert digits.test.X.shape == (400, 64)
    with pytest.raises(ValueError, match=r"train_size=1001 .*1\.\.1000"):
        data.load("digits", train_size=1001)


# --- the decoded cache ------------------------------------------------------------------------------------


@pytest.mark.mnist
def test_decoded_arrays_are_cached_and_a_changed_file_is_noticed(tmp_path, monkeypatch, mnist):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    copy = copy_real(tmp_path / "files")
    first = load_from(copy, monkeypatch)
    cache = data.decoded_cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == ["images.npy", "labels.npy", "sources.json"]
    again = load_from(copy, monkeypatch)  # from the cache
    np.testing.assert_array_equal(again.train.pixels, first.train.pixels)
    np.testing.assert_array_equal(again.test.y, mnist.test.y)

    labels = copy / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))  # changed since it was decoded: decoded and checked again
    with pytest.raises(data.DataError, match="is corrupted"):
        load_from(copy, monkeypatch)


def test_pixels_are_kept_as_bytes_and_scaled_as_the_network_takes_them():
    digits = data.load("digits", dtype="float64")
    split = digits.test
    assert split.pixels.dtype == np.uint8 and split.pixels.max() == 16
    np.testing.assert_array_equal(split.X, split.pixels / 16)
    np.testing.assert_array_equal(split.inputs([3, 1]), split.X[[3, 1]])
    assert split.X.dtype == np.float64 and split.inputs(slice(0, 2)).dtype == np.float64
