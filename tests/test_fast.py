"""The compiled backend (nnexp.engine.fast) against the numpy reference it compiles.

Both backends draw the same random numbers (the shuffle, the dropout masks) from the network's
generator, so from the same seed they take the same steps: in float64 their weights and metrics agree
to about 1e-15, in float32 to the round-off of a few hundred steps.
"""

import itertools
import sys

import numba
import numpy as np
import pytest
from scipy.special import expit

from nnexp import engine
from nnexp.engine import Network, components, data, fast, sgd, training

COMBINATIONS = list(itertools.product(components.COSTS, components.ACTIVATIONS, components.REGULARIZERS))
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}  # relative, on weights and costs after 3 epochs


@pytest.fixture(scope="module")
def digits():
    return {dtype: data.load("digits", dtype=dtype) for dtype in components.DTYPES}


def train_both(digits, sizes, dtype="float32", epochs=3, batch_size=10, momentum=0.5, **parts):
    """(network, history) trained from the same seed by each backend, numpy first."""
    runs = []
    for backend in ("numpy", "numba"):
        net = Network(sizes, lmbda=1.0, p=0.3, seed=4, dtype=dtype, **parts)
        history = sgd(net, digits[dtype], epochs, batch_size, eta=0.1, momentum=momentum, backend=backend)
        runs.append((net, [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]))
    return runs


def assert_same_training(runs, dtype):
    (reference, expected), (compiled, history) = runs
    rtol = TOLERANCE[dtype]
    for ours, theirs in zip(
        compiled.weights + compiled.biases, reference.weights + reference.biases, strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol)
    assert [m.keys() for m in history] == [m.keys() for m in expected]
    for ours, theirs in zip(history, expected, strict=True):
        for key, value in theirs.items():
            if key.endswith("_cost"):
                assert ours[key] == pytest.approx(value, rel=rtol)
            elif key.endswith("_accuracy") and dtype == "float32":
                assert abs(ours[key] - value) <= 2 / 397  # a borderline example or two may tip over
            else:
                assert ours[key] == value, key


def test_every_component_is_compiled():
    assert set(components.ACTIVATIONS) <= set(fast.ACTIVATIONS)
    assert set(components.COSTS) <= set(fast.COSTS)
    assert set(components.REGULARIZERS) <= set(fast.REGULARIZERS)


@pytest.mark.parametrize("dtype", components.DTYPES)
@pytest.mark.parametrize(("cost", "activation", "regularizer"), COMBINATIONS)
def test_compiled_steps_are_the_numpy_steps(digits, cost, activation, regularizer, dtype):
    """Two hidden layers (BP2 twice) and momentum, for every cost x activation x regularizer."""
    sizes = [digits[dtype].n_inputs, 16, 12, 10]
    runs = train_both(digits, sizes, dtype, cost=cost, activation=activation, regularizer=regularizer)
    assert_same_training(runs, dtype)


@pytest.mark.parametrize("regularizer", list(components.REGULARIZERS))
def test_plain_sgd_is_the_same_too(digits, regularizer):
    runs = train_both(digits, [64, 20, 10], momentum=0.0, regularizer=regularizer)
    assert_same_training(runs, "float32")


@pytest.mark.parametrize(
    ("sizes", "batch_size"),
    [([64, 20, 10], 7), ([64, 20, 10], 1500), ([64, 10], 10)],
    ids=["short-last-batch", "one-batch-larger-than-a-chunk", "no-hidden-layer"],
)
def test_uneven_batches_and_no_hidden_layer(digits, sizes, batch_size):
    runs = train_both(digits, sizes, batch_size=batch_size, regularizer="dropout")
    assert_same_training(runs, "float32")


@pytest.mark.parametrize("dtype", components.DTYPES)
def test_compiled_sigmoid_is_exact_over_the_whole_range(dtype):
    """Within 3 units in the last place of the correctly rounded value wherever that is a normal
    number (scipy's expit in float64, rounded), and within the smallest normal number below; and
    the derivative computed from it as the numpy backend does."""
    z = np.concatenate([np.linspace(-800, 800, 100_001), -np.logspace(-8, 2.9, 10_001)]).astype(dtype)
    a, prime = z.reshape(1, -1).copy(), np.empty((1, z.size), dtype)
    fast._hidden_layer(a, np.zeros(z.size, dtype), prime, fast.ACTIVATIONS.index("sigmoid"))
    exact = expit(z.astype(np.float64)).astype(dtype)
    tiny = np.finfo(dtype).tiny
    normal = exact >= tiny
    np.testing.assert_array_max_ulp(a[0, normal], exact[normal], maxulp=3)
    assert np.all(np.abs(a[0, ~normal] - exact[~normal]) <= tiny)
    np.testing.assert_array_equal(prime, (1 - a) * a)  # sigma' = sigma (1 - sigma), as Sigmoid.prime
    assert np.isnan(fast._sigmoid(np.array(np.nan, dtype)[()]))  # so that a diverging run is seen to


