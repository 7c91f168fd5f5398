"""nnexp: the networks of Nielsen's *Neural Networks and Deep Learning*, with a research harness.

``nnexp.engine`` is the numpy engine (networks, components, training, data) and knows nothing of what
surrounds it. The rest of the package is the harness, in layers from the engine up (README, "Layout";
tests/test_layout.py keeps the imports running down them): the words it writes into MLflow
(``vocabulary``, ``errors``, ``process``, ``adapters``), the configuration (``grammar``, ``config``),
the store (``store``, ``runs``, ``handoff``), one run (``tracking``, ``checkpoints``, ``lineage``,
``plots``), the features (``resume``, ``study``, ``search``, ``outcome``, ``report``), Hydra's
``callbacks``, and the entry points (``run``, ``book``, ``server``).
"""
