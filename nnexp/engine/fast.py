"""The compiled backend: the numpy backend's SGD steps, compiled with numba.

Why it exists: a mini-batch step of the numpy backend makes some twenty numpy calls, each 0.3-1 us of
dispatch and allocation, around the two 784-wide matrix products that are the real work (about 14 us
together at batch size 10): numpy's overhead, not the arithmetic, sets the pace. Here the loop over a
chunk's mini-batches is compiled, so no Python runs between the products. They are BLAS calls on
contiguous arrays (``np.dot``, and ``_gemm`` where the product goes straight into the weights), the
elementwise work is loops that make no temporaries, and the buffers are allocated once per chunk.

How it maps to the numpy reference, ``Network.backprop`` followed by ``training.update``, in the
order of ``_train_chunk``:

- ``_gather``: the numpy backend's gather of the mini-batch's rows;
- ``_hidden_layer``: ``a = activation.fn(z)`` and ``prime = activation.prime(a)``; then ``_drop``,
  the dropout masks on both;
- ``_output_error``: ``cost.output.fn(z)``, BP1 ``cost.delta(a, y)`` and ``delta *= eta / n``;
- BP2 with ``np.dot``, then each layer's step: ``_weight_step`` is BP4, ``regularizer.decay`` and
  ``w -= step`` (or momentum's ``v = mu v - step; w += v``) in one BLAS call; ``_bias_step`` is BP3
  and the biases' step.

The components are passed as codes, their index in ``ACTIVATIONS`` and ``COSTS``, each written out
below as a scalar function; the regularizers are two numbers (``regularization``). The random numbers
are not drawn here: the shuffle and the dropout masks come from the network's Generator in
``training.train_epoch``, exactly as for the numpy backend, so that both consume the same random
stream and a checkpoint resumes identically on either. The two agree to round-off, not to the bit:
the order of the sums in BLAS and the last bits of exp differ.

Every function is compiled with ``cache=True``, so that a new process loads the machine code from
``__pycache__`` (a third of a second, numba's import included) rather than compiling it (3 to 5 s per
kind of network), and ``error_model="numpy"``: a division by zero gives inf or NaN as in numpy
instead of raising, which leaves no test in the loops, so that the compiler can vectorize them.
Importing the module imports scipy's BLAS and registers its gemm with LLVM (see ``_blas_gemm``); it
compiles nothing until the first call.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import binding
from numba import types
from numba.extending import get_cython_function_address, overload

from nnexp.engine import components
from nnexp.engine.data import Split
from nnexp.engine.layers import FullyConnected
from nnexp.engine.network import Array, Network

Parameters = tuple[Array, ...]  # one array per layer (numba compiles a version per depth)

ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the activations, costs and regularizers compiled here
COSTS = ("quadratic", "crossentropy", "loglikelihood")
REGULARIZERS = ("none", "l2", "l1", "dropout", "l2_network3")
SIGMOID, TANH, RELU = range(len(ACTIVATIONS))
QUADRATIC, CROSSENTROPY, LOGLIKELIHOOD = range(len(COSTS))

# float32 constants: float32 arithmetic stays float32 with them, and float64 stays float64 (a float64
# literal such as 1.0 would turn every float32 operation into a float64 one).
ZERO, ONE = np.float32(0.0), np.float32(1.0)


def unsupported(net: Network) -> str | None:
    """Why this backend cannot train ``net``, or None: its layers must be fully connected ones, with
    one hidden activation and dropout (if any) on the output of every hidden layer, as a network given
    by sizes has them; each of its components must be compiled here, and its parameters C-contiguous
    arrays of its dtype (the compiled code updates them in place). A layer or component new to the
    engine trains on the numpy backend until it is written out here too."""
    for layer in net.layers:
        if not isinstance(layer, FullyConnected):
            return f"the numba backend has no {layer.kind} layer (it has: FullyConnected, Softmax)"
    if any(layer.activation is not net.activation for layer in net.layers[:-1]):
        return "the numba backend takes one activation for every hidden layer"
    if net.layers[0].dropout or len({layer.dropout > 0 for layer in net.layers[1:]}) > 1:
        return "the numba backend drops the output of every hidden layer or of none"
    for kind, name, compiled in (
        ("activation", net.activation.name, ACTIVATIONS),
        ("cost", net.cost.name, COSTS),
        ("regularizer", net.regularizer.name, REGULARIZERS),
    ):
        if name not in compiled:
            return f"the numba backend has no {kind} {name!r} (it has: {', '.join(compiled)})"
    for p in net.weights + net.biases:
        if not (p.flags.c_contiguous and p.dtype == net.dtype):
            return f"the numba backend trains C-contiguous {net.dtype} parameters in place"
    return None


def regularization(net: Network, eta: float, n: int) -> tuple[float, float]:
    """The regularizer's part of a step, w <- decay w - shrink sgn(w), as (decay, shrink); n is the n
    of its lmbda/n (``regularizer.divisor``)."""
    rate = eta * net.regularizer.lmbda / n
    decays, shrinks = isinstance(net.regularizer, components.L2), isinstance(net.regularizer, components.L1)
    return (1.0 - rate if decays else 1.0), (rate if shrinks else 0.0)


def train_chunk(
    net: Network,
    train: Split,
    rows: Array,
    masks: list[Array] | None,
    batch_size: int,
    eta: float,
    momentum: float,
    velocities: list[Array] | None,
) -> None:
    """``training.train_chunk``, compiled: SGD steps on the mini-batches cut in order from ``rows``."""
    depth = len(net.weights)
    decay, shrink = regularization(net, eta, net.regularizer.divisor(len(train.y), batch_size))
    _train_chunk(
        train.pixels,
        train.y,
        net.dtype.type(train.scale),
        rows,
        tuple(masks) if masks else None,
        tuple(net.weights),
        tuple(net.biases),
        None if velocities is None else tuple(velocities[:depth]),
        None if velocities is None else tuple(velocities[depth:]),
        batch_size,
        float(eta),
        float(momentum),
        decay,
        shrink,
        ACTIVATIONS.index(net.activation.name),
        COSTS.index(net.cost.name),
    )


@numba.njit(cache=True, error_model="numpy")
def _train_chunk(
    pixels: Array,
    y: Array,
    scale: float,
    rows: Array,
    masks: Parameters | None,
    weights: Parameters,
    biases: Parameters,
    w_velocities: Parameters | None,
    b_velocities: Parameters | None,
    batch_size: int,
    eta: float,
    momentum: float,
    decay: float,
    shrink: float,
    activation: int,
    cost: int,
) -> None:
    """``train_chunk``'s loop over the mini-batches. Compiled once per combination of dtype, depth,
    dropout or not and momentum or not (numba specializes on the types: None prunes its branches)."""
    depth = len(weights)
    dtype = weights[0].dtype
    momentum, decay, shrink = dtype.type(momentum), dtype.type(decay), dtype.type(shrink)
    # A batch's buffers, indexed as in backprop: a[l] feeds the layer of weights[l] (a[0] holds the
    # inputs), prime[l] and delta[l] are sigma'(z) (of a hidden layer) and the error of that layer's
    # output (delta[-1] first holds z^L).
    batch = min(batch_size, rows.size)
    a = [np.empty((batch, w.shape[1]), dtype) for w in weights]
    prime = [np.empty((batch, weights[l].shape[0]), dtype) for l in range(depth - 1)]
    delta = [np.empty((batch, w.shape[0]), dtype) for w in weights]
    labels = np.empty(batch, y.dtype)

    for start in range(0, rows.size, batch_size):
        n = min(batch_size, rows.size - start)
        _gather(pixels, y, scale, rows[start : start + n], a[0], labels)
        for l in range(depth - 1):  # forward through the hidden layers
            z = a[l + 1][:n]
            np.dot(a[l][:n], weights[l].T, z)  # (n, sizes[l]) @ (sizes[l], sizes[l+1])
            _hidden_layer(z, biases[l], prime[l][:n], activation)
            if masks is not None:
                _drop(z, prime[l][:n], masks[l][start : start + n])
        z = delta[depth - 1][:n]
        np.dot(a[depth - 1][:n], weights[depth - 1].T, z)
        _output_error(z, biases[depth - 1], labels, cost, dtype.type(eta / n))  # BP1, times eta / n
        for l in range(depth - 1, -1, -1):
            d = delta[l][:n]
            if l > 0:  # BP2, before weights[l] takes its step: (n, sizes[l+1]) @ (sizes[l+1], sizes[l])
                below = delta[l - 1][:n]
                np.dot(d, weights[l], below)
                below *= prime[l - 1][:n]
            _weight_step(weights[l], d, a[l][:n], w_velocities, l, momentum, decay, shrink)  # BP4
            _bias_step(biases[l], d, b_velocities, l, momentum)  # BP3


@numba.njit(cache=True, error_model="numpy")
def _gather(pixels: Array, y: Array, scale: float, rows: Array, x: Array, labels: Array) -> None:
    """The mini-batch: x[i] and labels[i] are the inputs (stored pixels times ``scale``) and the label
    of training example rows[i]. This explicit loop, with the row index held in a local (which the
    compiler then knows no store changes), runs twice as fast as ``x[i] = pixels[rows[i]] * scale``."""
    for i in range(rows.size):
        row = rows[i]
        labels[i] = y[row]
        for j in range(pixels.shape[1]):
            x[i, j] = pixels[row, j] * scale


# "contract" lets a * b + c be one fused multiply-add: the polynomial of expf takes a third less time.
@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _sigmoid(z: float) -> float:
    """1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0: as precise as scipy's expit (the numpy
    backend's 1 / (1 + e^-z) throughout), and e^-|z| never overflows."""
    e = _exp_nonpositive(-abs(z))
    return (ONE if z >= ZERO else e) / (ONE + e)


