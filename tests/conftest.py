"""Shared test set-up: quiet TensorFlow, hypothesis profiles (``HYPOTHESIS_PROFILE``)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import HealthCheck
from hypothesis import settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_SLOW)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
