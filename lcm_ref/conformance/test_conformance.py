"""The conformance tests: one per concern of ``lcm_ref.oracle.conform`` (docs/design.md §9.2), and the golden
vectors. Each prints its concern's report."""

import pytest
import torch

from lcm_ref.oracle import vectors
from lcm_ref.oracle.conform import CONCERNS, DESCRIPTIONS, conform


@pytest.mark.parametrize("concern", CONCERNS)
def test_concern(impl, settings, dtype, concern):
    """One concern, judged on its own: fail fails the test, unsupported / not_observable skip it with the reason."""
    path, factory = impl
    report = conform(factory, dtype=dtype, concerns=[concern], impl=path, **settings)
    print(report)
    result = report[concern]
    if result.verdict == "fail":
        cause = f"\nlikely cause: {result.likely_cause}" if result.likely_cause else ""
        pytest.fail(f"{concern} ({DESCRIPTIONS[concern]}): FAIL\n{result.detail}{cause}\n"
                    f"reproduce:\n{result.reproduce}", pytrace=False)
    if result.verdict in ("unsupported", "not_observable"):
        pytest.skip(f"{concern}: {result.verdict}: {result.detail}")


def test_vectors(impl, settings, dtype):
    """The golden vectors (lcm_ref/oracle/vectors) within the budget; quirk cases skipped."""
    path, factory = impl
    res = vectors.check_vectors(factory, dtype=getattr(torch, dtype), profile=settings["profile"])
    print(f"{path}: {res['checked']} vector cases checked, {res['skipped']} skipped")
    assert not res["failures"], "\n".join(res["failures"])
