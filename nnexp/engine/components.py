"""The swappable parts of a network: activations, costs, initializers and regularizers, and the two
conventions of dropout and of the mini-batch order.

Each part is a small object with a ``name``. The registries at the bottom map every name to exactly
one class, so that a config group option (``cost=quadratic``) selects exactly one of them: a new part
is one class here, listed in its registry, plus one YAML file in ``conf/``.

Where the book's chapter-6 program, network3.py, does a thing its own way (its initializer, its L2
scaling, its dropout, its fixed mini-batch order), that way is a part here too, named ``network3``
(or ``l2_network3``, ``fixed``), so that its experiments can be run as it ran them; nnexp's own
conventions stay the defaults.

Everything works on batches whose rows are examples: ``z`` and ``a`` have shape ``(n, units)``.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np
from scipy.special import expit

Array = np.ndarray

# --- Activations ----------------------------------------------------------------------------------
# An activation is sigma in a^l = sigma(z^l). ``fn`` may write into ``out`` (z itself, on the hot path,
# to save an allocation). ``prime`` is sigma'(z), the factor of BP1 and BP2, written through the
# activation a = sigma(z): every derivative here is cheapest that way, and backprop need not keep z.


class Activation(Protocol):
    name: str

    @staticmethod
    def fn(z: Array, out: Array | None = None) -> Array: ...

    @staticmethod
    def prime(a: Array) -> Array: ...


class Sigmoid:
    """sigma(z) = 1 / (1 + e^-z), the book's neuron: a smoothed-out perceptron (chapter 1).

    scipy's ``expit`` computes it to full precision over the whole range, with no overflow warning:
    1 / (1 + e^-z) in the array's own precision (scipy 1.17's xsf::expit), which has no cancellation
    to lose digits to, and where e^-z overflows the quotient is the right 0. The tempting
    (1 + tanh(z/2)) / 2 loses all precision for negative z, where it cancels: in float32 it is
    exactly 0 below z = -18 (the true value is 1.5e-8) and 44% too large at z = -17.
    """

    name = "sigmoid"

    @staticmethod
    def fn(z: Array, out: Array | None = None) -> Array:
        return expit(z, out=out)

    @staticmethod
    def prime(a: Array) -> Array:
        """sigma'(z) = sigma(z) (1 - sigma(z)) = a (1 - a)."""
        p = 1.0 - a
        p *= a
        return p


class Tanh:
    """tanh(z) = 2 sigma(2z) - 1: a sigmoid rescaled to (-1, 1), so that activations (and hence the
    weight updates of the next layer) can take either sign (chapter 3, "Other models of neuron")."""

    name = "tanh"

    @staticmethod
    def fn(z: Array, out: Array | None = None) -> Array:
        return np.tanh(z, out=out)

    @staticmethod
    def prime(a: Array) -> Array:
        """tanh'(z) = 1 - tanh(z)^2 = 1 - a^2."""
        p = a * a
        return np.subtract(1.0, p, out=p)


class ReLU:
    """The rectified linear unit max(0, z) (chapter 3): it never saturates for z > 0, so its gradient
    does not vanish there; for z < 0 it stops learning altogether."""

    name = "relu"

    @staticmethod
    def fn(z: Array, out: Array | None = None) -> Array:
        return np.maximum(z, 0.0, out=out)

    @staticmethod
    def prime(a: Array) -> Array:
        """1 where z > 0, that is where a > 0, else 0 (the derivative at exactly 0 is taken as 0)."""
        return (a > 0).astype(a.dtype)


class Softmax:
    """The output layer of the log-likelihood cost (chapter 3): a_j = e^{z_j} / sum_k e^{z_k}, a
    probability distribution over the digits. Not a hidden-layer choice, so it has no ``prime``."""

    name = "softmax"

    @staticmethod
    def fn(z: Array, out: Array | None = None) -> Array:
        e = np.subtract(z, z.max(axis=1, keepdims=True), out=out)  # shifted so that no exp overflows
        np.exp(e, out=e)
        e /= e.sum(axis=1, keepdims=True)
        return e


