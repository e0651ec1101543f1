"""The conformance tests: one per part of the oracle, and the golden vectors. Each prints the oracle's report."""

import torch

from lcm_ref import oracle

from lcm_ref.oracle import vectors


def _check(impl, settings, dtype, parts):
    path, factory = impl
    report = oracle.check(factory, dtype=dtype, parts=parts, impl=path, **settings)
    print(report)


def test_timesteps(impl, settings, dtype):
    """set_timesteps: the timesteps exactly, and the reference's exception class on rejected requests."""
    _check(impl, settings, dtype, ("timesteps",))


def test_step(impl, settings, dtype):
    """Every step of whole multistep runs: denoised and prev_sample within the budget, same noise."""
    _check(impl, settings, dtype, ("step",))


def test_add_noise(impl, settings, dtype):
    """add_noise (the forward process) within the budget."""
    _check(impl, settings, dtype, ("add_noise",))


def test_get_velocity(impl, settings, dtype):
    """get_velocity (the v-prediction target) within the budget."""
    _check(impl, settings, dtype, ("get_velocity",))


def test_vectors(impl, settings, dtype):
    """The golden vectors (lcm_ref/vectors) within the budget; quirk cases skipped."""
    path, factory = impl
    res = vectors.check_vectors(factory, dtype=getattr(torch, dtype), profile=settings["profile"])
    print(f"{path}: {res['checked']} vector cases checked, {res['skipped']} skipped")
    assert not res["failures"], "\n".join(res["failures"])
