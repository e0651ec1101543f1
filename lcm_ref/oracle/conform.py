"""Conformance: every concern of an LCM scheduler, each judged on its own (docs/design.md §9).

    >>> import diffusers
    >>> from lcm_ref.oracle.conform import conform
    >>> report = conform(diffusers.LCMScheduler)
    >>> print(report)                  # a verdict per concern, then PASS or FAIL
    >>> report.ok, report.to_json()

``conform(factory)`` takes what ``check`` takes — ``factory(**LCMConfig.to_dict())`` builds a scheduler with diffusers'
``LCMScheduler`` interface — and checks each concern of ``CONCERNS`` separately: its own examples (canonical cases
where useful, then a hypothesis run from a seed fixed by the concern's name, ``compare.hypothesis_seed``), its own
verdict (``VERDICTS``). A deviation therefore shows in the concern it breaks and hides no other one, where ``check``
stops at the first difference.

Every verdict states its evidence: ``judged`` (examples compared with the reference) of ``examples`` (run); a concern
passes only on at least ``MIN_JUDGED`` judged examples, else it is ``inconclusive`` — and the run is PASS, FAIL or
INCOMPLETE (``ConformanceReport.status``, exit codes 0 / 1 / 3). Draws stay inside what the implementation accepts
(``lcm_ref.oracle.support``), and an exception from ``step``, ``add_noise`` or ``get_velocity`` on a config it
accepted fails the concern with its traceback: only what an implementation says on purpose is a refusal.

- Schedule concerns (``timesteps``, ``original_inference_steps``, ``strength``, ``custom_timesteps``, ``errors``)
  compare the integers and exception classes of ``set_timesteps``.
- Step concerns (``denoised``, ``prev_sample``, ``final_step``, ``noise``, ``dtype``, ``clip_threshold``) run whole
  multistep runs on the implementation's **own** schedule (``scheduler.timesteps`` after its ``set_timesteps``):
  given the timesteps it chose, are its steps right? Each step's input is its own previous ``prev_sample``; the
  reference is evaluated at those inputs with the schedule the implementation reports. ``prev_sample`` re-noises the
  implementation's own ``denoised`` with the z it drew (captured by ``noise.NoiseTap``), so an error of denoised is
  judged once, in ``denoised``, and a wrong noise stream only in ``noise``.
- ``tables``, ``add_noise``, ``get_velocity``, ``previous_timestep``, ``config``, ``state``: see ``DESCRIPTIONS``.

Floats are judged by ``lcm_ref.oracle.compare`` (docs/design.md §8.4: the correctly rounded answer is accepted) against
the budget of ``lcm_ref.oracle.budget`` for the dtype and the table precision ``tables`` (§8.5).

Where things are (docs/design.md §9): the driver is ``lcm_ref.oracle.run`` (``conform``, ``check``, ``replay``); each
concern family is a module of ``lcm_ref.oracle.concerns`` (its check, its causes); what the implementation accepts
is probed by ``lcm_ref.oracle.support``; one example's calls and findings are ``lcm_ref.oracle.example``; results
and the JSON schema are ``lcm_ref.oracle.report``. This module is the public entry point and re-exports them.
"""

from .cases import draw_concern_case
from .concerns import (CONCERNS, DEFAULT_EXAMPLES, DEFAULT_TIMEOUT_S, DESCRIPTIONS, MIN_JUDGED, SHRINK_SECONDS,
                       STEP_CONCERNS)
from .concerns.causes import NO_KNOWN_PATTERN
from .example import CaseTimeout, exception_text, refusal
from .report import (EXIT_CODES, SCHEMA_PATH, STATUSES, VERDICTS, ConcernResult, ConformanceReport, OracleMismatch,
                     schema)
from .run import check, conform, replay

__all__ = ["CONCERNS", "DESCRIPTIONS", "VERDICTS", "STATUSES", "EXIT_CODES", "MIN_JUDGED", "STEP_CONCERNS",
           "NO_KNOWN_PATTERN", "DEFAULT_EXAMPLES", "DEFAULT_TIMEOUT_S", "SHRINK_SECONDS", "SCHEMA_PATH",
           "ConcernResult", "ConformanceReport", "CaseTimeout", "OracleMismatch", "conform", "check", "replay",
           "schema", "draw_concern_case", "refusal", "exception_text"]
