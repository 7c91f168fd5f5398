"""Engine speed and memory on real MNIST: `make bench`.

Times an epoch (a fresh shuffle, training on the 50,000 images, then the validation accuracy) of the
book's chapter 1 network (sigmoid neurons, quadratic cost, eta 3.0) for each backend of the engine,
side by side with:

- the epoch's matrix-product floor: the two 784-wide products of every mini-batch, the forward
  ``a @ w.T`` and the gradient ``delta.T @ a``, timed alone in this same run (same shapes, same dtype);
  no implementation of the epoch can take less;
- the book's per-example network.py (reference_network.py);
- the same epoch in JAX, jit-compiled as one ``lax.scan``, when jax can be imported (bench_jax.py).

Then chapter 6's conv nets (sigmoid, the log-likelihood, mini-batch 10, float32): seconds per training
epoch of 50,000 images, for one conv-pool layer (20 filters 5x5, 2x2 pooling; FC 100; softmax 10) and
for two (+ 40 filters), side by side with the epoch's own matrix-product floor (every product of the
engine's steps, same shapes and layouts, timed alone) and with PyTorch eager when torch can be
imported (bench_torch.py). Each is timed on short epochs of the first CONV_IMAGES images, taken in
turns (floor, engine, torch, floor, ...) CONV_ROUNDS times so that all see the same load, and the
best of each is scaled to 50,000 images. These are the process's CPU seconds (all on one thread): on
a machine shared with other work the wall clock also counts the waits for a core, which made it vary
threefold from run to run here; the CPU time is what an idle core takes (cache and memory bandwidth
still shared). Even so the machine's speed drifts: for the one-conv-layer net, the ratio of two
bests, each from whichever round was quickest for it, moved from 1.93 to 2.18 over four runs of the
same code. The ratios shown are instead the median over the rounds of each round's own ratio, the
epochs of a round timed one after the other under the same load: 1.94 to 1.97 over the same runs.

Then what the compiled backend costs a fresh process (importing the engine, compiling or loading the
compiled code), and the peak memory of a default 30-epoch run.

Everything runs on one core, as the harness trains (a sweep runs a job per core): BLAS on one thread,
and the process pinned to one CPU, without which XLA's threads take half as long again. The machine
is shared with other work and noisy: each figure is the best of REPEATS in this one run, and the
ratios matter more than the seconds.
"""

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numba
import numpy as np
from reference_network import ReferenceNetwork, as_column_pairs
from threadpoolctl import threadpool_limits

from nnexp.engine import ConvPool, FullyConnected, Network, Softmax, data, sgd
from nnexp.engine.training import TrainingState

REPEATS = 5
ETA = 3.0
CASES = (([784, 30, 10], 10), ([784, 100, 10], 100))  # (sizes, mini-batch size)
BACKENDS = ("numpy", "numba")
HAS_JAX = importlib.util.find_spec("jax") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
CONV_IMAGES = 1_000  # an epoch of chapter 6's nets is timed on this many images, then scaled to 50,000
CONV_ROUNDS = 25
CONV_ETA = 0.1  # the book's rows 2 and 3
CONV_CASES = {
    "conv1": [ConvPool(20, kernel=5, pool=2)],
    "conv2": [ConvPool(20, kernel=5, pool=2), ConvPool(40, kernel=5, pool=2)],
}
# wall-clock seconds per 50,000-image epoch measured on this machine before the engine had conv layers
# (issue 17): a plain numpy version (sliding_window_view, one product per layer, pooling by reshape)
# and PyTorch 2.13 eager
CONV_MEASURED = {"conv1": (29.0, 18.8), "conv2": (52.5, 30.5)}


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


def conv_network(convs) -> Network:
    """Chapter 6's network of rows 2 (one conv-pool layer) and 3 (two), sigmoid, as the book trains it."""
    layers = [*convs, FullyConnected(100), Softmax(10)]
    return Network(layers=layers, input_shape=(1, 28, 28), cost="loglikelihood", seed=0)


def conv_products(net: Network, batch_size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x, y, out) for every matrix product of one of the engine's mini-batch steps on ``net``, in its
    shapes and memory layouts: each layer's forward product, its weight gradient, and (above the
    first layer) the error it passes down. A conv layer's products run over its unfolded columns, one
    per convolved position that pooling covers and example; a dense layer above a conv layer gets its
    rows as the transpose of the conv layer's (units, n) output."""
    rng = np.random.default_rng(0)

    def array(*shape):
        return rng.random(shape, dtype=np.float32)

    products = []
    for l, layer in enumerate(net.layers):
        if isinstance(layer, ConvPool):
            _, pooled_height, pooled_width = layer.out_shape
            positions = pooled_height * pooled_width * layer.pool**2 * batch_size
            w, columns, dz = (
                array(layer.filters, layer.fan_in),
                array(layer.fan_in, positions),
                array(layer.filters, positions),
            )
            pairs = [(w, columns), (dz, columns.T)] + ([(w.T, dz)] if l else [])
        else:
            below_conv = l > 0 and isinstance(net.layers[l - 1], ConvPool)
            a = array(layer.n_in, batch_size).T if below_conv else array(batch_size, layer.n_in)
            w, delta = array(layer.units, layer.n_in), array(batch_size, layer.units)
            pairs = [(a, w.T), (delta.T, a)] + ([(delta, w)] if l else [])
        products += [(x, y, np.empty((x.shape[0], y.shape[1]), np.float32)) for x, y in pairs]
    return products


