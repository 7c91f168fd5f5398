"""The layers of a network, each one class with its forward pass and its backward pass side by side,
as network3.py (the book's chapter 6) and micrograd write them: a fully connected layer, the softmax
output layer, and chapter 6's convolution with max-pooling.

A ``Network`` passes every layer's input and output as rows, one example per row, shaped ``(n,
units)``, and keeps the parameters itself (``net.weights``, ``net.biases``): a layer is handed its
weights w and biases b with each call. The contract, for a batch of n examples:

- ``forward(a, w, b, keep)`` takes the layer's input a ``(n, n_in)`` and returns its output
  ``(n, units)``; with ``keep`` it also returns sigma'(z) shaped like the output (the factor BP2
  multiplies by) and keeps what ``backward`` needs;
- ``backward(delta, w, error, weights)`` takes the layer's error delta = dC/dz ``(n, units)`` and
  returns dC/dw, dC/db and, if ``error``, dC/da of its input ``(n, n_in)``: the network multiplies
  that by the layer below's sigma'(z) to get the layer below's delta (BP2). Without ``weights`` it
  skips dC/dw (chapter 5's speed of learning needs dC/db alone). A dense layer's dC/dw is left as
  the ``products.Product`` of its two factors, which SGD subtracts from w without storing it.

The network divides delta^L by n once, so every delta here carries the 1/n of the mean and the
gradients are plain sums. Which activation a layer applies (its own ``activation=``, the network's,
or the cost's output for the last layer) is settled when the network ``connect``s it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnexp.engine import components
from nnexp.engine.components import Activation
from nnexp.engine.products import Product

Array = np.ndarray


def _count(kind: str, name: str, value: object, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"invalid {kind} {name}={value!r}: accepted an integer >= {least}")
    return int(value)


def _probability(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"invalid {kind} dropout={value!r}: accepted a probability in [0, 1)")
    return float(value)


def _activation_name(kind: str, value: object) -> str | None:
    if value is not None:
        components.get(components.ACTIVATIONS, f"{kind} activation", value)
    return value


class FullyConnected:
    """A layer whose every neuron takes every input: z = a w^T + b, output sigma(z) (chapters 1-3).

    ``dropout=p`` drops each of the layer's *inputs* with probability p while training, as network3
    does (the network draws the masks: ``Network.dropout_masks``). Shapes: w ``(units, n_in)``, as in
    the book, b ``(units,)``.
    """

    kind = "FullyConnected"

    def __init__(self, units: int, activation: str | None = None, dropout: float = 0.0):
        self.units = _count(self.kind, "units", units)
        self.activation_name = _activation_name(self.kind, activation)
        self.dropout = _probability(self.kind, dropout)

    def spec(self) -> dict:
        """What rebuilds this layer (``layer_of``): how a saved network records its layers."""
        return {
            "kind": self.kind,
            "units": self.units,
            "activation": self.activation_name,
            "dropout": self.dropout,
        }

    def connect(
        self, in_shape: tuple[int, ...], activation: type[Activation], output: bool = False
    ) -> tuple[int, ...]:
        """Fit the layer to inputs of ``in_shape`` (maps are flattened, channel by channel, as
        network3 flattens them) and to its activation (the cost's output layer's, if ``output``: its
        sigma' is then never needed, BP1 is the cost's); return its output shape."""
        self.n_in = math.prod(in_shape)
        self.activation = activation
        self.output = output
        return (self.units,)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.units, self.n_in)

    @property
    def bias_shape(self) -> tuple[int, ...]:
        return (self.units,)

    @property
    def fan_in(self) -> int:
        return self.n_in

    @property
    def fan_out(self) -> float:
        return float(self.units)

    def floats_per_example(self) -> int:
        """The layer's largest array's share of one example: its output."""
        return self.units

    def weighted_input(self, a: Array, w: Array, b: Array) -> Array:
        """z = a w^T + b: (n, n_in) @ (n_in, units) -> (n, units)."""
        z = a @ w.T
        z += b
        return z

    def forward(self, a: Array, w: Array, b: Array, keep: bool = False) -> tuple[Array, Array | None]:
        z = self.weighted_input(a, w, b)
        a_out = self.activation.fn(z, out=z)  # computed in z's place: sigma' needs only a
        if keep:
            self.a_in = a
        return a_out, self.activation.prime(a_out) if keep and not self.output else None

    def backward(
        self, delta: Array, w: Array, error: bool, weights: bool = True
    ) -> tuple[Array | None, Array, Array | None]:
        grad_b = delta.sum(axis=0)  # BP3: (units,)
        grad_w = Product(delta.T, self.a_in) if weights else None  # BP4: (units, n) @ (n, n_in)
        below = delta @ w if error else None  # BP2's product: (n, units) @ (units, n_in)
        return grad_w, grad_b, below


class Softmax(FullyConnected):
    """The output layer of the log-likelihood cost: a fully connected layer whose activation is the
    softmax (chapter 3), a probability distribution over the classes. network3's initializer starts it
    at zero."""

    kind = "Softmax"

    def __init__(self, units: int, dropout: float = 0.0):
        super().__init__(units, dropout=dropout)

    def spec(self) -> dict:
        return {"kind": self.kind, "units": self.units, "dropout": self.dropout}


class ConvPool:
    """Chapter 6's convolutional layer with max-pooling, in network3's order: a valid convolution
    (stride 1, no padding) of ``filters`` kernels of ``kernel`` x ``kernel``, max-pooling over
    ``pool`` x ``pool`` blocks, then the bias and the activation: a = sigma(maxpool(w * x) + b).

    The convolution is the book's feature map, a cross-correlation: z_{f,j,k} = sum over the input
    channels c and the offsets l, m of w_{f,c,l,m} x_{c,j+l,k+m}. Computed as one matrix product: the
    input is first unfolded ("im2col") into a matrix with one column per output position and example
    and one row per weight (c, l, m), so that z = w (filters, c k k) @ columns (c k k, positions).

    Inside the layer, maps are laid out as (channels, height, width, n), the examples last, so that a
    row of a map holds the same row of every example in one contiguous run: unfolding copies runs of
    width x n numbers, and the rows ``(n, units)`` a network passes are this layout's transpose, a
    view. Pooling keeps only whole blocks (network3's ``ignore_border``); a conv output that no block
    covers is not computed. Shapes: w ``(filters, channels, kernel, kernel)``, b ``(filters,)``.
    """

    kind = "ConvPool"

    def __init__(self, filters: int, kernel: int = 5, pool: int = 2, activation: str | None = None):
        self.filters = _count(self.kind, "filters", filters)
        self.kernel = _count(self.kind, "kernel", kernel)
        self.pool = _count(self.kind, "pool", pool)
        self.activation_name = _activation_name(self.kind, activation)
        self.dropout = 0.0  # network3 drops no conv layer's input: nor does nnexp

    def spec(self) -> dict:
        return {
            "kind": self.kind,
            "filters": self.filters,
            "kernel": self.kernel,
            "pool": self.pool,
            "activation": self.activation_name,
        }

    def connect(
        self, in_shape: tuple[int, ...], activation: type[Activation], output: bool = False
    ) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise ValueError(
                f"ConvPool takes maps (channels, height, width), not inputs of shape {tuple(in_shape)}: "
                "accepted after the input or another ConvPool"
            )
        self.channels, height, width = in_shape
        if self.kernel > min(height, width):
            raise ValueError(
                f"invalid ConvPool kernel={self.kernel} for {height}x{width} maps: accepted at most "
                f"{min(height, width)}"
            )
        conv_height, conv_width = height - self.kernel + 1, width - self.kernel + 1
        if self.pool > min(conv_height, conv_width):
            raise ValueError(
                f"invalid ConvPool pool={self.pool} for {conv_height}x{conv_width} convolved maps: "
                f"accepted at most {min(conv_height, conv_width)}"
            )
        self.in_shape = (self.channels, height, width)
        self.out_shape = (self.filters, conv_height // self.pool, conv_width // self.pool)
        self.activation = activation
        self.buffers: dict[str, Array] = {}
        self.unfolding: tuple[Array, Array] | None = None  # (maps, their patches): see ``patches``
        return self.out_shape

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.filters, self.channels, self.kernel, self.kernel)

    @property
    def bias_shape(self) -> tuple[int, ...]:
        return (self.filters,)

    @property
    def fan_in(self) -> int:
        return self.channels * self.kernel**2

    @property
    def fan_out(self) -> float:
        return self.filters * self.kernel**2 / self.pool**2  # network3's n_out

    def floats_per_example(self) -> int:
        """The unfolded columns' share of one example, the largest array of the layer."""
        _, pooled_height, pooled_width = self.out_shape
        return self.fan_in * pooled_height * pooled_width * self.pool**2

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Array:
        """An array reused from one call to the next while the batch size stays the same: a mini-batch
        step writes its large intermediates into the same memory each time instead of new pages."""
        array = self.buffers.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.buffers[name] = np.empty(shape, dtype)
        return array

    def patches(self, x: Array) -> Array:
        """The (c, k, k, pP, pQ, n) view of the maps x (c, H, W, n) that unfolding copies: x[c, j + l,
        i + m, e] at [c, l, m, j, i, e]. Made once per array: x is a buffer, the same every step."""
        if self.unfolding is None or self.unfolding[0] is not x:
            k, (_, P, Q), p = self.kernel, self.out_shape, self.pool
            windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, : p * P, : p * Q]  # (c, pP, pQ, n, k, k)
            self.unfolding = (x, windows.transpose(0, 4, 5, 1, 2, 3))
        return self.unfolding[1]

    def forward(self, a: Array, w: Array, b: Array, keep: bool = False) -> tuple[Array, Array | None]:
        # c channels, f filters, k kernel, p pool; H x W the maps in, P x Q the pooled maps out, and
        # pP x pQ the convolved positions that pooling covers.
        from nnexp.engine import conv_kernels  # imports numba: only in a process that runs conv layers

        n = a.shape[0]
        (c, H, W), (f, P, Q), k, p = self.in_shape, self.out_shape, self.kernel, self.pool
        x = self.buffer("x", (c, H, W, n), a.dtype)
        np.copyto(x, a.T.reshape(c, H, W, n))  # the rows (n, c H W) as maps (c, H, W, n)
        columns = self.buffer("columns", (c, k, k, p * P, p * Q, n), a.dtype)
        np.copyto(columns, self.patches(x))  # im2col: (c k k, pP pQ n)
        columns = columns.reshape(c * k * k, -1)
        z = self.buffer("z", (f, p * P, p * Q, n), a.dtype)
        np.matmul(w.reshape(f, -1), columns, out=z.reshape(f, -1))  # (f, c k k) @ (c k k, pP pQ n)
        # Max-pooling, noting where each block's maximum was (training's backward needs it)
        a_out = self.buffer("a", (f, P, Q, n), a.dtype)
        conv_kernels.max_pool(z, p, a_out, self.buffer("where", (f, P, Q, n), np.dtype(np.uint8)))
        a_out += b[:, None, None, None]
        self.activation.fn(a_out, out=a_out)  # (f, P, Q, n)
        rows = a_out.reshape(f * P * Q, n).T  # (n, f P Q), the network's rows: a view
        if not keep:
            return rows, None
        self.columns = columns
        return rows, self.activation.prime(a_out).reshape(f * P * Q, n).T

    def backward(
        self, delta: Array, w: Array, error: bool, weights: bool = True
    ) -> tuple[Array | None, Array, Array | None]:
        from nnexp.engine import conv_kernels  # as the forward pass did

        n = delta.shape[0]
        (c, H, W), (f, P, Q), k, p = self.in_shape, self.out_shape, self.kernel, self.pool
        grad_b = delta.sum(axis=0).reshape(f, P * Q).sum(axis=1)  # BP3, summed over positions too: (f,)
        # Back through the pooling: each block's error goes to the position of its maximum (the first,
        # where several are equal: ``conv_kernels.max_pool``). (Theano's max-pooling, under network3,
        # gives it to each of several equal ones.)
        d = np.ascontiguousarray(delta.T).reshape(f, P, Q, n)  # one error per block
        dz = self.buffer("dz", (f, p * P, p * Q, n), delta.dtype)  # dC/dz
        conv_kernels.route_to_max(d, self.buffers["where"], p, dz)
        dz = dz.reshape(f, -1)  # (f, pP pQ n)
        # BP4 for a shared kernel, each weight's gradient summed over every position it was used at:
        # (f, pP pQ n) @ (pP pQ n, c k k) -> (f, c, k, k)
        grad_w = (dz @ self.columns.T).reshape(w.shape) if weights else None
        if not error:
            return grad_w, grad_b, None
        # BP2's product, through the unfolding: dC/dcolumns = w^T dz (c k k, pP pQ n); each input
        # position then collects the gradients of every column it was copied into ("col2im").
        d_columns = self.buffer("d_columns", (c, k, k, p * P, p * Q, n), delta.dtype)
        np.matmul(w.reshape(f, -1).T, dz, out=d_columns.reshape(c * k * k, -1))  # (c k k, f) @ (f, ...)
        below = self.buffer("below", (c, H, W, n), delta.dtype)
        conv_kernels.col2im(d_columns, below)  # (c, H, W, n)
        return grad_w, grad_b, below.reshape(c * H * W, n).T  # (n, c H W): a view


Layer = FullyConnected | ConvPool
LAYERS: dict[str, type[Layer]] = {kind.kind: kind for kind in (ConvPool, FullyConnected, Softmax)}


def layer_of(spec: dict) -> Layer:
    """The layer a ``spec()`` describes."""
    spec = dict(spec)
    return LAYERS[spec.pop("kind")](**spec)
