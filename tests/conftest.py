"""Hypothesis profiles. ``ci`` (CI=true or HYPOTHESIS_PROFILE=ci): derandomized and sized so the whole suite fits
about 10 minutes on 2 cores; ``dev`` (default): derandomized, same size; ``thorough``: random, 10x the examples."""

import os

import torch
from hypothesis import HealthCheck, settings

# Under pytest-xdist each worker gets one intra-op thread: two workers with two threads each on two cores made the
# pipeline tests 40x slower through oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=40, print_blob=True, **_common)
settings.register_profile("dev", derandomize=True, max_examples=40, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=400, print_blob=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
