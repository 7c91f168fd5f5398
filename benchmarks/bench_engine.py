"""Engine speed and memory on real MNIST: `make bench`.

Times an epoch (a fresh shuffle, training on the 50,000 images, then the validation accuracy) of the
book's chapter 1 network (sigmoid neurons, quadratic cost, eta 3.0) for each backend of the engine,
side by side with:

- the epoch's matrix-product floor: the two 784-wide products of every mini-batch, the forward
  ``a @ w.T`` and the gradient ``delta.T @ a``, timed alone in this same run (same shapes, same dtype);
  no implementation of the epoch can take less;
- the book's per-example network.py (reference_network.py);
- the same epoch in JAX, jit-compiled as one ``lax.scan``, when jax can be imported (bench_jax.py).

Then what the compiled backend costs a fresh process (importing the engine, compiling or loading the
compiled code), and the peak memory of a default 30-epoch run.

Everything runs on one core, as the harness trains (a sweep runs a job per core): BLAS on one thread,
and the process pinned to one CPU, without which XLA's threads take half as long again. The machine
is shared with other work and noisy: each figure is the best of REPEATS in this one run, and the
ratios matter more than the seconds.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
from reference_network import ReferenceNetwork, as_column_pairs
from threadpoolctl import threadpool_limits

from nnexp.engine import Network, data, sgd

REPEATS = 5
ETA = 3.0
CASES = (([784, 30, 10], 10), ([784, 100, 10], 100))  # (sizes, mini-batch size)
BACKENDS = ("numpy", "numba")
HAS_JAX = importlib.util.find_spec("jax") is not None


def best_of(run) -> float:
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def floor_seconds(X: np.ndarray, hidden: int, batch_size: int) -> float:
    """The two 784-wide products of an epoch's mini-batches alone, into preallocated outputs."""
    w = np.random.default_rng(0).standard_normal((hidden, X.shape[1])).astype(X.dtype) / 28
    z, gradient = np.empty((batch_size, hidden), X.dtype), np.empty_like(w)

    def epoch():
        for k in range(0, X.shape[0], batch_size):
            a = X[k : k + batch_size]
            np.matmul(a, w.T, out=z)  # forward
            np.matmul(z.T, a, out=gradient)  # gradient (z stands in for delta: the same shape)

    return best_of(epoch)


def network(sizes, dtype):
    return Network(sizes, cost="quadratic", seed=0, dtype=dtype)


def engine_epoch(mnist, sizes, batch_size, dtype, backend) -> tuple[float, float]:
    """Best-of-REPEATS seconds of an epoch, and the validation accuracy after the last."""
    history = sgd(
        network(sizes, dtype),
        mnist,
        epochs=REPEATS,
        batch_size=batch_size,
        eta=ETA,
        monitor=("validation",),
        backend=backend,
    )
    return min(m["epoch_seconds"] for m in history), history[-1]["validation_accuracy"]


def reference_epoch(mnist, sizes, batch_size) -> tuple[float, float]:
    net = ReferenceNetwork(sizes)
    train = as_column_pairs(mnist.train, one_hot_targets=True)
    validation = as_column_pairs(mnist.validation, one_hot_targets=False)
    started = time.perf_counter()
    net.sgd_epoch(train, batch_size, ETA)
    correct = net.evaluate(validation)
    return time.perf_counter() - started, correct / len(validation)


def jax_epoch(mnist, sizes, batch_size) -> tuple[float, float]:
    import bench_jax  # imports jax: only when it is there

    return bench_jax.epoch_seconds(network(sizes, "float32"), mnist, batch_size, ETA, REPEATS)


