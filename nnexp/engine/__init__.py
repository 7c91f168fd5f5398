"""The engine: the networks of Nielsen's *Neural Networks and Deep Learning* in numpy, and nothing else.

    from nnexp.engine import Network, load, sgd

    mnist = load("mnist")                          # the book's 50,000 / 10,000 / 10,000 split
    net = Network([784, 30, 10], regularizer="l2", lmbda=5.0, seed=0)
    history = sgd(net, mnist, epochs=30, batch_size=10, eta=0.5, on_epoch=print)

Chapter 6's convolutional networks are stacks of layers:

    from nnexp.engine import ConvPool, FullyConnected, Network, Softmax

    net = Network(layers=[ConvPool(20, kernel=5, pool=2), FullyConnected(100), Softmax(10)],
                  input_shape=(1, 28, 28), activation="relu", cost="loglikelihood", seed=0)

``network`` holds the four equations of backpropagation, ``layers`` each layer's forward and
backward pass, ``components`` every swappable part (costs, activations, initializers, regularizers,
dropout's scaling, the mini-batch order), ``training`` SGD and its stopping rules, ``history`` the
names of the metrics an epoch reports and the summary of a run, ``data`` MNIST and the 8x8 digits.
The engine imports nothing of the harness (Hydra, MLflow, pandas, matplotlib): a notebook can use it
alone, and the harness only ever calls it.
"""

from nnexp.engine.data import DataError, Dataset, Split, load
from nnexp.engine.history import summarize
from nnexp.engine.layers import ConvPool, FullyConnected, Softmax
from nnexp.engine.network import Network
from nnexp.engine.training import DivergenceError, learning_speeds, sgd

__all__ = [
    "ConvPool",
    "DataError",
    "Dataset",
    "DivergenceError",
    "FullyConnected",
    "Network",
    "Softmax",
    "Split",
    "learning_speeds",
    "load",
    "sgd",
    "summarize",
]
