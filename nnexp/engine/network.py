"""A feedforward network and backpropagation, vectorized over the mini-batch.

The book's network.py feeds one example at a time as a column vector. Here a whole mini-batch goes
through at once, one example per *row*: activations have shape ``(n, units)``, so the book's
``w @ a + b`` becomes ``a @ w.T + b`` and the sum over examples becomes a matrix product. The four
equations of backpropagation (chapter 2) then read, for a batch:

    BP1  delta^L = dC/da^L * sigma'(z^L)           (the cost's ``delta``)
    BP2  delta^l = (delta^{l+1} @ w^{l+1}) * sigma'(z^l)
    BP3  dC/db^l = mean over the batch of delta^l
    BP4  dC/dw^l = delta^l.T @ a^{l-1} / n

Dividing delta^L by n once, before BP2, makes every later delta carry the 1/n, so BP3 and BP4 become
plain sums: the same numbers with fewer operations on the hot path (SGD multiplies by eta there too).

Shapes, for a batch of n examples and a layer l of ``sizes[l]`` neurons fed by ``sizes[l-1]``:
``w^l`` is ``(sizes[l], sizes[l-1])`` as in the book, ``b^l`` is ``(sizes[l],)``, and ``z^l``, ``a^l``
and ``delta^l`` are ``(n, sizes[l])``.

A network is a stack of layers (``nnexp.engine.layers``), each with its own forward and backward
pass: ``Network([784, 30, 10])`` stacks fully connected layers, as chapters 1-5 do, and
``Network(layers=[ConvPool(20), FullyConnected(100), Softmax(10)], input_shape=(1, 28, 28))`` builds
chapter 6's. BP1 and BP2's product by sigma'(z^l) are here; BP3, BP4 and BP2's product by w^{l+1}
are each layer's ``backward``, where a fully connected layer writes them as above and a conv-pool
layer writes them through its pooling and its shared kernels.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnexp.engine import components
from nnexp.engine.layers import LAYERS, FullyConnected, Layer, Softmax, layer_of
from nnexp.engine.products import Product, evaluated

Array = np.ndarray


def one_hot(y: Array, n_classes: int, dtype: str | np.dtype = "float32") -> Array:
    """Labels ``(n,)`` to rows of the identity ``(n, n_classes)``: the desired outputs y of the book."""
    return np.eye(n_classes, dtype=dtype)[y]


# The largest array a layer may make for the rows fed forward at once, in numbers: 16 MB in float32. A
# conv layer's unfolded patches reach it (at 131 rows for chapter 6's second one); dense layers only for
# tens of thousands of rows.
CHUNK_NUMBERS = 2**22


class Network:
    """A feedforward network: ``sizes[0]`` inputs, hidden layers of ``activation`` neurons, and the
    output layer that the cost calls for (sigmoid, or softmax for the log-likelihood); or, given
    ``layers`` and the ``input_shape`` of an example (``(channels, height, width)`` for maps), that
    stack of layers. Inputs are rows of ``prod(input_shape)`` numbers either way.

    One seed drives every random choice, through the Generator ``rng``: initial weights here, and the
    shuffling and dropout masks of training, so that a seed reproduces a run bit for bit.

    Dropout: given ``sizes``, the ``dropout`` regularizer drops each hidden neuron with probability p;
    given ``layers``, a ``FullyConnected`` or ``Softmax`` layer's ``dropout=p`` drops each of its
    inputs. ``dropout_scaling`` says where the kept inputs are rescaled (``components.DROPOUT_SCALINGS``).
    A layer's own ``activation=`` overrides ``activation``; the last layer's is always the cost's.
    """

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        activation: str = "sigmoid",
        cost: str = "crossentropy",
        init: str = "scaled",
        regularizer: str = "none",
        lmbda: float = 0.0,
        p: float = 0.5,
        seed: int = 0,
        dtype: str = "float32",
        *,
        layers: Sequence[Layer] | None = None,
        input_shape: Sequence[int] | None = None,
        dropout_scaling: str = "inverted",
    ):
        self.activation = components.get(components.ACTIVATIONS, "activation", activation)
        self.cost = components.get(components.COSTS, "cost", cost)
        self.init = components.get(components.INITIALIZERS, "initializer", init)
        self.regularizer = components.regularizer(regularizer, lmbda, p)
        self.dropout_scaling = components.get(components.DROPOUT_SCALINGS, "dropout scaling", dropout_scaling)
        self.dtype = components.dtype_of(dtype)
        self.layered = layers is not None
        if self.layered:
            self.input_shape = _input_shape(input_shape, sizes, self.regularizer)
            self.layers = [layer_of(layer.spec()) for layer in _checked(layers, self.cost)]  # own copies
        else:
            sizes = _sizes(sizes, input_shape)
            self.input_shape = (sizes[0],)
            self.layers = self._dense_layers(sizes)
        self.sizes = self._connect()
        self.rng = np.random.default_rng(seed)
        zero = [self.init.zero_output and layer is self.layers[-1] for layer in self.layers]
        self.weights = [  # w^l: (sizes[l], sizes[l-1]), or a conv layer's (filters, channels, k, k)
            np.zeros(layer.weight_shape, self.dtype)
            if zero[l]
            else self.init.weights(self.rng, layer.weight_shape, layer.fan_in, layer.fan_out).astype(
                self.dtype
            )
            for l, layer in enumerate(self.layers)
        ]
        self.biases = [
            np.zeros(layer.bias_shape, self.dtype)
            if zero[l]
            else self.rng.standard_normal(layer.bias_shape).astype(self.dtype)
            for l, layer in enumerate(self.layers)
        ]

    def _dense_layers(self, sizes: list[int]) -> list[Layer]:
        """Chapters 1-5's stack: a fully connected layer per hidden size, then the output layer; the
        dropout regularizer drops the inputs of every layer after the first (the hidden neurons)."""
        p = self.regularizer.dropout
        hidden = [FullyConnected(units, dropout=p if l > 0 else 0.0) for l, units in enumerate(sizes[1:-1])]
        output = Softmax if self.cost.output is components.Softmax else FullyConnected
        return [*hidden, output(sizes[-1], dropout=p if hidden else 0.0)]

    def _connect(self) -> list[int]:
        """Fit each layer to the shape of its input and to its activation; return the units of the
        input and of each layer's output (``sizes``)."""
        shape, sizes = self.input_shape, [math.prod(self.input_shape)]
        for l, layer in enumerate(self.layers):
            output = l == len(self.layers) - 1
            if output:
                activation = self.cost.output
            elif layer.activation_name is not None:
                activation = components.ACTIVATIONS[layer.activation_name]
            else:
                activation = self.activation
            shape = layer.connect(shape, activation, output)
            sizes.append(math.prod(shape))
        return sizes

    # --- Feeding forward --------------------------------------------------------------------------

    def output_z(self, X: Array, masks: Sequence[Array] | None = None) -> Array:
        """The weighted input z^L ``(n, sizes[-1])`` of the output layer for the rows of X ``(n,
        sizes[0])`` (costs are computed from z), with dropout's ``masks`` if given (else the network
        as it evaluates)."""
        a = X
        factors = self._input_factors(masks)
        hidden = zip(self.layers[:-1], self.weights[:-1], self.biases[:-1], strict=True)
        for l, (layer, w, b) in enumerate(hidden):
            a, _ = layer.forward(_dropped(a, factors[l], l), w, b)
        a = _dropped(a, factors[-1], len(self.layers) - 1)
        return self.layers[-1].weighted_input(a, self.weights[-1], self.biases[-1])

    def feedforward(self, X: Array) -> Array:
        """The network's output a^L, shape ``(n, sizes[-1])``, ``chunk_rows`` rows at a time."""
        return self._by_chunks(X, lambda rows: self.cost.output.fn(self.output_z(rows)))

    def predict(self, X: Array) -> Array:
        """The digit each row of X is classified as: the most active output neuron, shape ``(n,)``."""
        return self._by_chunks(X, lambda rows: np.argmax(self.output_z(rows), axis=1))

    def chunk_rows(self) -> int:
        """The rows fed forward at a time: as many as keep every layer's largest array within
        ``CHUNK_NUMBERS``."""
        widest = max(layer.floats_per_example() for layer in self.layers)
        return max(1, CHUNK_NUMBERS // widest)

    def _by_chunks(self, X: Array, f) -> Array:
        rows = self.chunk_rows()
        if len(X) <= rows:
            return f(X)
        return np.concatenate([f(X[start : start + rows]) for start in range(0, len(X), rows)])

    # --- Backpropagation --------------------------------------------------------------------------

    def backprop(
        self,
        X: Array,
        Y: Array,
        masks: Sequence[Array] | None = None,
        scale: float = 1.0,
        biases_only: bool = False,
        factored: bool = False,
    ) -> tuple[list[Array | Product], list[Array]]:
        """Mean gradient of the unregularized cost over the batch (X, Y), by the four equations, times
        ``scale`` (SGD passes eta and gets its step, saving a multiplication per parameter).

        X is ``(n, sizes[0])``, Y the desired outputs ``(n, sizes[-1])``. Returns dC/dw^l and dC/db^l,
        shaped like ``weights`` and ``biases``. ``masks`` are dropout's (``dropout_masks``), one per
        layer that drops its inputs: the layer's input is multiplied by its mask going forward, so its
        error is multiplied by the same mask coming back (folded into the layer below's sigma').
        ``biases_only`` skips BP4 (dC/dw^l is then None): the speeds of learning of chapter 5 need
        dC/db^l alone, and BP4's product with the inputs is the largest of a pass. ``factored`` leaves
        a dense layer's dC/dw^l as the ``Product`` of BP4's two factors, for SGD to subtract in the
        call that computes it (``products``).
        """
        # Forward, each layer keeping the input it needs for BP4, and sigma'(z^l) of each hidden layer
        # (times the mask on its output) kept here for BP2.
        last = len(self.layers) - 1
        a, primes = X, []
        factors = self._input_factors(masks)
        for l, (layer, w, b, factor) in enumerate(
            zip(self.layers, self.weights, self.biases, factors, strict=True)
        ):
            a = _dropped(a, factor, l)
            if factor is not None and l > 0:
                primes[l - 1] *= factor  # the layer below's output was multiplied: so is its sigma'
            a, prime = layer.forward(a, w, b, keep=True)
            primes.append(prime)
        grad_w: list[Array | Product] = [None] * len(self.weights)
        grad_b: list[Array] = [None] * len(self.biases)
        delta = self.cost.delta(a, Y)  # BP1: (n, sizes[L])
        delta *= scale / X.shape[0]
        for l in range(last, -1, -1):
            # BP3, BP4, and BP2's product by w^l: (n, sizes[l]) -> (n, sizes[l-1])
            grad_w[l], grad_b[l], delta_below = self.layers[l].backward(
                delta, self.weights[l], error=l > 0, weights=not biases_only
            )
            if l > 0:
                delta = delta_below
                delta *= primes[l - 1]  # BP2: ... times sigma'(z^{l-1}): (n, sizes[l-1])
        return (grad_w if factored else [evaluated(g) for g in grad_w]), grad_b

    def _input_factors(self, masks: Sequence[Array] | None) -> list[Array | float | None]:
        """What multiplies each layer's input: its dropout mask while training (``masks``), the
        dropout scaling's factor in evaluation (no masks); None for nothing."""
        dropping = iter(masks) if masks is not None else None
        factors: list[Array | float | None] = []
        for layer in self.layers:
            if not layer.dropout:
                factors.append(None)
            elif dropping is not None:
                factors.append(next(dropping))
            else:
                factor = self.dropout_scaling.evaluation(layer.dropout)
                factors.append(None if factor == 1.0 else self.dtype.type(factor))
        return factors

    def dropout_masks(self, n: int) -> list[Array] | None:
        """Dropout's masks for n examples, one ``(n, sizes[l])`` for each layer l that drops its
        inputs (every hidden layer's output, for the dropout regularizer): 0 with probability p, else
        the dropout scaling's kept value (1/(1-p) for inverted dropout). None if no layer drops.

        All masks come from one draw of shape ``(n, sum of their widths)``, row i for the i-th
        example, split by columns: drawing the rows a few at a time or all at once takes the same
        numbers from ``rng``, so training may draw them in whatever chunks suit it.
        """
        dropping = [(l, layer.dropout) for l, layer in enumerate(self.layers) if layer.dropout]
        if not dropping:
            return None
        widths = [self.sizes[l] for l, _ in dropping]
        uniform = self.rng.random((n, sum(widths)), dtype=self.dtype)
        bounds = itertools.pairwise(np.cumsum([0, *widths]))
        return [
            self.dropout_scaling.masks(uniform[:, start:stop], p)
            for (start, stop), (_, p) in zip(bounds, dropping, strict=True)
        ]

    # --- Evaluation -------------------------------------------------------------------------------

    def evaluate(
        self, X: Array, y: Array, n_train: int, chunk: int | None = None, scale: float | None = None
    ) -> tuple[float, float]:
        """(cost, accuracy) on labelled data: the mean cost plus the regularizer's penalty (with
        ``n_train`` the n of its lmbda/n, as in training: ``regularizer.divisor``), and the fraction
        classified correctly.

        Works through X in chunks so that a large set needs no more memory than a chunk's activations.
        With ``scale``, X holds a split's stored pixels, made inputs (times ``scale``) a chunk at a time.
        Chunks of 2,000 rows evaluate MNIST's three splits 15-25% faster than chunks of 10,000 (0.103
        against 0.126 s for [784, 30, 10] on one core, 0.21 against 0.29 s in float64): their temporaries
        are a fifth as large. A conv layer takes fewer (``chunk_rows``).
        """
        chunk = chunk or min(2_000, self.chunk_rows())
        total_cost = 0.0
        correct = 0
        for start in range(0, X.shape[0], chunk):
            inputs = X[start : start + chunk]
            if scale is not None:
                inputs = np.multiply(inputs, self.dtype.type(scale), dtype=self.dtype)
            z = self.output_z(inputs)
            labels = y[start : start + chunk]
            a = self.cost.output.fn(z)
            total_cost += float(np.sum(self.cost.fn(z, a, one_hot(labels, z.shape[1], z.dtype))))
            correct += int(np.sum(np.argmax(z, axis=1) == labels))
        cost = total_cost / X.shape[0] + self.regularizer.penalty(self.weights, n_train)
        return cost, correct / X.shape[0]

    # --- Saving -----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write weights, biases, sizes, the names of the components and the random generator's state
        to one ``.npz`` file: ``load`` gives back a network that trains on exactly as this one would."""
        np.savez(path, **self.arrays())

    def arrays(self) -> dict[str, Array]:
        """What ``save`` writes, as named arrays (a training checkpoint adds its own beside them); a
        network of layers adds their descriptions (``layers``, JSON) and ``input_shape``."""
        arrays = {f"w{l}": w for l, w in enumerate(self.weights)}
        arrays.update({f"b{l}": b for l, b in enumerate(self.biases)})
        if self.layered:
            arrays["layers"] = np.array(json.dumps([layer.spec() for layer in self.layers]))
            arrays["input_shape"] = np.array(self.input_shape)
        return dict(
            sizes=np.array(self.sizes),
            activation=np.array(self.activation.name),
            cost=np.array(self.cost.name),
            init=np.array(self.init.name),
            regularizer=np.array(self.regularizer.name),
            lmbda=np.array(self.regularizer.lmbda),
            p=np.array(self.regularizer.dropout),
            dtype=np.array(self.dtype.name),
            dropout_scaling=np.array(self.dropout_scaling.name),
            rng=np.array(json.dumps(self.rng.bit_generator.state)),
            **arrays,
        )

    @classmethod
    def load(cls, path: str | Path) -> Network:
        """The network saved at ``path``, ready to feed forward or train further."""
        with np.load(path) as f:
            return cls.from_arrays(f)

    @classmethod
    def from_arrays(cls, f) -> Network:
        """The network held in ``arrays()``'s named arrays (an open ``.npz`` file or a dict)."""
        parts = dict(
            activation=str(f["activation"]),
            cost=str(f["cost"]),
            init=str(f["init"]),
            regularizer=str(f["regularizer"]),
            lmbda=float(f["lmbda"]),
            p=float(f["p"]),
            dtype=str(f["dtype"]),
            # files saved before dropout could be scaled network3's way used inverted dropout
            dropout_scaling=str(f["dropout_scaling"]) if "dropout_scaling" in f else "inverted",
        )
        if "layers" in f:
            layers = [layer_of(spec) for spec in json.loads(str(f["layers"]))]
            net = cls(layers=layers, input_shape=f["input_shape"].tolist(), **parts)
        else:
            net = cls(f["sizes"].tolist(), **parts)
        net.weights = [f[f"w{l}"] for l in range(len(net.layers))]
        net.biases = [f[f"b{l}"] for l in range(len(net.layers))]
        if "rng" in f:  # files saved before the generator's state was kept load as freshly seeded
            net.rng.bit_generator.state = json.loads(str(f["rng"]))
        return net


def _dropped(a: Array, factor: Array | float | None, l: int) -> Array:
    """Layer l's input a times its dropout factor (``Network._input_factors``), if it has one: in
    place, except on the network's own input (l = 0), which is the caller's."""
    if factor is None:
        return a
    return a * factor if l == 0 else np.multiply(a, factor, out=a)


def _sizes(sizes: Sequence[int] | None, input_shape: Sequence[int] | None) -> list[int]:
    """The layer sizes of a network given by sizes, checked."""
    if sizes is None:
        raise ValueError("a network needs sizes (such as [784, 30, 10]) or layers with an input_shape")
    if input_shape is not None:
        raise ValueError(
            f"invalid input_shape={tuple(input_shape)} with sizes: accepted with layers only "
            "(a network given by sizes takes sizes[0] inputs)"
        )
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes {list(sizes)} must list at least two layer sizes, each >= 1")
    return [int(s) for s in sizes]


def _input_shape(
    input_shape: Sequence[int] | None, sizes: Sequence[int] | None, regularizer: components.Regularizer
) -> tuple[int, ...]:
    """The shape of one example, for a network of layers, checked with what goes with it."""
    if sizes is not None:
        raise ValueError(f"invalid sizes={list(sizes)} with layers: accepted one of sizes or layers")
    if regularizer.dropout:
        regularizers = components.REGULARIZERS.items()
        accepted = ", ".join(name for name, kind in regularizers if not issubclass(kind, components.Dropout))
        raise ValueError(
            f"invalid regularizer {regularizer.name!r} for a network of layers: accepted {accepted} "
            "(dropout is a layer's: FullyConnected(n, dropout=p))"
        )
    shape = tuple(input_shape) if input_shape is not None else ()
    if len(shape) not in (1, 3) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            f"invalid input_shape={input_shape!r}: accepted (units,) or (channels, height, width), "
            "integers >= 1"
        )
    return tuple(int(d) for d in shape)


def _checked(layers: Sequence[Layer], cost: type[components.Cost]) -> list[Layer]:
    """``layers``, checked: layer objects, a Softmax only last, and the last one the cost's output."""
    layers = list(layers)
    accepted = ", ".join(LAYERS)
    if not layers:
        raise ValueError(f"invalid layers=[]: accepted a list of layers ({accepted}), the output layer last")
    for i, layer in enumerate(layers, 1):
        if not isinstance(layer, tuple(LAYERS.values())):
            raise ValueError(f"invalid layer {layer!r}: accepted {accepted}")
        if isinstance(layer, Softmax) and i < len(layers):
            raise ValueError(f"invalid Softmax as layer {i} of {len(layers)}: accepted as the last one only")
    last = layers[-1]
    wanted = "Softmax" if cost.output is components.Softmax else "FullyConnected"
    if last.kind != wanted:
        raise ValueError(f"invalid output layer {last.kind} for cost {cost.name!r}: accepted {wanted}")
    if last.activation_name not in (None, cost.output.name):
        raise ValueError(
            f"invalid output layer activation {last.activation_name!r} for cost {cost.name!r}: "
            f"accepted {cost.output.name} (or none)"
        )
    return layers