def _exp_nonpositive(x: float) -> float:
    """e^x for x <= 0, in compiled code (see the overload below)."""
    raise NotImplementedError


# Cephes' expf: e^x = 2^-k e^r with k the integer nearest -x / ln 2 and |r| <= ln(2) / 2, 2^-k from a
# table, e^r = 1 + r + r^2 p(r) with p the polynomial of coefficients _EXPF (highest degree first).
# Below x = -103.9, e^x underflows even as a subnormal float32.
_POW2 = np.ldexp(np.float32(1.0), -np.arange(151)).astype(np.float32)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # k * _LN2_HI is exact
_INV_LN2, _LOWEST, _HALF = np.float32(1.4426950408889634), np.float32(-103.9), np.float32(0.5)
_EXPF = tuple(
    np.float32(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 0.5)
)


@overload(_exp_nonpositive, inline="always")
def _exp_nonpositive_of(x):  # unannotated: numba matches its signature with the implementations
    """float64: libm's exp. float32: Cephes' expf, within an ulp or two like libm's expf, but written
    out so that the compiler vectorizes the loops that call it, which halves a sigmoid layer's time
    (a call to libm's expf per element cannot be vectorized)."""
    if x != types.float32:
        return lambda x: math.exp(x)

    def expf(x):
        x = _LOWEST if x < _LOWEST else x  # a NaN stays NaN, and makes a NaN
        k = np.int32(x * -_INV_LN2 + _HALF) if x == x else np.int32(0)  # (a NaN converts to no integer)
        r = x + np.float32(k) * _LN2_HI
        r = r + np.float32(k) * _LN2_LO
        c0, c1, c2, c3, c4, c5 = _EXPF
        p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
        return (p * (r * r) + r + ONE) * _POW2[k]

    return expf