def test_unknown_backend_lists_the_accepted_ones(digits):
    with pytest.raises(ValueError, match=r"unknown backend 'cuda' \(accepted: auto, numpy, numba\)"):
        sgd(Network([64, 10, 10]), digits["float32"], 1, 10, 0.5, backend="cuda")


def test_auto_is_numba_when_it_can_be_imported_and_numpy_otherwise(monkeypatch):
    net = Network([4, 3, 2])
    assert training.backend_for(net, "auto") is fast.train_chunk
    assert training.backend_for(net, "numpy") is training.train_chunk
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.delitem(sys.modules, "nnexp.engine.fast")
    monkeypatch.delattr(engine, "fast")
    assert training.backend_for(net, "auto") is training.train_chunk
    with pytest.raises(ImportError):
        training.backend_for(net, "numba")


def test_parameters_it_cannot_update_in_place_are_refused():
    net = Network([4, 3, 2])
    net.weights[0] = np.asfortranarray(net.weights[0])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        training.backend_for(net, "numba")


class Softplus:
    """An activation the compiled backend does not have: what a new component is until it is."""

    name = "softplus"

    @staticmethod
    def fn(z, out=None):
        return np.logaddexp(0.0, z, out=out)

    @staticmethod
    def prime(a):
        return -np.expm1(-a)  # sigma'(z) = 1 - e^-a for a = softplus(z)


def test_a_component_new_to_the_engine_trains_on_numpy_when_auto(digits, monkeypatch):
    monkeypatch.setitem(components.ACTIVATIONS, "softplus", Softplus)
    net = Network([64, 12, 10], activation="softplus", seed=0)
    assert (
        fast.unsupported(net)
        == "the numba backend has no activation 'softplus' (it has: sigmoid, tanh, relu)"
    )
    history = sgd(net, digits["float32"], 2, 10, eta=0.1)  # auto
    assert [m["epoch"] for m in history] == [1, 2]
    with pytest.raises(ValueError, match="no activation 'softplus'.*: train with backend='numpy'"):
        sgd(net, digits["float32"], 3, 10, eta=0.1, backend="numba")


@numba.njit
def compiled_gemm(alpha, x, y, beta, out):
    fast._gemm(alpha, x, y, beta, out)


def operand(rng, shape, dtype, layout):
    """A (rows, cols) array: row-major, column-major (a transpose, as ``delta.T`` in ``_weight_step``),
    the leading rows of a larger row-major array (as ``a[l][:n]`` on a short last mini-batch), or its
    leading columns (rows longer than the array's: BLAS's leading dimension)."""
    rows, cols = shape
    if layout == "F":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if layout == "leading rows":
        return rng.standard_normal((rows + 3, cols)).astype(dtype)[:rows]
    if layout == "leading columns":
        return rng.standard_normal((rows, cols + 3)).astype(dtype)[:, :cols]
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", components.DTYPES)
@pytest.mark.parametrize(
    ("x_layout", "y_layout"),
    [
        ("F", "C"),  # _weight_step's delta.T @ a
        ("F", "leading rows"),  # the same on a short last mini-batch
        ("C", "C"),
        ("C", "F"),
        ("F", "F"),
        ("leading columns", "leading columns"),
    ],
)
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 1, 1), (30, 10, 784)], ids=["small", "1x1", "weights"])
def test_gemm_from_compiled_code_is_alpha_x_y_plus_beta_out(dtype, x_layout, y_layout, shape):
    """The weight step's BLAS call (scipy's gemm, reached through numba's public APIs) against numpy,
    in each layout it accepts (one compilation each); "weights" is the [784, 30, 10] network's step,
    w <- decay w - delta.T @ a, at mini-batch 10."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    x, y = operand(rng, (m, k), dtype, x_layout), operand(rng, (k, n), dtype, y_layout)
    out = operand(rng, (m, n), dtype, "C")
    alpha, beta = np.dtype(dtype).type(-0.7), np.dtype(dtype).type(0.9)
    expected = alpha * (x.astype(np.float64) @ y) + beta * out
    compiled_gemm(alpha, x, y, beta, out)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize(
    ("x", "y", "out", "message"),
    [
        (np.ones((3, 4)), np.ones((5, 2)), np.zeros((3, 2)), "shapes"),
        (np.ones((3, 8))[:, ::2], np.ones((4, 2)), np.zeros((3, 2)), "neither row- nor column-major"),
        (np.ones((3, 4)), np.ones((4, 2)), np.zeros((2, 3)).T, "out must be row-major"),
    ],
    ids=["shapes", "strided", "column-major-out"],
)
def test_gemm_refuses_what_blas_would_misread(x, y, out, message):
    before = out.copy()
    with pytest.raises(ValueError, match=message):
        compiled_gemm(1.0, x, y, 0.0, out)
    np.testing.assert_array_equal(out, before)
