"""Conformance suite: ``pytest --pyargs lcm_ref.conformance`` judges any scheduler with diffusers' LCMScheduler
interface against ``lcm_ref.reference``: one test per conformance concern (``lcm_ref.oracle.conform.CONCERNS``,
docs/design.md §9.2), each run through ``conform(..., concerns=[name])``, plus the golden vectors.

A concern that fails fails its test (the message is the concern's report: the smallest failing case, got / want,
the scaled error against the budget, a likely cause and a ``replay(...)`` snippet); so does an ``inconclusive``
one (fewer judged examples than its minimum); ``unsupported`` and ``not_observable`` concerns are skipped with the
reason, and ``test_step_judged`` fails unless at least one step concern passed, so the suite is never green when
nothing was judged.

Options: environment variables, or the same as pytest options (registered by the ``lcm_ref_conformance`` pytest
plugin that installing lcm_ref adds; ``-p lcm_ref.conformance.options`` where it is not installed):

| variable | option | meaning (default) |
|---|---|---|
| ``LCM_REF_IMPL`` | ``--lcm-impl`` | the scheduler as module:attr (``diffusers:LCMScheduler``) |
| ``LCM_REF_DTYPE`` | ``--lcm-dtype`` | comma-separated dtypes of the inputs (float32) |
| ``LCM_REF_DEVICE`` | ``--lcm-device`` | torch device (cpu) |
| ``LCM_REF_EXAMPLES`` | ``--lcm-examples`` | hypothesis examples per concern (each concern's default, ``lcm_ref.oracle.conform.DEFAULT_EXAMPLES``) |
| ``LCM_REF_TABLES`` | ``--lcm-tables`` | table precision allowed: float32 or float64 (float32) |
| ``LCM_REF_PROFILE`` | ``--lcm-profile`` | diffusers or strict (diffusers) |
| ``LCM_REF_XFAIL`` | ``--lcm-xfail`` | comma-separated concerns (or "vectors") expected to fail (none) |
| ``LCM_REF_MIN_JUDGED`` | ``--lcm-min-judged`` | judged examples every concern needs to pass (each concern's own, ``lcm_ref.oracle.conform.MIN_JUDGED``) |

For example:

    LCM_REF_IMPL=my_pkg.sched:MyLCM LCM_REF_DTYPE=float32,float64 pytest --pyargs lcm_ref.conformance
    pytest --pyargs lcm_ref.conformance --lcm-impl=my_pkg.sched:MyLCM -k "noise or prev_sample"
"""

import os

OPTIONS = {
    "impl": ("LCM_REF_IMPL", "diffusers:LCMScheduler"),
    "dtype": ("LCM_REF_DTYPE", "float32"),
    "device": ("LCM_REF_DEVICE", "cpu"),
    "examples": ("LCM_REF_EXAMPLES", ""),
    "tables": ("LCM_REF_TABLES", "float32"),
    "profile": ("LCM_REF_PROFILE", "diffusers"),
    "xfail": ("LCM_REF_XFAIL", ""),
    "min_judged": ("LCM_REF_MIN_JUDGED", ""),
}


def option(config, name):
    """The value of option ``name``: the pytest option if given, else the environment variable, else default."""
    env, default = OPTIONS[name]
    value = None
    if config is not None:
        try:
            value = config.getoption(f"--lcm-{name.replace('_', '-')}")
        except ValueError:       # options not registered (plugin not loaded)
            value = None
    return value if value not in (None, "") else os.environ.get(env, default)
