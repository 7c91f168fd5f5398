"""The book's network.py, one example at a time: the reference the vectorized engine is timed against.

Written the way chapter 1 writes it: column vectors, one call of ``backprop`` per training example,
the gradients summed over the mini-batch in Python. ``make bench`` times the engine against it, and
tests/test_reference.py checks that the engine takes its very steps. ``update_mini_batch_matrix`` is
chapter 2's matrix form of the same step, for ``reference_spread.py``'s hundreds of epochs.
"""

import itertools

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class ReferenceNetwork:
    """``init="large"`` is chapter 1's network.py: weights and biases N(0, 1). ``"scaled"`` is chapter
    3's default_weight_initializer: weights N(0, 1/n_in), biases N(0, 1)."""

    def __init__(self, sizes, seed=0, init="scaled"):
        if init not in ("large", "scaled"):
            raise ValueError(f"unknown init {init!r} (accepted: large, scaled)")
        rng = np.random.default_rng(seed)
        self.num_layers = len(sizes)
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
        scale = {"large": lambda x: 1.0, "scaled": np.sqrt}[init]
        self.weights = [rng.standard_normal((y, x)) / scale(x) for x, y in itertools.pairwise(sizes)]
        self.rng = rng

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def sgd_epoch(self, training_data, mini_batch_size, eta, matrix=False):
        update = self.update_mini_batch_matrix if matrix else self.update_mini_batch
        self.rng.shuffle(training_data)
        for k in range(0, len(training_data), mini_batch_size):
            update(training_data[k : k + mini_batch_size], eta)

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def update_mini_batch_matrix(self, mini_batch, eta):
        """The same step, the mini-batch's examples the columns of one matrix: chapter 2's "fully
        matrix-based approach". Its sums over the examples run inside the matrix products, in another
        order than update_mini_batch's loop; otherwise the arithmetic is the same, several times as
        fast."""
        xs = np.hstack([x for x, _ in mini_batch])
        ys = np.hstack([y for _, y in mini_batch])
        activations = [xs]
        zs = []
        for b, w in zip(self.biases, self.weights):
            zs.append(np.dot(w, activations[-1]) + b)
            activations.append(sigmoid(zs[-1]))
        delta = (activations[-1] - ys) * sigmoid_prime(zs[-1])
        nabla_b = [delta.sum(axis=1, keepdims=True)]
        nabla_w = [np.dot(delta, activations[-2].transpose())]
        for l in range(2, self.num_layers):
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sigmoid_prime(zs[-l])
            nabla_b.insert(0, delta.sum(axis=1, keepdims=True))
            nabla_w.insert(0, np.dot(delta, activations[-l - 1].transpose()))
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def evaluate(self, test_data):
        return sum(int(np.argmax(self.feedforward(x)) == y) for x, y in test_data)


def as_column_pairs(split, one_hot_targets):
    """The book's data format: a list of (x, y) with x a (784, 1) column, y a one-hot column or a label."""
    xs = split.X.reshape(-1, split.X.shape[1], 1)
    if not one_hot_targets:
        return list(zip(xs, split.y))
    ys = np.eye(10)[split.y].reshape(-1, 10, 1)
    return list(zip(xs, ys))