@numba.njit(cache=True, error_model="numpy")
def _activate(activation: int, z: float) -> float:
    if activation == SIGMOID:
        return _sigmoid(z)
    if activation == TANH:
        return math.tanh(z)
    return ZERO if z <= ZERO else z  # ReLU; NaN passes through, as with np.maximum


@numba.njit(cache=True, error_model="numpy")
def _derivative(activation: int, a: float) -> float:
    """sigma'(z) written through a = sigma(z), as ``Activation.prime``."""
    if activation == SIGMOID:
        return (ONE - a) * a
    if activation == TANH:
        return ONE - a * a
    return ONE if a > ZERO else ZERO


@numba.njit(cache=True, error_model="numpy")
def _hidden_layer(z: Array, b: Array, prime: Array, activation: int) -> None:
    """z <- a = sigma(z + b) in place, and prime <- sigma'(z + b)."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            a = _activate(activation, z[i, j] + b[j])
            z[i, j] = a
            prime[i, j] = _derivative(activation, a)


@numba.njit(cache=True, error_model="numpy")
def _drop(a: Array, prime: Array, mask: Array) -> None:
    """Dropout: the masked units neither feed the next layer nor pass its error back."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] *= mask[i, j]
            prime[i, j] *= mask[i, j]


@numba.njit(cache=True, error_model="numpy")
def _output_error(z: Array, b: Array, labels: Array, cost: int, scale: float) -> None:
    """z <- scale * delta^L in place, from z^L - b: the output layer's activation (softmax for the
    log-likelihood, else sigmoid), then the cost's error against the one-hot labels."""
    units = z.shape[1]
    for i in range(z.shape[0]):
        if cost == LOGLIKELIHOOD:  # softmax, shifted by the largest z so that no exp overflows
            top = z[i, 0] + b[0]
            for j in range(1, units):
                top = max(top, z[i, j] + b[j])
            total = ZERO
            for j in range(units):
                z[i, j] = math.exp(z[i, j] + b[j] - top)
                total += z[i, j]
            for j in range(units):
                z[i, j] /= total
        else:
            for j in range(units):
                z[i, j] = _sigmoid(z[i, j] + b[j])
        for j in range(units):
            a = z[i, j]
            d = a - (ONE if j == labels[i] else ZERO)
            if cost == QUADRATIC:
                d *= (ONE - a) * a
            z[i, j] = d * scale


