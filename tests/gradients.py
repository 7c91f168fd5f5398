"""Finite differences, the check of every backward pass: the engine's tests of dense networks
(tests/test_network.py) and of layered ones (tests/test_layers.py) compare ``backprop`` with them."""

import numpy as np

N_TRAIN = 50  # the n of the regularizers' lmbda/n


def cost_of(net, X, Y, masks=None):
    """The regularized cost that backprop plus the regularizer's gradient claim to differentiate."""
    z = net.output_z(X, masks)
    mean_cost = net.cost.fn(z, net.cost.output.fn(z), Y).mean()
    return mean_cost + net.regularizer.penalty(net.weights, N_TRAIN)


def numerical_gradient(net, X, Y, masks, param, eps=1e-6):
    """dC/d``param`` by central differences (``param``, one of the net's arrays, is put back as it was)."""
    grad = np.zeros_like(param)
    for i in np.ndindex(param.shape):
        saved = param[i]
        param[i] = saved + eps
        up = cost_of(net, X, Y, masks)
        param[i] = saved - eps
        down = cost_of(net, X, Y, masks)
        param[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad
