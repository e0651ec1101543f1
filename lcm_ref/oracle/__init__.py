"""The oracle: how far an implementation of the LCM scheduler is from ``lcm_ref.reference``, and why.

- ``conform(factory)``: every conformance concern judged on its own, one verdict each (``conform.CONCERNS``);
- ``check(factory)``: conform's fail-fast mode: raises ``OracleMismatch`` at the first concern that fails;
- ``support``: what an implementation accepts, the region conform draws from; ``concerns``: one module per family;
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

from .cases import CANONICAL, Case, canonical_cases
from .compare import load_factory
from .conform import (CONCERNS, ConcernResult, ConformanceReport, OracleMismatch, check, conform, replay)

__all__ = ["CANONICAL", "Case", "OracleMismatch", "canonical_cases", "check", "load_factory", "replay", "CONCERNS",
           "ConcernResult", "ConformanceReport", "conform"]