def conv_floor(net: Network, images: int, batch_size: int) -> Callable[[], float]:
    """A function timing the matrix products of an epoch of ``images`` alone, into preallocated outputs."""
    products = conv_products(net, batch_size)

    def epoch() -> float:
        started = time.process_time()
        for _ in range(images // batch_size):
            for x, y, out in products:
                np.matmul(x, y, out=out)
        return time.process_time() - started

    return epoch


def conv_engine(net: Network, train: data.Dataset, batch_size: int) -> Callable[[], float]:
    """A function training ``net`` one more epoch (``sgd``, numpy for conv layers) and timing it."""
    state = TrainingState()

    def epoch() -> float:
        started = time.process_time()
        sgd(net, train, state.epoch + 1, batch_size, CONV_ETA, monitor=(), state=state)
        return time.process_time() - started

    return epoch


def conv_speed(name: str, convs) -> None:
    """One table: seconds per 50,000-image training epoch of the engine, the floor and PyTorch eager."""
    train = data.load("mnist", train_size=CONV_IMAGES)
    contenders = {
        "matrix products alone (floor)": conv_floor(conv_network(convs), CONV_IMAGES, 10),
        "engine (numpy)": conv_engine(conv_network(convs), train, 10),
    }
    if HAS_TORCH:
        import bench_torch  # imports torch: only when it is there

        contenders["pytorch eager"] = bench_torch.trainer(conv_network(convs), train.train, 10, CONV_ETA)
    seconds = {what: [] for what in contenders}
    for _ in range(CONV_ROUNDS):
        for what, epoch in contenders.items():
            seconds[what].append(epoch() * 50_000 / CONV_IMAGES)
    floors = seconds["matrix products alone (floor)"]
    numpy_before, torch_before = CONV_MEASURED[name]
    print(
        f"\n{name}: {' + '.join(f'conv-pool {c.filters}' for c in convs)}, FC 100, softmax 10; sigmoid, "
        f"mini-batch 10, float32; CPU s per 50,000-image training epoch (best of {CONV_ROUNDS}, "
        f"{CONV_IMAGES:,} images each), and its ratio to the floor (the median of the rounds' ratios)"
    )
    print(f"  {'':<32}{'s/epoch':>9}{'x floor':>9}")
    for what, times in seconds.items():
        ratio = statistics.median(t / floor for t, floor in zip(times, floors, strict=True))
        print(f"  {what:<32}{min(times):>9.2f}{ratio:>8.2f}x")
    print(f"  before, wall clock: plain numpy {numpy_before} s, pytorch 2.13 eager {torch_before} s")


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


def main(sections):
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    threadpool_limits(1)
    versions = [f"numpy {np.__version__}", f"numba {numba.__version__}"]
    for name, present in (("jax", HAS_JAX), ("torch", HAS_TORCH)):
        versions.append(
            f"{name} {importlib.import_module(name).__version__}" if present else f"{name} not installed"
        )
    print(f"{', '.join(versions)}; figures are the best of {REPEATS}")
    if "dense" in sections:
        print("an epoch: a fresh shuffle, training on 50,000 images, validation accuracy on 10,000")
        for dtype in ("float32", "float64"):
            mnist = data.load(dtype=dtype)
            for sizes, batch_size in CASES:
                speed(mnist, sizes, batch_size, dtype)
            del mnist
    if "conv" in sections:
        for name, convs in CONV_CASES.items():
            conv_speed(name, convs)
    if "start-up" in sections:
        start_up()
    if "memory" in sections:
        print()
        for dtype, backend in (("float32", "auto"), ("float32", "numpy"), ("float64", "auto")):
            peak, seconds = peak_memory_of_30_epochs(dtype, backend)
            print(
                f"30 epochs of [784, 30, 10], mini-batch 10, {dtype}, backend={backend}: "
                f"peak memory {peak:.0f} MB, {seconds:.1f} s"
            )


SECTIONS = ("dense", "conv", "start-up", "memory")

if __name__ == "__main__":
    chosen = sys.argv[1:] or SECTIONS  # e.g. `python bench_engine.py conv`
    if unknown := set(chosen) - set(SECTIONS):
        sys.exit(f"unknown section {sorted(unknown)[0]!r} (accepted: {', '.join(SECTIONS)})")
    main(chosen)
