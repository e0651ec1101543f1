"""Conformance suite: ``pytest --pyargs lcm_ref.conformance`` checks any scheduler with diffusers' LCMScheduler
interface against ``lcm_ref.reference`` (through ``lcm_ref.oracle.check`` and the golden vectors).

Options: environment variables, or the same as pytest options (registered by the ``lcm_ref_conformance`` pytest
plugin that installing lcm_ref adds; ``-p lcm_ref.conformance.options`` where it is not installed):

=====================  =====================  ==========================================================
variable               option                 meaning (default)
=====================  =====================  ==========================================================
LCM_REF_IMPL           --lcm-impl             the scheduler as module:attr (diffusers:LCMScheduler)
LCM_REF_DTYPE          --lcm-dtype            comma-separated dtypes of the inputs (float32)
LCM_REF_DEVICE         --lcm-device           torch device (cpu)
LCM_REF_EXAMPLES       --lcm-examples         hypothesis examples per test (lcm_ref.oracle.DEFAULT_MAX_EXAMPLES)
LCM_REF_PROFILE        --lcm-profile          diffusers or strict (diffusers)
LCM_REF_XFAIL          --lcm-xfail            comma-separated tests expected to fail: timesteps, step,
                                              add_noise, get_velocity, vectors (none)
=====================  =====================  ==========================================================

    LCM_REF_IMPL=my_pkg.sched:MyLCM LCM_REF_DTYPE=float32,float64 pytest --pyargs lcm_ref.conformance
    pytest --pyargs lcm_ref.conformance --lcm-impl=my_pkg.sched:MyLCM
"""

import os

OPTIONS = {
    "impl": ("LCM_REF_IMPL", "diffusers:LCMScheduler"),
    "dtype": ("LCM_REF_DTYPE", "float32"),
    "device": ("LCM_REF_DEVICE", "cpu"),
    "examples": ("LCM_REF_EXAMPLES", ""),
    "profile": ("LCM_REF_PROFILE", "diffusers"),
    "xfail": ("LCM_REF_XFAIL", ""),
}


def option(config, name):
    """The value of option ``name``: the pytest option if given, else the environment variable, else default."""
    env, default = OPTIONS[name]
    value = None
    if config is not None:
        try:
            value = config.getoption(f"--lcm-{name}")
        except ValueError:       # options not registered (plugin not loaded)
            value = None
    return value if value not in (None, "") else os.environ.get(env, default)