# --- Costs ----------------------------------------------------------------------------------------
# A cost knows its output layer, its value per example, and the output error delta^L = dC/dz^L (BP1).
# Values are computed from z rather than a, so that log(0) never happens even when a saturates; the
# errors need only a.


class Cost(Protocol):
    name: str
    output: type[Sigmoid] | type[Softmax]

    @staticmethod
    def fn(z: Array, a: Array, y: Array) -> Array: ...

    @staticmethod
    def delta(a: Array, y: Array) -> Array: ...


class QuadraticCost:
    """C = ||a - y||^2 / 2 with sigmoid outputs: delta^L = (a - y) sigma'(z), which learns slowly."""

    name = "quadratic"
    output = Sigmoid

    @staticmethod
    def fn(z: Array, a: Array, y: Array) -> Array:
        return 0.5 * np.sum((a - y) ** 2, axis=1)

    @staticmethod
    def delta(a: Array, y: Array) -> Array:
        d = a - y
        d *= Sigmoid.prime(a)
        return d


class CrossEntropyCost:
    """C = -sum_j [y ln a + (1-y) ln(1-a)] with sigmoid outputs: the sigma' cancels, delta^L = a - y.

    With ln sigma(z) = -logaddexp(0, -z) and ln(1 - sigma(z)) = -logaddexp(0, z) the value stays finite.
    """

    name = "crossentropy"
    output = Sigmoid

    @staticmethod
    def fn(z: Array, a: Array, y: Array) -> Array:
        return np.sum(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z), axis=1)

    @staticmethod
    def delta(a: Array, y: Array) -> Array:
        return a - y


class LogLikelihoodCost:
    """C = -ln a_y with a softmax output layer: again delta^L = a - y."""

    name = "loglikelihood"
    output = Softmax

    @staticmethod
    def fn(z: Array, a: Array, y: Array) -> Array:
        zmax = z.max(axis=1, keepdims=True)
        log_sum_exp = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        return log_sum_exp - np.sum(y * z, axis=1)

    @staticmethod
    def delta(a: Array, y: Array) -> Array:
        return a - y


# --- Initializers ---------------------------------------------------------------------------------
# Biases are N(0, 1) with every initializer, as in the book; the initializer chooses the weights, given
# a layer's weight shape, its fan-in n_in (the inputs of one neuron: a dense layer's inputs, a conv
# filter's channels x kernel x kernel) and its fan-out n_out. ``zero_output``: the output layer starts
# at zero, weights and biases.


class Initializer(Protocol):
    name: str
    zero_output: bool

    @staticmethod
    def weights(rng: np.random.Generator, shape: tuple[int, ...], n_in: int, n_out: float) -> Array: ...


class LargeInit:
    """Weights and biases N(0, 1): the book's chapter 1 (large_weight_initializer)."""

    name = "large"
    zero_output = False

    @staticmethod
    def weights(rng: np.random.Generator, shape: tuple[int, ...], n_in: int, n_out: float) -> Array:
        return rng.standard_normal(shape)


class ScaledInit:
    """Weights N(0, 1/n_in), biases N(0, 1): chapter 3's default, which keeps z from saturating."""

    name = "scaled"
    zero_output = False

    @staticmethod
    def weights(rng: np.random.Generator, shape: tuple[int, ...], n_in: int, n_out: float) -> Array:
        return rng.standard_normal(shape) / np.sqrt(n_in)


class Network3Init:
    """network3.py's: weights N(0, 1/n_out), biases N(0, 1), and the softmax output layer all zero.

    n_out is a dense layer's units, and a conv-pool layer's filters x kernel^2 / pool^2 (what each
    input unit feeds after pooling); a note in network3 says n_in was meant for the dense layers, but
    its results were got with n_out. A zero output layer is no symmetry to break: its error a - y
    differs from neuron to neuron at once."""

    name = "network3"
    zero_output = True

    @staticmethod
    def weights(rng: np.random.Generator, shape: tuple[int, ...], n_in: int, n_out: float) -> Array:
        return rng.standard_normal(shape) * np.sqrt(1.0 / n_out)