@numba.njit(cache=True, error_model="numpy")
def _weight_step(
    w: Array,
    delta: Array,
    a: Array,
    velocities: Parameters | None,
    l: int,
    momentum: float,
    decay: float,
    shrink: float,
) -> None:
    """w's SGD step in place, BP4's product made by BLAS straight into it: with ``delta`` carrying
    eta / n, delta.T @ a is eta dC/dw. Without momentum, w <- decay w - shrink sgn(w) - delta.T @ a
    (the regularizer's step first, as ``update`` takes it); with it, v <- mu v - delta.T @ a, then
    w <- decay w - shrink sgn(w) + v."""
    minus_one = w.dtype.type(-1.0)
    if velocities is None:
        if shrink:
            _shrink(w.ravel(), shrink)
        _gemm(minus_one, delta.T, a, decay, w)
    else:
        v = velocities[l]
        _gemm(minus_one, delta.T, a, momentum, v)
        w, v = w.ravel(), v.ravel()
        for i in range(w.size):
            w[i] = w[i] * decay - shrink * np.sign(w[i]) + v[i]


@numba.njit(cache=True, error_model="numpy")
def _shrink(w: Array, shrink: float) -> None:
    for i in range(w.size):
        w[i] -= shrink * np.sign(w[i])


@numba.njit(cache=True, error_model="numpy")
def _bias_step(b: Array, delta: Array, velocities: Parameters | None, l: int, momentum: float) -> None:
    """b's SGD step in place: BP3's column sums of ``delta`` are eta dC/db."""
    for j in range(b.size):
        step = delta[0, j]
        for i in range(1, delta.shape[0]):
            step += delta[i, j]
        if velocities is None:
            b[j] -= step
        else:
            v = velocities[l]
            v[j] = momentum * v[j] - step
            b[j] += v[j]


_BLAS_INT, _BLAS_CHAR = types.CPointer(types.intc), types.CPointer(types.uint8)  # LP64: C ints
_BLAS_INT_MAX = np.iinfo(np.intc).max
_AS_IS, _TRANSPOSED = ord("N"), ord("T")  # gemm's transa and transb


def _blas_gemm(routine: str, dtype: types.Type) -> types.ExternalFunction:
    """scipy's ``routine`` (sgemm or dgemm), declared for compiled code: gemm(transa, transb, m, n, k,
    alpha, a, lda, b, ldb, beta, c, ldc), every argument a pointer.

    Public APIs only, checked against numba 0.68.1, llvmlite 0.50.0 and scipy 1.17.1 (pyproject.toml
    pins numba, and with it llvmlite, to the minor version the tests cover): scipy's Cython BLAS, the
    one numba's own ``np.dot`` calls, its address from numba's ``get_cython_function_address``,
    registered with LLVM as ``nnexp_<routine>`` (``llvmlite.binding.add_symbol``) and declared as a
    ``types.ExternalFunction`` ("Calling C code from Numba" in numba's user guide). Not as a ctypes
    function object, as the guide has it for Cython functions: numba bakes that address into the
    machine code and caches no function that calls it, so each process would compile this module again
    (3 to 5 s). A symbol is resolved by name when compiled code is loaded, hence the registration on
    import: code loaded with the symbol unresolved crashes the process.

    It lives in this module rather than in one of its own because numba's cache does not notice a
    change to compiled code in another file (a documented limitation): the functions cached here would
    keep a stale copy of it, or call a symbol renamed since and crash."""
    symbol = f"nnexp_{routine}"
    binding.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", routine))
    real, n, c = types.CPointer(dtype), _BLAS_INT, _BLAS_CHAR
    return types.ExternalFunction(symbol, types.void(c, c, n, n, n, real, real, n, real, n, real, real, n))


