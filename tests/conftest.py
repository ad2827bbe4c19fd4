"""Shared test set-up: quiet TensorFlow, hypothesis profiles (``HYPOTHESIS_PROFILE``), and the
``quiet_retracing_warnings`` fixture of the property-test modules."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from hypothesis import HealthCheck
from hypothesis import settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_SLOW)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def quiet_retracing_warnings():
    """Every example compiles new functions; TensorFlow's retracing warning is expected."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    yield
    logger.setLevel(level)
