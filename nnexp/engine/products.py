"""A dense layer's weight gradient kept as its two factors, so that SGD subtracts it without storing it.

BP4 makes dC/dw^l of a dense layer the product delta^l.T @ a^{l-1}: for chapter 6's FC layer above a
conv layer, a (100, 2880) array made from a mini-batch of ten. Computing it into memory and then
subtracting it from the weights moves that many numbers twice more than the step needs, and pushes
the rest of the step out of the cache. BLAS's gemm (C <- alpha A B + beta C) does both at once, with
alpha = -1 and beta = 1: what the numba backend's compiled step does too (``fast._weight_step``),
here for the numpy backend, which imports no numba. (Sharing fast's compiled gemm would bring numba
into every numpy-backend process and close a circle of imports, layers -> products -> fast -> layers.)

gemm adds the product to C block by block along the inner dimension, the mini-batch. While the
mini-batch fits one block (OpenBLAS 0.3.30, this machine's Skylake-X kernels: up to 448 examples in
float32, 384 in float64) the fused step and ``target - x @ y`` computed on one thread are the same
numbers bit for bit; beyond, the last bits may differ, the same way every run.

numpy has no gemm with beta, so the call is scipy's BLAS wrapper (scipy is a dependency already, for
expit, and the numba backend's compiled steps call its BLAS too). That comes with two costs, paid
here:

- PyPI's scipy bundles an OpenBLAS of its own beside numpy's. Two thread pools taking turns, each
  spinning its threads while it waits for work, made a conv net's epoch six times as long when BLAS
  had both cores. So scipy's own BLAS, where it has one, is held to one thread in a process that
  takes fused steps. numpy's keeps its threads, and so does a library that is no file of scipy's
  own distribution (one that numpy and scipy share). Setting the limit around each call instead
  cost some 15 microseconds a call: OpenBLAS does more than store the number.
- The call costs more than numpy's, more than it saves on a layer whose step stays in the cache.
  Timed in training, epochs side by side: chapter 1's 784 x 30 layer took 8% longer fused, 784 x
  100 5% longer, 784 x 150 9% less time, 784 x 500 23% less, and chapter 6's row-2 network (its FC
  layer 2880 x 100) 5% less. Below ``FUSED_FROM`` weights the step is computed and then
  subtracted, as the book writes it.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

Array = np.ndarray

FUSED_FROM = 100_000  # weights: the break-even lies between 78,400 and 117,600 here


class Product:
    """x @ y, not yet computed."""

    def __init__(self, x: Array, y: Array):
        self.x, self.y = x, y

    def array(self) -> Array:
        return self.x @ self.y

    def subtract_from(self, target: Array) -> None:
        """target <- target - x @ y in one gemm. BLAS is column-major: target (m, n), C-ordered, is
        the column-major target.T (n, m), so the call computes target.T - y.T @ x.T into it."""
        gemms, scipys_own = _blas()
        for library in scipys_own:  # one thread: see the module's docstring
            if library.get_num_threads() != 1:
                library.set_num_threads(1)
        a, transpose_a = _column_major(self.y.T)
        b, transpose_b = _column_major(self.x.T)
        out = gemms[target.dtype](
            -1.0, a, b, 1.0, target.T, trans_a=transpose_a, trans_b=transpose_b, overwrite_c=True
        )
        if not np.shares_memory(out, target):  # gemm could not write in place: target is not C-ordered
            np.copyto(target, out.T)


@functools.cache
def _blas() -> tuple[dict[np.dtype, object], list]:
    """scipy's gemm for each dtype, and the BLAS libraries that are scipy's own: files of its
    distribution, as PyPI's wheels bundle them. Made on the first fused step: importing scipy.linalg
    would add 50 ms to every import of the engine."""
    from scipy.linalg import blas  # 50 ms: only in a process that takes a fused step

    gemms = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}
    libraries = {
        Path(lib.filepath).resolve(): lib
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers
    }
    names = {path.name for path in libraries}
    scipys = {f.locate().resolve() for f in importlib.metadata.files("scipy") or () if f.name in names}
    return gemms, [library for path, library in libraries.items() if path in scipys]


def _column_major(m: Array) -> tuple[Array, int]:
    """m as gemm takes it without a copy, and whether gemm is to transpose it: m itself if it is
    column-major (Fortran-ordered), else m.T, which is column-major when m is C-ordered."""
    return (m, 0) if m.flags.f_contiguous else (m.T, 1)


def evaluated(gradient: Array | Product | None) -> Array | None:
    """A gradient as an array, computing it if it is a ``Product``."""
    return gradient.array() if isinstance(gradient, Product) else gradient


def subtract(target: Array, step: Array | Product) -> None:
    """target <- target - step in place, in the product's gemm if the step is a large ``Product``."""
    if isinstance(step, Product) and target.size >= FUSED_FROM:
        step.subtract_from(target)
    else:
        target -= evaluated(step)