_BLAS_GEMM = {
    types.float32: _blas_gemm("sgemm", types.float32),
    types.float64: _blas_gemm("dgemm", types.float64),
}


def _gemm(alpha: float, x: Array, y: Array, beta: float, out: Array) -> None:
    """out <- alpha x @ y + beta out, in one call of BLAS's gemm, in compiled code (see the overload).
    ``np.dot`` has no alpha or beta: with it, a step is a product into a buffer and then a pass
    subtracting the buffer, which makes an epoch of [784, 30, 10] at mini-batch 10 some 15% slower.

    x, y and out are 2-d arrays of one dtype, float32 or float64; x and y row- or column-major (a
    transposed array is column-major), out row-major, each with unit stride along a row or a column (a
    slice of leading rows is fine); out must not overlap x or y. Anything else raises ValueError
    rather than reach BLAS."""
    raise NotImplementedError


@overload(_gemm)
def _gemm_of(alpha, x, y, beta, out):  # unannotated: numba matches its signature with the implementation
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.dtype == out.dtype for a in (x, y, out)):
        return None  # numba then reports the types it was given
    blas = _BLAS_GEMM.get(out.dtype)
    if blas is None:
        return None
    # How BLAS reads each array: from its type when numba knows it C- or F-contiguous, which leaves
    # nothing to check at run time; from its strides, checked, for an array of any layout.
    layout_x, layout_y, layout_out = (_BLAS_LAYOUT.get(a.layout, _blas_layout) for a in (x, y, out))

    def gemm(alpha, x, y, beta, out):
        # BLAS is column-major, where a row-major (m, n) array is its (n, m) transpose: this asks it for
        # out.T = y.T @ x.T, as numba's np.dot does.
        m, k = x.shape
        n = y.shape[1]
        if y.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
            raise ValueError("_gemm: the shapes of x, y and out do not make out = x @ y")
        trans_y, ld_y = layout_y(y)
        trans_x, ld_x = layout_x(x)
        trans_out, ld_out = layout_out(out)
        if trans_out != _AS_IS or max(m, n, k, ld_y, ld_x, ld_out) > _BLAS_INT_MAX:
            raise ValueError("_gemm: out must be row-major, and the sizes fit in a C int")
        flags = np.empty(2, np.uint8)
        flags[0], flags[1] = trans_y, trans_x
        sizes = np.empty(6, np.intc)
        sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5] = n, m, k, ld_y, ld_x, ld_out
        scalars = np.empty(2, out.dtype)
        scalars[0], scalars[1] = alpha, beta
        blas(
            flags[0:].ctypes, flags[1:].ctypes, sizes[0:].ctypes, sizes[1:].ctypes, sizes[2:].ctypes,
            scalars[0:].ctypes, y.ctypes, sizes[3:].ctypes, x.ctypes, sizes[4:].ctypes,
            scalars[1:].ctypes, out.ctypes, sizes[5:].ctypes,
        )  # fmt: skip

    return gemm


@numba.njit(cache=True, error_model="numpy")
def _blas_layout(a: Array) -> tuple[int, int]:
    """How BLAS, column-major, reads the 2-d array ``a`` of any layout, from its strides: (as is, leading
    dimension) if ``a`` is row-major (BLAS sees a.T), (transposed, leading dimension) if column-major."""
    rows, cols = a.shape
    row_stride, col_stride = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    if a.strides[1] == a.itemsize and a.strides[0] % a.itemsize == 0 and max(1, cols) <= row_stride:
        return _AS_IS, row_stride
    if a.strides[0] == a.itemsize and a.strides[1] % a.itemsize == 0 and max(1, rows) <= col_stride:
        return _TRANSPOSED, col_stride
    raise ValueError("_gemm: an array is neither row- nor column-major with unit stride")


@numba.njit(cache=True, error_model="numpy", inline="always")
def _blas_layout_c(a: Array) -> tuple[int, int]:
    """``_blas_layout`` of an array numba types C-contiguous (BLAS wants a leading dimension of at
    least 1, even for an empty array)."""
    return _AS_IS, max(1, a.shape[1])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _blas_layout_f(a: Array) -> tuple[int, int]:
    """``_blas_layout`` of an array numba types F-contiguous."""
    return _TRANSPOSED, max(1, a.shape[0])


_BLAS_LAYOUT = {"C": _blas_layout_c, "F": _blas_layout_f}
