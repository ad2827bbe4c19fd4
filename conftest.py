"""Root pytest set-up: skip doctests of optional integrations whose extra is not installed."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("jax") is None:
    collect_ignore_glob += ["funcsplit/jax/*"]
if importlib.util.find_spec("tensorflow_datasets") is None:
    collect_ignore_glob += ["funcsplit/tfds/*", "funcsplit/demo/*"]
