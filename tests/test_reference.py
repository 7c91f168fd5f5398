"""The vectorized engine takes the very steps of the book's per-example network.py.

Same initial weights, same mini-batches in the same order: after an epoch on real MNIST images the two
networks hold the same weights. So where a reproduction differs from the book, the cause is the run
(its seed), not the engine's arithmetic.
"""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from nnexp.engine import Network, data, sgd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_network import ReferenceNetwork, as_column_pairs

pytestmark = pytest.mark.mnist


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_epoch_matches_the_books_algorithm_step_for_step(backend):
    mnist = data.load("mnist", train_size=1000, dtype="float64")
    net = Network([784, 100, 10], cost="quadratic", init="large", seed=7, dtype="float64")
    book = ReferenceNetwork([784, 100, 10])
    book.weights = [w.copy() for w in net.weights]
    book.biases = [b.reshape(-1, 1).copy() for b in net.biases]
    order = copy.deepcopy(net.rng).permutation(1000)  # the shuffle sgd is about to draw

    sgd(net, mnist, epochs=1, batch_size=10, eta=3.0, monitor=("test",), backend=backend)
    pairs = as_column_pairs(mnist.train, one_hot_targets=True)
    for k in range(0, 1000, 10):
        book.update_mini_batch([pairs[i] for i in order[k : k + 10]], 3.0)

    for ours, theirs in zip(net.weights, book.weights, strict=False):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    for ours, theirs in zip(net.biases, book.biases, strict=False):
        np.testing.assert_allclose(ours, theirs[:, 0], rtol=1e-9, atol=1e-12)
    assert not np.allclose(
        net.weights[0], Network([784, 100, 10], init="large", seed=7, dtype="float64").weights[0]
    )
