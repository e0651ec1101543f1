"""The conformance tests: one per concern of ``lcm_ref.oracle.conform`` (docs/design.md §9.2), and the golden
vectors. Each prints its concern's report."""

import pytest
import torch

from lcm_ref.oracle import vectors
from lcm_ref.oracle.conform import CONCERNS, DESCRIPTIONS, STEP_CONCERNS, conform

#: (impl, dtype, concern) -> ConcernResult of this session, so that test_step_judged reuses what test_concern ran
_RESULTS = {}


def _judge(impl, settings, dtype, concern):
    key = (impl[0], dtype, concern)
    if key not in _RESULTS:
        _RESULTS[key] = conform(impl[1], dtype=dtype, concerns=[concern], impl=impl[0], **settings)[concern]
    return _RESULTS[key]


@pytest.mark.parametrize("concern", CONCERNS)
def test_concern(impl, settings, dtype, concern):
    """One concern, judged on its own: fail and inconclusive (too few examples judged) fail the test;
    unsupported / not_observable skip it with the reason."""
    result = _judge(impl, settings, dtype, concern)
    print(f"{concern}: {result.verdict} ({result.judged} of {result.examples} judged)\n{result.detail}")
    if result.verdict == "fail":
        cause = f"\nlikely cause: {result.likely_cause}" if result.likely_cause else ""
        pytest.fail(f"{concern} ({DESCRIPTIONS[concern]}): FAIL\n{result.detail}{cause}\n"
                    f"reproduce:\n{result.reproduce}", pytrace=False)
    if result.verdict == "inconclusive":
        pytest.fail(f"{concern}: INCONCLUSIVE: {result.reason}\n{result.detail}", pytrace=False)
    if result.verdict in ("unsupported", "not_observable"):
        pytest.skip(f"{concern}: {result.verdict}: {result.reason}\n{result.detail}")


def test_step_judged(impl, settings, dtype):
    """The suite is never green on nothing: at least one step concern passed (skipped concerns alone fail this)."""
    results = [_judge(impl, settings, dtype, c) for c in STEP_CONCERNS]
    assert any(r.verdict == "pass" for r in results), (
        "no step concern passed, so the scheduler's step was not judged: "
        + "; ".join(f"{r.concern}: {r.verdict} ({r.reason})" for r in results))


def test_vectors(impl, settings, dtype):
    """The golden vectors (lcm_ref/oracle/vectors) within the budget; quirk cases skipped."""
    path, factory = impl
    res = vectors.check_vectors(factory, dtype=getattr(torch, dtype), profile=settings["profile"])
    print(f"{path}: {res['checked']} vector cases checked, {res['skipped']} skipped")
    assert not res["failures"], "\n".join(res["failures"])
