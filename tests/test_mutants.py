"""Fault injection: the oracle and the golden vectors must kill every mutant (lcm_ref.oracle.mutants)."""

import pytest
import torch

from lcm_ref import oracle
from lcm_ref.oracle import mutants, vectors


def test_there_are_at_least_12_mutants_each_documented():
    """The mutant set is at least the 12 faults the issue lists, each saying what it gets wrong."""
    assert len(mutants.MUTANTS) >= 12
    for name, cls in mutants.MUTANTS.items():
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert issubclass(cls, mutants.LCMScheduler)


@pytest.mark.parametrize("name", list(mutants.MUTANTS))
def test_check_kills_mutant(name):
    """check() (conform's fail-fast mode) with its default budget raises OracleMismatch on the mutant, in one of the
    concerns the mutant names. Unshrunk, to keep the suite fast."""
    cls = mutants.MUTANTS[name]
    with pytest.raises(oracle.OracleMismatch) as info:
        oracle.check(cls, shrink=False)
    assert info.value.quantity in mutants.expected_concerns(cls)


@pytest.mark.parametrize("name", list(mutants.MUTANTS))
def test_vectors_kill_mutant(name):
    """`lcm-ref vectors check --impl` finds at least one failing golden vector for the mutant."""
    res = vectors.check_vectors(mutants.MUTANTS[name], dtype=torch.float64)
    assert res["failures"], f"{name} passes every vector"


def test_kill_table_formats_every_mutant():
    """The kill table (python -m lcm_ref.oracle.mutants) has one row per mutant and the kill rate, and shows a survivor."""
    names = list(mutants.MUTANTS)
    rows = [(name, name != names[0], "denoised", "example 1", 0.0) for name in names]    # the first survives
    text = mutants.format_table(rows)
    assert f"kill rate: {len(rows) - 1}/{len(rows)}" in text
    assert all(f"| {name} |" in text for name in names)
    assert text.count("**NO**") == 1 and f"| {names[0]} |" in text.split("**NO**")[0].splitlines()[-1]
