"""Chapter 6's conv nets in PyTorch eager, for `make bench` when torch can be imported.

PyTorch is no dependency of nnexp (`pip install torch` to run this part). It is here as a yardstick: a
mature library's hand-written convolution and pooling kernels, run eagerly op by op as the engine
runs numpy. The network is the engine network's (its layers, activation and starting weights), and an
epoch trains it as ``sgd(..., monitor=())`` does: a fresh shuffle (drawn from the network's
generator), mini-batches cut in that order, the log-likelihood of a softmax output averaged over the
mini-batch, plain SGD steps. One thread, float32, as the engine in the benchmark.
"""

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nnexp.engine import ConvPool

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def _forward(net, params, x):
    """The log-softmax outputs of the engine network ``net`` with parameters ``params`` for maps x."""
    for l, layer in enumerate(net.layers):
        w, b = params[2 * l], params[2 * l + 1]
        if isinstance(layer, ConvPool):
            x = F.max_pool2d(F.conv2d(x, w, b), layer.pool)  # max(z) + b = max(z + b)
        else:
            x = F.linear(x.flatten(1), w, b)
        if l < len(net.layers) - 1:
            x = ACTIVATIONS[layer.activation.name](x)
    return F.log_softmax(x, dim=1)


def trainer(net, train, batch_size, eta) -> Callable[[], float]:
    """A function that trains ``net``'s layers and starting weights (``net`` itself stays as it is) for
    one epoch on ``train`` (a Split), with the next shuffle of ``net``'s generator, and returns the CPU
    seconds it took."""
    torch.set_num_threads(1)
    pairs = zip(net.weights, net.biases, strict=True)
    params = [torch.tensor(p, requires_grad=True) for pair in pairs for p in pair]
    X = torch.from_numpy(np.ascontiguousarray(train.X).reshape(-1, *net.input_shape))
    y = torch.from_numpy(train.y)

    def epoch() -> float:
        started = time.process_time()
        order = torch.from_numpy(net.rng.permutation(len(y)))
        for rows in order.split(batch_size):
            loss = F.nll_loss(_forward(net, params, X[rows]), y[rows])
            gradients = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, gradients, strict=True):
                    p.sub_(g, alpha=eta)
        return time.process_time() - started

    return epoch
