"""The oracle: how far an implementation of the LCM scheduler is from ``lcm_ref.reference``, and why.

- ``conform(factory)``: every conformance concern judged on its own, one verdict each (``conform.CONCERNS``);
- ``check(factory)``: the fail-fast form: raises ``OracleMismatch`` on the first difference beyond the budget;
- ``compare``: the one compare-within-budget rule both use (docs/design.md §8.4);
- ``budget``: the error budget of a float implementation, derived operation by operation;
- ``strategies``: the hypothesis draws (configs, schedule requests, tensors);
- ``noise``: what noise a scheduler drew;
- ``mutants``: fault-injected schedulers every check must catch;
- ``vectors``: the golden vectors (language-neutral JSON).

    >>> import diffusers
    >>> from lcm_ref.oracle import check
    >>> print(check(diffusers.LCMScheduler))
"""

from .check import (CANONICAL, DEFAULT_MAX_EXAMPLES, PARTS, Case, OracleMismatch, Report, canonical_cases, check, draw_case,
                    load_factory, replay, run_case)
from .conform import CONCERNS, ConcernResult, ConformanceReport, conform

__all__ = ["CANONICAL", "DEFAULT_MAX_EXAMPLES", "PARTS", "Case", "OracleMismatch", "Report", "canonical_cases", "check",
           "draw_case", "load_factory", "replay", "run_case", "CONCERNS", "ConcernResult", "ConformanceReport",
           "conform"]
