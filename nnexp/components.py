"""The swappable parts of a network: activations, costs, initializers and regularizers.

Each part is a small object with a ``name``. The registries at the bottom map every name to exactly
one class, so that a config group option (``cost=quadratic``) selects exactly one of them.

Everything works on batches whose rows are examples: ``z`` and ``a`` have shape ``(n, units)``.
"""

import numpy as np

# --- Activations ----------------------------------------------------------------------------------


class Sigmoid:
    """sigma(z) = 1 / (1 + e^-z), written through tanh so that no exp overflows for large |z|."""

    name = "sigmoid"

    @staticmethod
    def fn(z):
        a = np.tanh(0.5 * z)  # sigma(z) = (1 + tanh(z/2)) / 2, in place to save allocations
        a += 1.0
        a *= 0.5
        return a

    @staticmethod
    def prime(z, a):
        """sigma'(z) = sigma(z) (1 - sigma(z)), computed from the stored activation a = sigma(z)."""
        return a * (1.0 - a)


class Tanh:
    name = "tanh"

    @staticmethod
    def fn(z):
        return np.tanh(z)

    @staticmethod
    def prime(z, a):
        return 1.0 - a * a


class ReLU:
    name = "relu"

    @staticmethod
    def fn(z):
        return np.maximum(z, 0.0)

    @staticmethod
    def prime(z, a):
        return (z > 0).astype(z.dtype)


class Softmax:
    """The output layer of the log-likelihood cost (chapter 3). Not a hidden-layer choice."""

    name = "softmax"

    @staticmethod
    def fn(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


# --- Costs ----------------------------------------------------------------------------------------
# A cost knows its output layer, its value per example, and the output error delta^L = dC/dz^L (BP1).
# Values are computed from z rather than a, so that log(0) never happens even when a saturates.


class QuadraticCost:
    """C = ||a - y||^2 / 2 with sigmoid outputs: delta^L = (a - y) sigma'(z), which learns slowly."""

    name = "quadratic"
    output = Sigmoid

    @staticmethod
    def fn(z, a, y):
        return 0.5 * np.sum((a - y) ** 2, axis=1)

    @staticmethod
    def delta(z, a, y):
        return (a - y) * Sigmoid.prime(z, a)


class CrossEntropyCost:
    """C = -sum_j [y ln a + (1-y) ln(1-a)] with sigmoid outputs: the sigma' cancels, delta^L = a - y.

    With ln sigma(z) = -logaddexp(0, -z) and ln(1 - sigma(z)) = -logaddexp(0, z) the value stays finite.
    """

    name = "crossentropy"
    output = Sigmoid

    @staticmethod
    def fn(z, a, y):
        return np.sum(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z), axis=1)

    @staticmethod
    def delta(z, a, y):
        return a - y


class LogLikelihoodCost:
    """C = -ln a_y with a softmax output layer: again delta^L = a - y."""

    name = "loglikelihood"
    output = Softmax

    @staticmethod
    def fn(z, a, y):
        zmax = z.max(axis=1, keepdims=True)
        log_sum_exp = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        return log_sum_exp - np.sum(y * z, axis=1)

    @staticmethod
    def delta(z, a, y):
        return a - y


# --- Initializers ---------------------------------------------------------------------------------


class LargeInit:
    """Weights and biases N(0, 1): the book's chapter 1 (large_weight_initializer)."""

    name = "large"

    @staticmethod
    def weights(rng, n_out, n_in):
        return rng.standard_normal((n_out, n_in))


class ScaledInit:
    """Weights N(0, 1/n_in), biases N(0, 1): chapter 3's default, which keeps z from saturating."""

    name = "scaled"

    @staticmethod
    def weights(rng, n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)


# --- Regularizers ---------------------------------------------------------------------------------
# A regularizer adds a penalty to the cost and its derivative to the weight gradient (biases are never
# regularized), scaled by lmbda / n with n the size of the whole training set, as the book does.
# Dropout drops hidden units with probability p while training; it carries an L2 lmbda so that the
# two combine, as in Hinton et al. (2012).


class Regularizer:
    """No regularization: the base the others refine. ``dropout`` is the probability of dropping a
    hidden unit while training; only the dropout regularizer sets it."""

    name = "none"
    dropout = 0.0

    def __init__(self, lmbda=0.0, p=0.5):
        self.lmbda = lmbda

    def penalty(self, weights, n):
        return 0.0

    def weight_gradient(self, w, n):
        """d(penalty)/dw; None when there is no penalty."""
        return

    def decay(self, w, eta, n):
        """The regularizer's part of one SGD step on w, in place: w <- w - eta * d(penalty)/dw."""
        gradient = self.weight_gradient(w, n)
        if gradient is not None:
            w -= eta * gradient


class L2(Regularizer):
    """C = C0 + lmbda/(2n) sum w^2, so dC/dw = dC0/dw + (lmbda/n) w: weight decay."""

    name = "l2"

    def penalty(self, weights, n):
        return 0.5 * (self.lmbda / n) * sum(float(np.sum(w * w)) for w in weights)

    def weight_gradient(self, w, n):
        return (self.lmbda / n) * w

    def decay(self, w, eta, n):
        """The book's w <- (1 - eta lmbda / n) w: one multiplication, no temporary array."""
        w *= 1.0 - eta * self.lmbda / n


class L1(Regularizer):
    """C = C0 + lmbda/n sum |w|, so dC/dw = dC0/dw + (lmbda/n) sgn(w): shrinks weights by a constant."""

    name = "l1"

    def penalty(self, weights, n):
        return (self.lmbda / n) * sum(float(np.sum(np.abs(w))) for w in weights)

    def weight_gradient(self, w, n):
        return (self.lmbda / n) * np.sign(w)


class Dropout(L2):
    """Inverted dropout on hidden units, plus L2 with the same lmbda (0 by default): kept units are
    scaled by 1/(1-p) while training, so that evaluation uses the whole network unchanged."""

    name = "dropout"

    def __init__(self, lmbda=0.0, p=0.5):
        super().__init__(lmbda)
        self.dropout = p


# --- Registries -----------------------------------------------------------------------------------

DTYPES = ("float32", "float64")  # float32 is the default: as accurate here, faster, half the memory


def dtype_of(name):
    """The numpy dtype of an accepted name; anything else gets an error listing the accepted ones."""
    if str(name) not in DTYPES:
        raise ValueError(f"unsupported dtype {name!r} (accepted: {', '.join(DTYPES)})")
    return np.dtype(name)


ACTIVATIONS = {c.name: c for c in (Sigmoid, Tanh, ReLU)}
COSTS = {c.name: c for c in (QuadraticCost, CrossEntropyCost, LogLikelihoodCost)}
INITIALIZERS = {c.name: c for c in (LargeInit, ScaledInit)}
REGULARIZERS = {c.name: c for c in (Regularizer, L2, L1, Dropout)}


def get(registry, kind, name):
    """Look a component up by name; an unknown name gets an error listing the accepted ones."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r} (accepted: {', '.join(registry)})") from None