# --- Regularizers ---------------------------------------------------------------------------------
# A regularizer adds a penalty to the cost and its derivative to the weight gradient (biases are never
# regularized), scaled by lmbda / n with n the size of the whole training set, as the book does
# (network3 divides by the number of mini-batches instead: ``divisor``).
# Dropout drops hidden units with probability p while training; it carries an L2 lmbda so that the
# two combine, as in Hinton et al. (2012).


class Regularizer:
    """No regularization: the base the others refine. ``dropout`` is the probability of dropping a
    hidden unit while training; only the dropout regularizer sets it."""

    name = "none"
    dropout = 0.0

    def __init__(self, lmbda: float = 0.0):
        self.lmbda = lmbda

    def divisor(self, n_train: int, batch_size: int) -> int:
        """The n of lmbda / n, for a training set of ``n_train`` examples: the set's size, as the book."""
        return n_train

    def penalty(self, weights: list[Array], n: int) -> float:
        """The term added to the cost, for a training set of n examples."""
        return 0.0

    def weight_gradient(self, w: Array, n: int) -> Array | None:
        """d(penalty)/dw; None when there is no penalty."""
        return None

    def decay(self, w: Array, eta: float, n: int) -> None:
        """The regularizer's part of one SGD step on w, in place: w <- w - eta * d(penalty)/dw."""
        gradient = self.weight_gradient(w, n)
        if gradient is not None:
            w -= eta * gradient


class L2(Regularizer):
    """C = C0 + lmbda/(2n) sum w^2, so dC/dw = dC0/dw + (lmbda/n) w: weight decay."""

    name = "l2"

    def penalty(self, weights: list[Array], n: int) -> float:
        return 0.5 * (self.lmbda / n) * sum(float(np.sum(w * w)) for w in weights)

    def weight_gradient(self, w: Array, n: int) -> Array:
        return (self.lmbda / n) * w

    def decay(self, w: Array, eta: float, n: int) -> None:
        """The book's w <- (1 - eta lmbda / n) w: one multiplication, no temporary array."""
        w *= 1.0 - eta * self.lmbda / n


class L2Network3(L2):
    """network3.py's L2: 0.5 lmbda sum w^2 / (the number of mini-batches), so that each step decays the
    weights by eta lmbda / (n / m). Its lmbda is therefore the book's L2 lmbda divided by the mini-batch
    size m: network3's lmbda = 0.1 at m = 10 is ``l2`` with lmbda = 1."""

    name = "l2_network3"

    def divisor(self, n_train: int, batch_size: int) -> int:
        return n_train // batch_size  # network3's num_training_batches, a Python 2 integer division


class L1(Regularizer):
    """C = C0 + lmbda/n sum |w|, so dC/dw = dC0/dw + (lmbda/n) sgn(w): shrinks weights by a constant."""

    name = "l1"

    def penalty(self, weights: list[Array], n: int) -> float:
        return (self.lmbda / n) * sum(float(np.sum(np.abs(w))) for w in weights)

    def weight_gradient(self, w: Array, n: int) -> Array:
        return (self.lmbda / n) * np.sign(w)


class Dropout(L2):
    """Inverted dropout on hidden units, plus L2 with the same lmbda (0 by default): kept units are
    scaled by 1/(1-p) while training, so that evaluation uses the whole network unchanged."""

    name = "dropout"

    def __init__(self, lmbda: float = 0.0, p: float = 0.5):
        super().__init__(lmbda)
        self.dropout = p


# --- Dropout --------------------------------------------------------------------------------------
# Where dropout's rescaling goes. A layer with dropout p keeps each of its inputs with probability
# 1 - p while training (a mask of 0s and kept values); for the next layer to see inputs of the same
# expected size in training and in evaluation, either the kept inputs are scaled up in training or all
# inputs are scaled down in evaluation.


