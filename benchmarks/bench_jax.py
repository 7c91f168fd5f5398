"""The engine's benchmark epoch written in JAX, for `make bench` when jax can be imported.

JAX is no dependency of nnexp (`pip install jax jaxlib` to run this part). It is here as a yardstick: a
compiler that sees the whole epoch. The network is the benchmark's (sigmoid layers, quadratic cost,
plain SGD, float32) and starts from the engine network's weights, and an epoch does what an epoch of
``sgd(..., monitor=("validation",))`` does: a fresh shuffle (drawn from the network's generator, so
the mini-batches are the engine's very ones and the accuracies can be compared), the mini-batches in
that order, then the validation accuracy. The training is jit-compiled as one ``lax.scan`` over the
mini-batches, each gathered from the shuffled indices inside the scan (faster here than gathering the
whole shuffled set first). XLA runs on one thread, as BLAS does in the benchmark.
"""

import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402  (after XLA_FLAGS, which it reads when imported)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _output(params, x):
    for w, b in params:
        x = jax.nn.sigmoid(x @ w.T + b)
    return x


def _cost(params, x, y):
    """The quadratic cost, averaged over the mini-batch, as the engine's cost="quadratic"."""
    return 0.5 * jnp.sum((_output(params, x) - y) ** 2) / x.shape[0]


def epoch_seconds(net, mnist, batch_size, eta, epochs) -> tuple[float, float]:
    """The best seconds of ``epochs`` epochs, compiled beforehand, from ``net``'s weights (which stay as
    they are) with the shuffles of its generator; and the validation accuracy at the end."""
    n, classes = mnist.train.X.shape[0], net.sizes[-1]
    X, Y = jnp.asarray(mnist.train.X), jnp.asarray(np.eye(classes, dtype=np.float32)[mnist.train.y])
    X_validation, y_validation = jnp.asarray(mnist.validation.X), jnp.asarray(mnist.validation.y)
    gradient = jax.grad(_cost)

    def train(params, order):
        def step(params, rows):
            grads = gradient(params, X[rows], Y[rows])
            return jax.tree.map(lambda p, g: p - eta * g, params, grads), None

        return jax.lax.scan(step, params, order.reshape(-1, batch_size))[0]

    def accuracy(params):
        return jnp.mean(jnp.argmax(_output(params, X_validation), axis=1) == y_validation)

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in zip(net.weights, net.biases, strict=True)]
    train = jax.jit(train).lower(params, jnp.arange(n)).compile()
    accuracy = jax.jit(accuracy).lower(params).compile()
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        params = train(params, jnp.asarray(net.rng.permutation(n)))
        validation_accuracy = float(accuracy(params))  # float() waits for the result
        seconds.append(time.perf_counter() - started)
    return min(seconds), validation_accuracy
