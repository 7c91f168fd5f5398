"""Chapter 6's layers: backpropagation through them against finite differences, the book's feature
map, network3's conventions, saving and resuming, and the one-line errors of a bad stack."""

import itertools

import numpy as np
import pytest
from gradients import N_TRAIN, numerical_gradient

from nnexp.engine import (
    ConvPool,
    FullyConnected,
    Network,
    Softmax,
    checkpoint,
    components,
    conv_kernels,
    load,
    sgd,
)
from nnexp.engine import network as network_module
from nnexp.engine.network import one_hot
from nnexp.engine.training import TrainingState, backend_for, train_chunk, update

LL = "loglikelihood"
HIDDEN = {  # (input shape, the hidden layers of a given activation)
    # conv-pool layers pooling 3x3 (a border of 2 left out: 14 = 3 x 4 + 2), not pooling, and pooling
    # 2x2 (a border of 1), then a dense layer dropping the last maps
    "ConvPool": (
        (2, 16, 16),
        lambda act: [
            ConvPool(3, kernel=3, pool=3, activation=act),
            ConvPool(3, kernel=1, pool=1, activation=act),
            ConvPool(2, kernel=2, pool=2, activation=act),
            FullyConnected(5, act, dropout=0.3),
        ],
    ),
    # dense layers, the first dropping the inputs themselves
    "FullyConnected": ((6,), lambda act: [FullyConnected(5, act, 0.2), FullyConnected(4, act, 0.3)]),
}


def network(kind, activation, cost, dropout_scaling="inverted", **options):
    """A small float64 net of ``kind`` hidden layers, then the output layer the cost takes (dropping
    its inputs too): Softmax for the log-likelihood, a sigmoid FullyConnected layer otherwise."""
    input_shape, hidden = HIDDEN[kind]
    output = Softmax(3, dropout=0.25) if cost == "loglikelihood" else FullyConnected(3, dropout=0.25)
    return Network(
        layers=[*hidden(activation), output],
        input_shape=input_shape,
        cost=cost,
        dropout_scaling=dropout_scaling,
        dtype="float64",
        **{"regularizer": "l2", "lmbda": 3.0, "seed": 1, **options},
    )


def batch(net, n=4, seed=2):
    rng = np.random.default_rng(seed)
    return rng.random((n, net.sizes[0])), one_hot(rng.integers(0, 3, n), 3, "float64")


