"""Engine speed and memory on real MNIST: `make bench`.

Times one epoch end to end (training on 50,000 images, then evaluating validation and test) for the
vectorized engine and for the book's per-example reference, and the peak memory of a 30-epoch run.
The machine is noisy: each engine figure is the best of a few epochs, and ratios matter more than
seconds.
"""

import subprocess
import sys
import time

import numpy as np
from reference_network import ReferenceNetwork, as_column_pairs

from nnexp.engine import Network, data, sgd

REPEATS = 3


def engine_epoch(mnist, sizes, batch_size, dtype):
    """Best-of-REPEATS seconds for one epoch, training plus evaluation of validation and test."""
    net = Network(sizes, cost="quadratic", seed=0, dtype=dtype)
    history = sgd(net, mnist, epochs=REPEATS, batch_size=batch_size, eta=3.0, monitor=("validation", "test"))
    return min(m["epoch_seconds"] for m in history), history[-1]["test_accuracy"]


def reference_epoch(mnist, sizes, batch_size):
    net = ReferenceNetwork(sizes)
    train = as_column_pairs(mnist.train, one_hot_targets=True)
    validation, test = (as_column_pairs(s, one_hot_targets=False) for s in (mnist.validation, mnist.test))
    started = time.perf_counter()
    net.sgd_epoch(train, batch_size, 3.0)
    net.evaluate(validation)
    correct = net.evaluate(test)
    return time.perf_counter() - started, correct / len(test)


def peak_memory_of_30_epochs(dtype):
    """Peak resident memory (MB) of a fresh process that loads MNIST and trains 30 epochs, monitoring
    all three splits as the harness does. The child reads its own high-water mark (VmHWM): getrusage
    would carry this large process's peak into the child through fork and exec."""
    code = (
        "from nnexp.engine import Network, data, sgd; "
        f"m = data.load(dtype='{dtype}'); "
        f"sgd(Network([784, 30, 10], dtype='{dtype}'), m, epochs=30, batch_size=10, eta=0.5); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out) / 1024, time.perf_counter() - started


def main():
    print(f"numpy {np.__version__}; engine figures are the best of {REPEATS} epochs\n")
    datasets = {dtype: data.load(dtype=dtype) for dtype in ("float32", "float64")}
    print(f"{'net':<14}{'batch':>6}{'dtype':>9}{'s/epoch':>10}{'test acc':>10}{'vs reference':>14}")
    for sizes in ([784, 30, 10], [784, 100, 10]):
        reference, ref_accuracy = reference_epoch(datasets["float32"], sizes, 10)
        print(f"{sizes!s:<14}{10:>6}{'book':>9}{reference:>10.3f}{ref_accuracy:>10.4f}{'1.0x':>14}")
        for batch_size in (10, 100):
            for dtype, mnist in datasets.items():
                seconds, accuracy = engine_epoch(mnist, sizes, batch_size, dtype)
                print(
                    f"{sizes!s:<14}{batch_size:>6}{dtype:>9}{seconds:>10.3f}{accuracy:>10.4f}"
                    f"{reference / seconds:>13.1f}x"
                )
    del datasets
    for dtype in ("float32", "float64"):
        peak, seconds = peak_memory_of_30_epochs(dtype)
        print(f"\n30 epochs of [784, 30, 10], batch 10, {dtype}: peak memory {peak:.0f} MB, {seconds:.1f} s")


if __name__ == "__main__":
    main()
