"""SGD's fused step: a dense layer's weight gradient subtracted in the BLAS call that computes it is
the book's rule bit for bit, keeps scipy's own BLAS out of numpy's way, and trains a network to the
same numbers as the step computed and then subtracted."""

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from nnexp.engine import FullyConnected, Network, Softmax, products
from nnexp.engine.network import one_hot
from nnexp.engine.training import update


def factors(dtype, n=10, units=40, inputs=300, seed=0):
    """delta (n, units) and a (n, inputs) as backprop leaves them: delta C-ordered, a either way."""
    rng = np.random.default_rng(seed)
    delta = (rng.standard_normal((n, units)) * 0.01).astype(dtype)
    a = rng.random((n, inputs)).astype(dtype)
    return delta, a


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("order", ["C", "F"])  # a dense layer's input, or a conv layer's output rows
@pytest.mark.parametrize("n", [1, 10, 100])
def test_the_fused_step_is_the_step_computed_then_subtracted(dtype, order, n):
    """As numpy computes the product on one thread, as the fused step does (on two threads, numpy's
    products of some shapes differ in the last bits from its own on one)."""
    delta, a = factors(dtype, n)
    a = np.asarray(a, order=order)
    w = np.random.default_rng(1).standard_normal((delta.shape[1], a.shape[1])).astype(dtype)
    with threadpool_limits(limits=1, user_api="blas"):
        expected = w - delta.T @ a
    products.Product(delta.T, a).subtract_from(w)
    np.testing.assert_array_equal(w, expected)


def test_a_target_gemm_cannot_write_in_place_is_still_stepped():
    delta, a = factors("float64")
    w = np.asfortranarray(np.ones((delta.shape[1], a.shape[1])))
    products.Product(delta.T, a).subtract_from(w)
    np.testing.assert_array_equal(w, 1.0 - delta.T @ a)


def test_the_fused_step_holds_scipys_own_blas_to_one_thread_and_leaves_numpys():
    """PyPI's scipy and numpy each bundle an OpenBLAS: two pools of spinning threads taking turns
    made training six times as slow (``products``)."""
    delta, a = factors("float32")
    w = np.zeros((delta.shape[1], a.shape[1]), np.float32)
    scipys = {str(library.filepath) for library in products._blas()[1]}
    assert scipys and all("scipy" in Path(path).parent.name for path in scipys)  # PyPI's wheels, as here
    with threadpool_limits(limits=2, user_api="blas"):
        before = {info["filepath"]: info["num_threads"] for info in threadpool_info()}
        products.Product(delta.T, a).subtract_from(w)
        after = {info["filepath"]: info["num_threads"] for info in threadpool_info()}
    assert {path: after[path] for path in scipys} == dict.fromkeys(scipys, 1)
    assert {path: n for path, n in after.items() if path not in scipys} == {
        path: n for path, n in before.items() if path not in scipys
    }


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_fused_steps_trains_to_the_same_bits(momentum):
    """A layer past ``FUSED_FROM`` weights (2,000 x 64, softmax 10 not) takes fused steps in ``update``;
    the same steps written as the book's rule, with L2 and momentum, give the same weights."""
    nets = [
        Network(
            layers=[FullyConnected(2000), Softmax(10)],
            input_shape=(64,),
            cost="loglikelihood",
            regularizer="l2",
            lmbda=5.0,
            seed=3,
        )
        for _ in range(2)
    ]
    assert nets[0].weights[0].size >= products.FUSED_FROM > nets[0].weights[1].size
    fused, book = nets
    fused_v, book_v = ([np.zeros_like(p) for p in net.weights + net.biases] for net in nets)
    rng = np.random.default_rng(4)
    for _ in range(5):
        X, Y = rng.random((10, 64), dtype=np.float32), one_hot(rng.integers(0, 10, 10), 10, "float32")
        update(fused, X, Y, 0.5, 1000, momentum, fused_v if momentum else None)
        steps_w, steps_b = book.backprop(X, Y, scale=0.5)
        for w in book.weights:
            book.regularizer.decay(w, 0.5, 1000)
        for p, v, step in zip(book.weights + book.biases, book_v, steps_w + steps_b, strict=True):
            if momentum:
                v *= momentum
                v -= step
                p += v
            else:
                p -= step
    for ours, theirs in zip(fused.weights + fused.biases, book.weights + book.biases, strict=True):
        np.testing.assert_array_equal(ours, theirs)