def assert_backprop_is_the_derivative(net, X, Y, masks):
    grad_w, grad_b = net.backprop(X, Y, masks)
    for w, gw in zip(net.weights, grad_w, strict=True):
        analytic = gw + net.regularizer.weight_gradient(w, N_TRAIN)
        np.testing.assert_allclose(analytic, numerical_gradient(net, X, Y, masks, w), rtol=1e-5, atol=1e-8)
    for b, gb in zip(net.biases, grad_b, strict=True):
        np.testing.assert_allclose(gb, numerical_gradient(net, X, Y, masks, b), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cost", list(components.COSTS))
@pytest.mark.parametrize("activation", list(components.ACTIVATIONS))
@pytest.mark.parametrize("kind", list(HIDDEN))
def test_backprop_through_every_layer_matches_finite_differences(kind, activation, cost):
    """Every layer type (the output layer, Softmax or FullyConnected, in each) x activation x cost,
    with dropout on fixed masks and the L2 penalty."""
    net = network(kind, activation, cost)
    X, Y = batch(net)
    masks = net.dropout_masks(len(X))
    dropping = [l for l, layer in enumerate(net.layers) if layer.dropout]
    assert [m.shape for m in masks] == [(4, net.sizes[l]) for l in dropping]
    assert all((m == 0).any() for m in masks), "each fixed mask should drop something"
    assert_backprop_is_the_derivative(net, X, Y, masks)


@pytest.mark.parametrize("masked", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("kind", list(HIDDEN))
def test_backprop_with_network3_dropout_matches_finite_differences(kind, masked):
    """network3's dropout: masks of 0s and 1s while training, inputs scaled by 1 - p in evaluation
    (what backprop without masks differentiates, as chapter 5's speeds of learning measure it)."""
    net = network(kind, "tanh", "loglikelihood", dropout_scaling="network3", regularizer="l2_network3")
    X, Y = batch(net)
    masks = net.dropout_masks(len(X)) if masked else None
    assert_backprop_is_the_derivative(net, X, Y, masks)


@pytest.mark.parametrize("activation", list(components.ACTIVATIONS))
def test_a_feature_map_is_the_books_formula(activation):
    """a_{f,j,k} = sigma(b_f + max over the pool block of sum_{c,l,m} w_{f,c,l,m} x_{c,j+l,k+m}): a
    cross-correlation, with no padding, stride 1, then max-pooling (its border left out), then the
    bias and the activation; flattened channel by channel, as network3 flattens its maps."""
    net = Network(
        layers=[ConvPool(3, kernel=3, pool=2), Softmax(2)],
        input_shape=(2, 8, 9),
        activation=activation,
        cost="loglikelihood",
        dtype="float64",
        seed=5,
    )
    conv, (w, b) = net.layers[0], (net.weights[0], net.biases[0])
    X = np.random.default_rng(0).standard_normal((4, 2 * 8 * 9))
    rows, _ = conv.forward(X, w, b)
    x = X.reshape(4, 2, 8, 9)
    expected = np.empty((4, 3, 3, 3))  # (n, filters, 6 // 2, 7 // 2)
    for i, f, j, k in itertools.product(range(4), range(3), range(3), range(3)):
        block = [  # the four convolved positions (2j + dj, 2k + dk) of pooling block (j, k)
            sum(
                w[f, c, l, m] * x[i, c, 2 * j + dj + l, 2 * k + dk + m]
                for c, l, m in itertools.product(range(2), range(3), range(3))
            )
            for dj, dk in itertools.product(range(2), range(2))
        ]
        expected[i, f, j, k] = max(block) + b[f]
    np.testing.assert_allclose(rows, net.activation.fn(expected.reshape(4, -1)), rtol=1e-12, atol=1e-12)


def test_a_tied_pooling_block_passes_its_error_to_one_position():
    """Blank inputs convolve to 0 everywhere, so every pooling block is a four-way tie: its error goes
    to its first position alone (a subgradient), not to each of the four."""
    net = Network(layers=[ConvPool(2, kernel=2, pool=2), Softmax(3)], input_shape=(1, 5, 5), cost=LL, seed=1)
    conv, w = net.layers[0], net.weights[0]
    conv.forward(np.zeros((3, 25), np.float32), w, net.biases[0], keep=True)
    delta = np.random.default_rng(0).random((3, 2 * 2 * 2), dtype=np.float32)  # (n, filters x 2 x 2)
    _, _, error = conv.backward(delta, w, error=True)
    d = delta.reshape(3, 2, 2, 2)
    expected = np.zeros((3, 1, 5, 5), np.float32)
    for f, j, k, l, m in itertools.product(range(2), range(2), range(2), range(2), range(2)):
        expected[:, 0, 2 * j + l, 2 * k + m] += w[f, 0, l, m] * d[:, f, j, k]  # from position (2j, 2k)
    np.testing.assert_allclose(error, expected.reshape(3, 25), rtol=1e-6)


def test_a_nan_anywhere_in_a_pooling_block_is_its_maximum():
    """As np.maximum has it: a run whose maps turn NaN is seen to diverge, not pooled past it."""
    z = np.zeros((1, 2, 2, 3), np.float32)  # (filters, 2 x 2 block, n): the NaN at each place in turn
    z[0, 0, 1, 0] = z[0, 1, 0, 1] = z[0, 1, 1, 2] = np.nan
    z[0, 1, 1, 0] = 5.0  # a larger number after the NaN does not displace it
    pooled, where = np.empty((1, 1, 1, 3), np.float32), np.empty((1, 1, 1, 3), np.uint8)
    conv_kernels.max_pool(z, 2, pooled, where)
    assert np.isnan(pooled).all() and where.ravel().tolist() == [1, 2, 3]


def test_the_issues_network_has_the_shapes_of_network3():
    layers = [
        ConvPool(20, kernel=5, pool=2),
        ConvPool(40, kernel=5, pool=2),
        FullyConnected(100),
        Softmax(10),
    ]
    net = Network(
        layers=layers,
        input_shape=(1, 28, 28),
        activation="relu",
        cost="loglikelihood",
        regularizer="l2",
        lmbda=0.1,
        seed=0,
    )
    assert net.sizes == [784, 20 * 12 * 12, 40 * 4 * 4, 100, 10]
    assert [w.shape for w in net.weights] == [(20, 1, 5, 5), (40, 20, 5, 5), (100, 640), (10, 100)]
    assert [b.shape for b in net.biases] == [(20,), (40,), (100,), (10,)]
    X = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    grad_w, grad_b = net.backprop(X, one_hot(np.arange(3), 10))
    assert [g.shape for g in grad_w] == [w.shape for w in net.weights]
    assert [g.shape for g in grad_b] == [b.shape for b in net.biases]
    assert all(g.dtype == np.float32 for g in grad_w + grad_b)
    assert net.feedforward(X).shape == (3, 10) and net.predict(X).shape == (3,)


def test_many_rows_go_forward_in_chunks_that_bound_the_memory(monkeypatch):
    """Chapter 6's second conv layer unfolds 32,000 numbers per image: a test set at once would take
    1.3 GB, so rows go forward a chunk at a time, with the very same outputs."""
    layers = [
        ConvPool(20, kernel=5, pool=2),
        ConvPool(40, kernel=5, pool=2),
        FullyConnected(100),
        Softmax(10),
    ]
    net = Network(layers=layers, input_shape=(1, 28, 28), cost=LL, dtype="float64")
    assert net.chunk_rows() == 2**22 // (500 * 8 * 8) == 131
    X = np.random.default_rng(0).random((40, 784))
    whole = net.feedforward(X)
    monkeypatch.setattr(network_module, "CHUNK_NUMBERS", 500 * 8 * 8 * 15)  # 15 rows at a time
    assert net.chunk_rows() == 15
    np.testing.assert_allclose(net.feedforward(X), whole, rtol=1e-12)
    np.testing.assert_array_equal(net.predict(X), whole.argmax(axis=1))
    assert net.evaluate(X, whole.argmax(axis=1), 1)[1] == 1.0


def test_network3s_initializer():
    """Conv weights N(0, 1/n_out) with n_out = filters x 5^2 / 2^2 (std 0.0894 for 20 filters), dense
    ones N(0, 1/n_out), biases N(0, 1), the softmax layer zero."""
    net = Network(
        layers=[ConvPool(20), ConvPool(40), FullyConnected(100), Softmax(10)],
        input_shape=(1, 28, 28),
        init="network3",
        cost="loglikelihood",
    )
    for w, std in zip(net.weights[:3], [np.sqrt(4 / (20 * 25)), np.sqrt(4 / (40 * 25)), 0.1], strict=True):
        assert w.std() == pytest.approx(std, rel=0.1)
    assert net.biases[2].std() == pytest.approx(1.0, rel=0.3)
    assert not net.weights[3].any() and not net.biases[3].any()


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def small_conv_net(dropout=0.2, **options):
    return Network(
        layers=[ConvPool(8, kernel=3, pool=2), FullyConnected(30, dropout=dropout), Softmax(10)],
        input_shape=(1, 8, 8),
        **{"activation": "relu", "cost": "loglikelihood", "seed": 0, **options},
    )


@pytest.mark.parametrize(
    "conventions",
    [
        {},
        {"init": "network3", "regularizer": "l2_network3", "lmbda": 0.1, "dropout_scaling": "network3"},
    ],
    ids=["nnexp", "network3"],
)
def test_a_small_conv_net_learns_the_digits(digits, conventions):
    order = "fixed" if conventions else "shuffled"
    history = sgd(small_conv_net(**conventions), digits, 6, 10, eta=0.1, order=order, monitor=("validation",))
    assert max(m["validation_accuracy"] for m in history) > 0.85  # from 10% by chance


def test_training_goes_on_from_a_checkpoint_bit_for_bit(digits, tmp_path):
    """A conv net with dropout and momentum stopped after epoch 2, saved, loaded: epochs 3 and 4 are
    those of the run that never stopped."""
    options = {"epochs": 4, "batch_size": 10, "eta": 0.1, "momentum": 0.5, "monitor": ("validation",)}
    whole_net = small_conv_net()
    whole = sgd(whole_net, digits, **options)
    net, state = small_conv_net(), TrainingState()
    sgd(net, digits, **{**options, "epochs": 2}, state=state)
    checkpoint.save(tmp_path / "ckpt.npz", net, state)
    net, state = checkpoint.load(tmp_path / "ckpt.npz")
    resumed = sgd(net, digits, **options, state=state)
    strip = [[{k: v for k, v in m.items() if k != "epoch_seconds"} for m in h] for h in (resumed, whole)]
    assert strip[0] == strip[1]
    for ours, theirs in zip(net.weights + net.biases, whole_net.weights + whole_net.biases, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert [layer.spec() for layer in net.layers] == [layer.spec() for layer in whole_net.layers]


def test_a_saved_network_of_layers_loads_as_it_was(tmp_path):
    net = small_conv_net(dropout_scaling="network3", dtype="float64")
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    X = np.random.default_rng(0).random((5, 64))
    np.testing.assert_array_equal(loaded.feedforward(X), net.feedforward(X))
    assert (loaded.input_shape, loaded.sizes) == ((1, 8, 8), net.sizes)
    assert loaded.dropout_scaling is components.Network3Dropout


def test_dense_layers_are_the_network_of_those_sizes(digits):
    """A stack of FullyConnected layers and the network given by its sizes are one network: the same
    weights from the same seed, the same training (dropout on the hidden outputs is on the next
    layers' inputs), and both train compiled."""
    by_sizes = Network([64, 20, 10], cost="loglikelihood", regularizer="dropout", lmbda=1.0, p=0.3)
    by_layers = Network(
        layers=[FullyConnected(20), Softmax(10, dropout=0.3)],
        input_shape=(64,),
        cost="loglikelihood",
        regularizer="l2",
        lmbda=1.0,
    )
    runs = [sgd(net, digits, 2, 10, eta=0.1, backend="numba") for net in (by_sizes, by_layers)]
    assert [m["validation_cost"] for m in runs[0]] == [m["validation_cost"] for m in runs[1]]
    parameters = [net.weights + net.biases for net in (by_sizes, by_layers)]
    for ours, theirs in zip(*parameters, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_conv_nets_train_on_numpy_whatever_the_backend(digits):
    net = small_conv_net()
    assert backend_for(net, "auto") is train_chunk
    with pytest.raises(ValueError, match="no ConvPool layer .*: train with backend='numpy'"):
        sgd(net, digits, 1, 10, eta=0.1, backend="numba")


def test_network3s_l2_is_the_books_with_lmbda_times_the_batch_size(digits):
    """0.5 lmbda sum w^2 / (n / m) is the book's lmbda' / (2n) sum w^2 with lmbda' = m lmbda."""
    assert components.regularizer("l2_network3").divisor(50_000, 10) == 5_000
    histories = [
        sgd(small_conv_net(regularizer=name, lmbda=lmbda, dtype="float64"), digits, 2, 10, eta=0.1)
        for name, lmbda in (("l2_network3", 0.5), ("l2", 5.0))
    ]
    for ours, theirs in zip(*histories, strict=True):
        assert ours["train_cost"] == pytest.approx(theirs["train_cost"], rel=1e-12)


def test_network3s_dropout_keeps_inputs_unscaled_and_scales_them_in_evaluation():
    net = small_conv_net(dropout_scaling="network3", dtype="float64")
    masks = net.dropout_masks(6)
    assert {float(v) for m in masks for v in np.unique(m)} == {0.0, 1.0}
    X = np.random.default_rng(1).random((6, 64))
    dropping = [layer for layer in net.layers if layer.dropout]
    means = [np.full_like(m, 1 - layer.dropout) for m, layer in zip(masks, dropping, strict=True)]
    np.testing.assert_allclose(net.output_z(X), net.output_z(X, means), rtol=1e-14)


def test_a_fixed_order_takes_the_mini_batches_as_stored(digits):
    """One epoch in the fixed order is the steps on rows 0-9, 10-19, ... and draws no random number."""
    net, stepped = (small_conv_net(dropout=0.0, dtype="float64") for _ in range(2))
    state = net.rng.bit_generator.state
    sgd(net, digits, 1, 10, eta=0.1, order="fixed", monitor=())
    assert net.rng.bit_generator.state == state
    X, Y = digits.train.X, one_hot(digits.train.y, 10, "float64")
    for k in range(0, len(X), 10):
        update(stepped, X[k : k + 10], Y[k : k + 10], 0.1, len(X))
    for ours, theirs in zip(net.weights + net.biases, stepped.weights + stepped.biases, strict=True):
        np.testing.assert_array_equal(ours, theirs)


CONV = ConvPool(4, kernel=3, pool=2)
OUT = Softmax(10)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConvPool(0), "invalid ConvPool filters=0: accepted an integer >= 1"),
        (lambda: ConvPool(4, kernel=2.5), "invalid ConvPool kernel=2.5: accepted an integer >= 1"),
        (
            lambda: FullyConnected(10, dropout=1.0),
            r"invalid FullyConnected dropout=1.0: accepted a probability",
        ),
        (
            lambda: Softmax(10, dropout=-0.1),
            r"invalid Softmax dropout=-0.1: accepted a probability in \[0, 1\)",
        ),
        (
            lambda: FullyConnected(10, "softplus"),
            r"unknown FullyConnected activation 'softplus' \(accepted: sigmoid,",
        ),
        (
            lambda: Network(layers=[ConvPool(4, kernel=9), OUT], input_shape=(1, 8, 8), cost=LL),
            "invalid ConvPool kernel=9 for 8x8 maps: accepted at most 8",
        ),
        (
            lambda: Network(layers=[ConvPool(4, kernel=5, pool=5), OUT], input_shape=(1, 8, 8), cost=LL),
            "invalid ConvPool pool=5 for 4x4 convolved maps: accepted at most 4",
        ),
        (
            lambda: Network(layers=[FullyConnected(10), CONV, OUT], input_shape=(1, 8, 8), cost=LL),
            r"ConvPool takes maps \(channels, height, width\), not inputs of shape \(10,\)",
        ),
        (
            lambda: Network(layers=[CONV, OUT], input_shape=(64,), cost=LL),
            r"ConvPool takes maps \(channels, height, width\), not inputs of shape \(64,\)",
        ),
        (
            lambda: Network(layers=[CONV, FullyConnected(10)], input_shape=(1, 8, 8), cost=LL),
            "invalid output layer FullyConnected for cost 'loglikelihood': accepted Softmax",
        ),
        (
            lambda: Network(layers=[CONV, OUT], input_shape=(1, 8, 8), cost="crossentropy"),
            "invalid output layer Softmax for cost 'crossentropy': accepted FullyConnected",
        ),
        (
            lambda: Network(layers=[OUT, CONV], input_shape=(1, 8, 8), cost=LL),
            "invalid Softmax as layer 1 of 2: accepted as the last one only",
        ),
        (
            lambda: Network(layers=[CONV, FullyConnected(10, "relu")], input_shape=(1, 8, 8)),
            r"invalid output layer activation 'relu' for cost 'crossentropy': accepted sigmoid \(or none\)",
        ),
        (
            lambda: Network(layers=[CONV, "Softmax(10)"], input_shape=(1, 8, 8)),
            "invalid layer 'Softmax\\(10\\)': accepted ConvPool, FullyConnected, Softmax",
        ),
        (lambda: Network(layers=[], input_shape=(1, 8, 8)), r"invalid layers=\[\]: accepted a list"),
        (
            lambda: Network(layers=[CONV, OUT], input_shape=(1, 0, 8), cost=LL),
            r"invalid input_shape=\(1, 0, 8\): accepted \(units,\) or \(channels, height, width\)",
        ),
        (lambda: Network(layers=[CONV, OUT], cost="loglikelihood"), "invalid input_shape=None: accepted"),
        (lambda: Network([64, 10], layers=[OUT], input_shape=(64,)), r"invalid sizes=\[64, 10\] with layers"),
        (lambda: Network([64, 10], input_shape=(64,)), r"invalid input_shape=\(64,\) with sizes"),
        (lambda: Network(), "a network needs sizes"),
        (
            lambda: Network(layers=[OUT], input_shape=(64,), cost="loglikelihood", regularizer="dropout"),
            "invalid regularizer 'dropout' for a network of layers: accepted none, l2, l1, l2_network3",
        ),
        (
            lambda: Network([4, 2], dropout_scaling="scaled"),
            r"unknown dropout scaling 'scaled' \(accepted: inverted, network3\)",
        ),
    ],
)
def test_a_bad_stack_is_refused_in_one_line(build, message):
    with pytest.raises(ValueError, match=message) as caught:
        build()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("registry", [components.DROPOUT_SCALINGS, components.ORDERS])
def test_network3s_conventions_are_named_parts_like_the_others(registry):
    assert len(registry) == 2 and all(kind.name == name for name, kind in registry.items())


def test_an_unknown_order_is_refused_in_one_line(digits):
    with pytest.raises(ValueError, match=r"unknown mini-batch order 'random' \(accepted: shuffled, fixed\)"):
        sgd(small_conv_net(), digits, 1, 10, eta=0.1, order="random")