class DropoutScaling(Protocol):
    name: str

    @staticmethod
    def masks(uniform: Array, p: float) -> Array: ...

    @staticmethod
    def evaluation(p: float) -> float: ...


class InvertedDropout:
    """Kept inputs are scaled by 1/(1-p) while training, so that evaluation uses the network unchanged:
    nnexp's default, what is meant by dropout today."""

    name = "inverted"

    @staticmethod
    def masks(uniform: Array, p: float) -> Array:
        """0 where ``uniform`` (draws in [0, 1)) falls below p, else 1/(1-p), in its dtype."""
        keep = 1.0 - p
        return (uniform < keep) / uniform.dtype.type(keep)

    @staticmethod
    def evaluation(p: float) -> float:
        return 1.0


class Network3Dropout:
    """network3.py's: kept inputs are left as they are while training, and at evaluation every input of
    the layer is scaled by 1 - p (its ``(1-p_dropout)*T.dot(self.inpt, self.w) + self.b``)."""

    name = "network3"

    @staticmethod
    def masks(uniform: Array, p: float) -> Array:
        return (uniform < 1.0 - p).astype(uniform.dtype)

    @staticmethod
    def evaluation(p: float) -> float:
        return 1.0 - p


# --- Mini-batch orders ----------------------------------------------------------------------------
# The order in which an epoch visits the training examples; its mini-batches are cut in that order.


class MiniBatchOrder(Protocol):
    name: str

    @staticmethod
    def order(rng: np.random.Generator, n: int) -> Array: ...


class Shuffled:
    """A fresh random permutation every epoch (drawn from the network's generator): nnexp's default."""

    name = "shuffled"

    @staticmethod
    def order(rng: np.random.Generator, n: int) -> Array:
        return rng.permutation(n)


class Fixed:
    """The examples in their stored order every epoch, as network3.py takes its mini-batches (its
    expanded training set is shuffled once, when built). Draws no random number."""

    name = "fixed"

    @staticmethod
    def order(rng: np.random.Generator, n: int) -> Array:
        return np.arange(n)


# --- Registries -----------------------------------------------------------------------------------

DTYPES = ("float32", "float64")  # float32 is the default: as accurate here, faster, half the memory

ACTIVATIONS: dict[str, type[Activation]] = {c.name: c for c in (Sigmoid, Tanh, ReLU)}
COSTS: dict[str, type[Cost]] = {c.name: c for c in (QuadraticCost, CrossEntropyCost, LogLikelihoodCost)}
INITIALIZERS: dict[str, type[Initializer]] = {c.name: c for c in (LargeInit, ScaledInit, Network3Init)}
REGULARIZERS: dict[str, type[Regularizer]] = {c.name: c for c in (Regularizer, L2, L1, Dropout, L2Network3)}
DROPOUT_SCALINGS: dict[str, type[DropoutScaling]] = {c.name: c for c in (InvertedDropout, Network3Dropout)}
ORDERS: dict[str, type[MiniBatchOrder]] = {c.name: c for c in (Shuffled, Fixed)}

T = TypeVar("T")


def get(registry: dict[str, T], kind: str, name: str) -> T:
    """Look a component up by name; an unknown name gets an error listing the accepted ones."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r} (accepted: {', '.join(registry)})") from None


def regularizer(name: str, lmbda: float = 0.0, p: float = 0.5) -> Regularizer:
    """The regularizer called ``name``, with its penalty's lmbda; p, the drop probability, is dropout's."""
    kind = get(REGULARIZERS, "regularizer", name)
    return kind(lmbda, p) if issubclass(kind, Dropout) else kind(lmbda)


def dtype_of(name: str) -> np.dtype:
    """The numpy dtype of an accepted name; anything else gets an error listing the accepted ones."""
    if str(name) not in DTYPES:
        raise ValueError(f"unsupported dtype {name!r} (accepted: {', '.join(DTYPES)})")
    return np.dtype(name)
