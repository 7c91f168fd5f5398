"""The engine's math: backpropagation against finite differences, shapes, saving, determinism."""

import numpy as np
import pytest
from gradients import N_TRAIN, numerical_gradient

from nnexp.engine import components, load, sgd
from nnexp.engine.data import Split
from nnexp.engine.network import Network, one_hot
from nnexp.engine.training import bias_gradients, learning_speeds, update

SIZES = [6, 5, 4, 3]  # two hidden layers, so that BP2 runs more than once


@pytest.mark.parametrize("regularizer", list(components.REGULARIZERS))
@pytest.mark.parametrize("activation", list(components.ACTIVATIONS))
@pytest.mark.parametrize("cost", list(components.COSTS))
def test_backprop_matches_finite_differences(cost, activation, regularizer):
    net = Network(
        SIZES,
        activation=activation,
        cost=cost,
        regularizer=regularizer,
        lmbda=3.0,
        p=0.4,
        seed=1,
        dtype="float64",
    )
    rng = np.random.default_rng(2)
    X = rng.random((7, SIZES[0]))
    Y = one_hot(rng.integers(0, SIZES[-1], 7), SIZES[-1], "float64")
    masks = net.dropout_masks(7) if net.regularizer.dropout else None
    if masks is not None:
        assert any((m == 0).any() for m in masks), "the fixed mask should drop something"
    grad_w, grad_b = net.backprop(X, Y, masks)
    for w, gw in zip(net.weights, grad_w, strict=False):
        penalty = net.regularizer.weight_gradient(w, N_TRAIN)
        analytic = gw if penalty is None else gw + penalty
        np.testing.assert_allclose(analytic, numerical_gradient(net, X, Y, masks, w), rtol=1e-5, atol=1e-8)
    for b, gb in zip(net.biases, grad_b, strict=False):
        np.testing.assert_allclose(gb, numerical_gradient(net, X, Y, masks, b), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("regularizer", ["l2", "l1"])
def test_decay_is_a_step_down_the_penalty_gradient(regularizer):
    reg = components.REGULARIZERS[regularizer](lmbda=5.0)
    w = np.random.default_rng(0).standard_normal((3, 4))
    expected = w - 0.5 * reg.weight_gradient(w, 100)
    reg.decay(w, 0.5, 100)
    np.testing.assert_allclose(w, expected)


@pytest.mark.parametrize("batch", [1, 13])
def test_shapes(batch):
    net = Network([8, 6, 5, 3])
    X = np.random.default_rng(0).random((batch, 8), dtype=np.float32)
    Y = one_hot(np.zeros(batch, dtype=int), 3)
    assert [w.shape for w in net.weights] == [(6, 8), (5, 6), (3, 5)]
    assert [b.shape for b in net.biases] == [(6,), (5,), (3,)]
    assert net.feedforward(X).shape == (batch, 3)
    assert net.predict(X).shape == (batch,)
    grad_w, grad_b = net.backprop(X, Y)
    assert [g.shape for g in grad_w] == [w.shape for w in net.weights]
    assert [g.shape for g in grad_b] == [b.shape for b in net.biases]
    assert all(g.dtype == np.float32 for g in grad_w + grad_b)


def test_gradient_of_a_batch_is_the_mean_of_single_examples():
    net = Network([4, 3, 2], dtype="float64")
    rng = np.random.default_rng(0)
    X, Y = rng.random((5, 4)), one_hot(rng.integers(0, 2, 5), 2, "float64")
    batch_w, _ = net.backprop(X, Y)
    singles = [net.backprop(X[i : i + 1], Y[i : i + 1])[0] for i in range(5)]
    for l, g in enumerate(batch_w):
        np.testing.assert_allclose(g, np.mean([s[l] for s in singles], axis=0))


def test_initializers_scale_the_weights():
    large = Network([400, 50, 10], init="large", seed=0)
    scaled = Network([400, 50, 10], init="scaled", seed=0)
    assert abs(large.weights[0].std() - 1.0) < 0.02
    assert abs(scaled.weights[0].std() - 1.0 / np.sqrt(400)) < 0.002
    assert abs(scaled.biases[0].std() - 1.0) < 0.3


@pytest.mark.parametrize("dtype", components.DTYPES)
def test_sigmoid_is_exact_and_quiet_over_the_whole_range(dtype):
    """The relative error of a correctly rounded value wherever sigma(z) is a normal number, e.g. at
    z = -17 and below -18, where (1 + tanh(z/2)) / 2 is 44% off and then exactly 0 in float32."""
    z = np.concatenate([np.linspace(-700, 700, 100_001), [-17.0, -18.0, -20.0, -80.0]]).astype(dtype)
    with np.errstate(all="raise"):
        a = components.Sigmoid.fn(z)
    exact = 1.0 / (1.0 + np.exp(-z.astype(np.longdouble)))
    normal = exact >= np.finfo(dtype).tiny
    np.testing.assert_allclose(a[normal], exact[normal], rtol=2 * np.finfo(dtype).eps)
    assert np.all(a[~normal] <= np.finfo(dtype).tiny)


def test_dropout_masks_drawn_in_chunks_are_the_rows_of_one_draw():
    """Training draws an epoch's masks a chunk of examples at a time: the numbers must not depend on
    the chunks."""
    net = Network([5, 4, 3, 2], regularizer="dropout", p=0.5, seed=3)
    whole = Network([5, 4, 3, 2], regularizer="dropout", p=0.5, seed=3).dropout_masks(7)
    chunks = [net.dropout_masks(3), net.dropout_masks(4)]
    assert [m.shape for m in whole] == [(7, 4), (7, 3)]
    for l, mask in enumerate(whole):
        np.testing.assert_array_equal(mask, np.concatenate([chunk[l] for chunk in chunks]))
    assert set(np.unique(np.concatenate(whole, axis=1))) == {0.0, 2.0}


def test_softmax_outputs_are_probabilities_even_for_huge_z():
    net = Network([3, 4, 5], cost="loglikelihood", init="large", dtype="float64")
    X = np.array([[1e4, -1e4, 3.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out = net.feedforward(X)
        cost, _ = net.evaluate(X, np.array([2]), n_train=1)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.isfinite(cost)


@pytest.mark.parametrize("cost", list(components.COSTS))
def test_saturated_outputs_give_finite_costs_without_warnings(cost):
    """The right output neuron is driven far off and the wrong ones far on: ln(0) must not happen."""
    net = Network([2, 3, 4], cost=cost, init="large")
    net.weights[-1][:] = 1e4
    net.weights[-1][0] = -1e4
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, accuracy = net.evaluate(np.ones((2, 2), np.float32), np.array([0, 0]), n_train=2)
    assert np.isfinite(value) and value > 1.0 and accuracy == 0.0


def test_save_and_load_round_trip(tmp_path):
    net = Network(
        [5, 4, 3],
        activation="tanh",
        cost="loglikelihood",
        init="large",
        regularizer="dropout",
        lmbda=2.0,
        p=0.3,
        seed=4,
    )
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    X = np.random.default_rng(0).random((6, 5), dtype=np.float32)
    np.testing.assert_array_equal(loaded.feedforward(X), net.feedforward(X))
    assert (loaded.activation, loaded.cost, loaded.regularizer.name) == (net.activation, net.cost, "dropout")
    assert (loaded.regularizer.lmbda, loaded.regularizer.dropout) == (2.0, 0.3)


def test_unknown_component_names_list_what_is_accepted():
    with pytest.raises(ValueError, match=r"unknown cost 'mse' \(accepted: quadratic, crossentropy"):
        Network([3, 2], cost="mse")
    with pytest.raises(ValueError, match="float16"):
        Network([3, 2], dtype="float16")


def test_momentum_keeps_a_velocity():
    net = Network([3, 2], dtype="float64", seed=0)
    X, Y = np.ones((1, 3)), np.array([[1.0, 0.0]])
    velocities = [np.zeros_like(p) for p in net.weights + net.biases]
    w0 = net.weights[0].copy()
    g1 = net.backprop(X, Y)[0][0]
    update(net, X, Y, eta=0.1, n=1, momentum=0.9, velocities=velocities)
    np.testing.assert_allclose(net.weights[0], w0 - 0.1 * g1)
    g2 = net.backprop(X, Y)[0][0]
    update(net, X, Y, eta=0.1, n=1, momentum=0.9, velocities=velocities)
    np.testing.assert_allclose(net.weights[0], w0 - 0.1 * g1 + 0.9 * (-0.1 * g1) - 0.1 * g2)


@pytest.mark.parametrize(
    "registry", [components.ACTIVATIONS, components.COSTS, components.INITIALIZERS, components.REGULARIZERS]
)
def test_each_registry_maps_a_name_to_the_class_of_that_name(registry):
    assert registry and all(kind.name == name for name, kind in registry.items())


@pytest.mark.parametrize("name", list(components.REGULARIZERS))
def test_only_dropout_takes_a_drop_probability(name):
    regularizer = components.regularizer(name, lmbda=2.0, p=0.3)
    assert regularizer.name == name
    assert regularizer.dropout == (0.3 if name == "dropout" else 0.0)
    assert regularizer.lmbda == 2.0


def test_a_loaded_network_trains_on_exactly_as_the_saved_one_would(tmp_path):
    """The random generator's state travels with the weights: shuffles and dropout masks continue."""
    digits = load("digits")
    net = Network([64, 12, 10], regularizer="dropout", p=0.3, seed=5)
    sgd(net, digits, epochs=1, batch_size=10, eta=0.5)
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    again = [sgd(n, digits, epochs=2, batch_size=10, eta=0.5) for n in (net, loaded)]
    strip = [[{k: v for k, v in m.items() if k != "epoch_seconds"} for m in h] for h in again]
    assert strip[0] == strip[1]
    for ours, theirs in zip(net.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("activation", list(components.ACTIVATIONS))
@pytest.mark.parametrize("cost", list(components.COSTS))
def test_speeds_of_learning_match_finite_differences(cost, activation):
    """Chapter 5's speed of learning of each hidden layer is the norm of dC/db^l of the unregularized
    cost averaged over the first n images, exact to round-off in float64 (the regularizer, which spares
    the biases, and the images after the first n change nothing)."""
    net = Network(
        [6, 5, 4, 4, 3],
        activation=activation,
        cost=cost,
        regularizer="l2",
        lmbda=3.0,
        seed=3,
        dtype="float64",
    )
    rng = np.random.default_rng(4)
    split = Split(rng.integers(0, 256, (12, 6), dtype=np.uint8), rng.integers(0, 3, 12), 1 / 255, net.dtype)
    first = slice(0, 9)
    X, Y = split.inputs(first), one_hot(split.y[first], 3, "float64")
    expected = [numerical_gradient(net, X, Y, None, b) for b in net.biases[:-1]]  # L2 spares biases
    gradients = bias_gradients(net, split, n=9)
    assert len(gradients) == 3  # the hidden layers only, as the chapter draws them
    for got, want in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)
    speeds = learning_speeds(net, split, n=9)
    np.testing.assert_allclose(speeds, [np.linalg.norm(g) for g in expected], rtol=1e-6)
    assert speeds == learning_speeds(net, Split(split.pixels[:9], split.y[:9], 1 / 255, net.dtype), n=100)
