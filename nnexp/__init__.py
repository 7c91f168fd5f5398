"""nnexp: the networks of Nielsen's *Neural Networks and Deep Learning*, with a research harness.

The engine (``network``, ``components``, ``training``, ``data``) is numpy only; the harness (``run``,
``tracking``, ``report``) composes runs with Hydra and records them in MLflow.
"""
