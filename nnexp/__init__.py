"""nnexp: the networks of Nielsen's *Neural Networks and Deep Learning*, with a research harness.

``nnexp.engine`` is the numpy engine (networks, components, training, data) and knows nothing of what
surrounds it. The rest of the package is the harness: ``config`` (the typed configuration Hydra
composes), ``run`` (the entry point), ``store``, ``tags`` and ``tracking`` (MLflow), ``sweep`` (a
sweep's parent run), ``plots``, ``report`` and ``results`` (comparisons and the book's numbers).
"""
