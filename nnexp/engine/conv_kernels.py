"""The conv-pool layer's three loops that numpy has no single call for, compiled with numba.

Max-pooling with a note of where each maximum was, its backward pass (each block's error to that
position), and "col2im" (each input position collecting the error of every unfolded column it was
copied into). In numpy each took several passes over the maps, or one call per kernel offset; here
each is one pass, 1.4 to 2.8 times as fast at mini-batch 10 (each timed alone), which takes about a
tenth off an epoch of chapter 6's two-conv-layer network. The layer's matrix products stay numpy's
(BLAS). The results are bit for bit the numpy versions': the same comparisons and the same additions
in the same order.

Maps are laid out as the layer keeps them, (channels, height, width, n), examples last; the loops
run over the examples innermost, where the memory is contiguous. Compiled on first use for each
dtype, and cached in ``__pycache__`` for the next process (``cache=True``); ``error_model="numpy"``
leaves the loops free of checks, as in ``fast``.
"""

from __future__ import annotations

import numba
import numpy as np

Array = np.ndarray


@numba.njit(cache=True, error_model="numpy")
def max_pool(z: Array, p: int, out: Array, where: Array) -> None:
    """The maximum of each p x p block of the maps z ``(f, pP, pQ, n)`` into out ``(f, P, Q, n)``, and
    in where ``(f, P, Q, n)`` (uint8) its place in the block, r p + c for row r and column c. Of
    several equal maxima, the first scanning the block column by column; a NaN wins (as in
    ``np.maximum``), so that a diverging run is seen to diverge."""
    f, P, Q, n = out.shape
    for a in range(f):
        for j in range(P):
            for i in range(Q):
                for e in range(n):
                    out[a, j, i, e] = z[a, j * p, i * p, e]
                    where[a, j, i, e] = 0
                for c in range(p):
                    for r in range(p):
                        if r or c:
                            for e in range(n):  # no branch: the compiler vectorizes it
                                v, best = z[a, j * p + r, i * p + c, e], out[a, j, i, e]
                                take = (v > best) | ((v != v) & (best == best))
                                out[a, j, i, e] = v if take else best
                                where[a, j, i, e] = r * p + c if take else where[a, j, i, e]


@numba.njit(cache=True, error_model="numpy")
def route_to_max(d: Array, where: Array, p: int, dz: Array) -> None:
    """``max_pool`` backward: the error d ``(f, P, Q, n)`` of each block's maximum goes to the place
    ``where`` holds, 0 to the rest of the block, into dz ``(f, pP, pQ, n)``."""
    f, P, Q, n = d.shape
    for a in range(f):
        for j in range(P):
            for i in range(Q):
                for c in range(p):
                    for r in range(p):
                        place = r * p + c
                        for e in range(n):
                            hit = where[a, j, i, e] == place
                            dz[a, j * p + r, i * p + c, e] = d[a, j, i, e] if hit else 0


@numba.njit(cache=True, error_model="numpy")
def col2im(d_columns: Array, below: Array) -> None:
    """The error of the layer's input, below ``(c, H, W, n)``, from that of its unfolded columns,
    d_columns ``(c, k, k, pP, pQ, n)``: input position (y, x) sums the entries of every kernel offset
    (l, m) whose column copied it, y = l + j and x = m + i, offset after offset."""
    c, k, _, height, width, n = d_columns.shape
    below[:] = 0
    for channel in range(c):
        for l in range(k):
            for m in range(k):
                for j in range(height):
                    for i in range(width):
                        for e in range(n):
                            below[channel, l + j, m + i, e] += d_columns[channel, l, m, j, i, e]