def speed(mnist, sizes, batch_size, dtype):
    """One table: each way of running the epoch, its seconds, and their ratio to the floor (and to
    JAX's, when there is one)."""
    floor = floor_seconds(mnist.train.X, sizes[1], batch_size)
    rows = [("matrix products alone (floor)", floor, None)]
    if dtype == "float32":
        rows.append(("book's network.py, per example", *reference_epoch(mnist, sizes, batch_size)))
    rows += [(f"engine, backend={b}", *engine_epoch(mnist, sizes, batch_size, dtype, b)) for b in BACKENDS]
    jax = jax_epoch(mnist, sizes, batch_size) if dtype == "float32" and HAS_JAX else None
    if jax is not None:
        rows.append(("jax, jit-compiled lax.scan", *jax))
    print(f"\n{sizes}, mini-batch {batch_size}, {dtype}")
    print(f"  {'':<32}{'s/epoch':>9}{'x floor':>9}{'x jax' if jax else '':>9}{'val acc':>9}")
    for name, seconds, accuracy in rows:
        versus_jax = f"{seconds / jax[0]:>8.2f}x" if jax else ""
        shown = "" if accuracy is None else f"{accuracy:>9.4f}"
        print(f"  {name:<32}{seconds:>9.3f}{seconds / floor:>8.2f}x{versus_jax:>9}{shown}")


def child(code: str, **env) -> tuple[str, float]:
    """Run ``code`` in a fresh interpreter: (its output, its wall-clock seconds)."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env={**os.environ, **env}
    ).stdout
    return out, time.perf_counter() - started


def start_up():
    """What a fresh process pays before its first epoch: importing the engine, and making the
    compiled backend (importing numba, then compiling its code, or loading it from the cache)."""
    imports = min(
        float(child("import time; t = time.perf_counter(); from nnexp.engine import Network, load, sgd; "
                    "print(time.perf_counter() - t)")[0])
        for _ in range(3)
    )  # fmt: skip
    first_call = (
        "import time; from nnexp.engine import Network, data, sgd; d = data.load('digits'); "
        "net = Network([64, 30, 10]); t = time.perf_counter(); "
        "h = sgd(net, d, epochs=1, batch_size=10, eta=0.5, backend='numba'); "
        "print(time.perf_counter() - t - h[0]['epoch_seconds'])"
    )
    print(f"\nstart-up, fresh processes: `from nnexp.engine import Network, load, sgd` {imports:.2f} s")
    with tempfile.TemporaryDirectory() as cache:  # an empty numba cache, then the one it filled
        compiling = float(child(first_call, NUMBA_CACHE_DIR=cache)[0])
        loading = min(float(child(first_call, NUMBA_CACHE_DIR=cache)[0]) for _ in range(3))
    print(
        f"  numba backend before its first epoch: {compiling:.2f} s compiling, {loading:.2f} s from the cache"
    )


def peak_memory_of_30_epochs(dtype, backend):
    """Peak resident memory (MB) of a fresh process that loads MNIST and trains 30 epochs, monitoring
    all three splits as the harness does. The child reads its own high-water mark (VmHWM): getrusage
    would carry this large process's peak into the child through fork and exec."""
    out, seconds = child(
        "from nnexp.engine import Network, data, sgd; "
        f"m = data.load(dtype='{dtype}'); net = Network([784, 30, 10], dtype='{dtype}'); "
        f"sgd(net, m, epochs=30, batch_size=10, eta=0.5, backend='{backend}'); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    return float(out) / 1024, seconds


def main():
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    threadpool_limits(1)
    jax = "jax not installed" if not HAS_JAX else f"jax {importlib.import_module('jax').__version__}"
    print(f"numpy {np.__version__}, numba {numba.__version__}, {jax}; figures are the best of {REPEATS}")
    print("an epoch: a fresh shuffle, training on 50,000 images, validation accuracy on 10,000")
    for dtype in ("float32", "float64"):
        mnist = data.load(dtype=dtype)
        for sizes, batch_size in CASES:
            speed(mnist, sizes, batch_size, dtype)
        del mnist
    start_up()
    print()
    for dtype, backend in (("float32", "auto"), ("float32", "numpy"), ("float64", "auto")):
        peak, seconds = peak_memory_of_30_epochs(dtype, backend)
        print(
            f"30 epochs of [784, 30, 10], mini-batch 10, {dtype}, backend={backend}: "
            f"peak memory {peak:.0f} MB, {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
