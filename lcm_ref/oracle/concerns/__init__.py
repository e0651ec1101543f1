"""The conformance concerns, one module per family (docs/design.md §9.2): a reader who asks "how is ``noise``
judged?" opens ``noise.py`` and finds the whole answer there — its check, its causes, its helpers.

| module | concerns |
|---|---|
| ``config`` | config |
| ``schedule`` | timesteps, original_inference_steps, strength, custom_timesteps |
| ``tables`` | tables |
| ``step`` | denoised, clip_threshold, prev_sample, final_step |
| ``noise`` | noise |
| ``dtype`` | dtype |
| ``forward`` | add_noise, get_velocity |
| ``previous_timestep`` | previous_timestep |
| ``errors`` | errors |
| ``state`` | state |
| ``interface`` | interface |
| ``causes`` | the likely-cause machinery the families share |

Here: the registry — the names (``CONCERNS``, public API), one line each of what must hold (``DESCRIPTIONS``), how
many examples each draws (``DEFAULT_EXAMPLES``) and how many must be judged to pass (``MIN_JUDGED``)."""

from __future__ import annotations

from .config import check_config
from .dtype import check_dtype
from .errors import check_errors
from .forward import check_forward
from .interface import check_interface
from .noise import check_noise
from .previous_timestep import check_previous_timestep
from .schedule import check_schedule
from .state import check_state
from .step import check_denoised, check_final_step, check_prev_sample
from .tables import check_tables

__all__ = ["CONCERNS", "DESCRIPTIONS", "MIN_JUDGED", "STEP_CONCERNS", "DEFAULT_EXAMPLES", "DEFAULT_TIMEOUT_S",
           "SHRINK_SECONDS", "CHECKS"]

#: The concerns, in report order. Their names are public API: JSON reports, conformance test ids, LCM_REF_XFAIL,
#: the mutant table (docs/design.md §9.2).
CONCERNS = ("config", "timesteps", "original_inference_steps", "strength", "custom_timesteps", "tables", "denoised",
            "prev_sample", "final_step", "noise", "dtype", "clip_threshold", "add_noise", "get_velocity",
            "previous_timestep", "errors", "state", "interface")

#: one line per concern: what must hold
DESCRIPTIONS = {
    "config": "the constructor accepts every drawn config key and value, and exposes the values given",
    "timesteps": "set_timesteps(n) selects diffusers' timesteps exactly (integers, descending)",
    "original_inference_steps": "the per-call and configured original_inference_steps select the right grid",
    "strength": "img2img strength keeps int(orig·strength) grid points, and n above that raises ValueError",
    "custom_timesteps": "custom timesteps are kept (strength-truncated), or refused with diffusers' ValueError",
    "tables": "ᾱ, final_alpha_cumprod, c_skip and c_out, where exposed, within the table budget",
    "denoised": "each step's denoised within budget (configs without clip or thresholding)",
    "prev_sample": "each step re-noises its denoised to the next scheduled timestep's level with the z it drew",
    "final_step": "the last step returns denoised: no noise added",
    "noise": "z is drawn from the generator passed: diffusers' randn_tensor stream for that shape and dtype",
    "dtype": "step, add_noise and get_velocity outputs have the sample's dtype, shape and device",
    "clip_threshold": "denoised with clip_sample (range) or dynamic thresholding (linear quantile) within budget",
    "add_noise": "add_noise(x0, noise, t), one timestep per batch row, within budget",
    "get_velocity": "get_velocity(sample, noise, t), one timestep per batch row, within budget",
    "previous_timestep": "previous_timestep(t) is the next scheduled timestep, -1 after the last (diffusers >= 0.32)",
    "errors": "bad input raises the reference's exception class; nothing passes silently",
    "state": "set_timesteps again replaces the schedule, a second run repeats the first, set_begin_index is honoured",
    "interface": "what pipelines rely on: scale_model_input is the identity, init_noise_sigma 1, order 1, "
                 "step(return_dict=False) the tuple (prev_sample, denoised), step_index / begin_index, len()",
}

#: The fewest judged examples (compared with the reference, not skipped, not refused) on which a concern may pass
#: (docs/design.md §9.1). A deviation that shows in a fraction p of the examples drawn from the implementation's
#: region escapes n independent examples with probability (1 − p)^n. The step concerns judge whole multistep runs
#: (every step, every element), so a wrong formula shows in nearly every example and the bound is set for
#: p = 0.25: n = 10 misses with probability 0.056. The schedule concerns see a deviation only at some (n, orig,
#: strength) combinations — the sgm_uniform schedule differs at 32 of 50 n, a strength rounding at about one
#: strength in ten — so they need p = 0.1: n = 30 misses with probability 0.042 (20 for the narrower
#: original_inference_steps, strength and custom_timesteps regions, where the canonical cases add the known
#: boundaries). errors: 20 bad requests (each a different error class or boundary). tables, dtype, state and
#: interface check properties that hold or fail for every config (a stored table, an output dtype, object reuse,
#: the interface's constants): 5 configs, 1 for interface (its cases are fixed, not drawn).
MIN_JUDGED = {
    "config": 10, "timesteps": 30, "original_inference_steps": 20, "strength": 20, "custom_timesteps": 20,
    "tables": 5, "denoised": 10, "prev_sample": 10, "final_step": 10, "noise": 10, "dtype": 5,
    "clip_threshold": 10, "add_noise": 10, "get_velocity": 10, "previous_timestep": 10, "errors": 20, "state": 5,
    "interface": 5,
}
#: the concerns that judge the step itself: a run in which none of them passed has not checked the scheduler
STEP_CONCERNS = ("denoised", "prev_sample", "final_step", "clip_threshold")

#: hypothesis examples per concern (canonical cases run in addition). Sized so that ``lcm-ref conform
#: diffusers:LCMScheduler`` fits 30 s on one CPU core, imports included (docs/design.md §9.1; measured with
#: taskset -c 0: 16–19 s for diffusers in each dtype, 23–26 s for lcm_ref's drop-in, whose constructor builds the
#: reference's mpmath tables for every new config), and every mutant of ``lcm_ref.oracle.mutants`` fails in its concern
#: (tests/test_conform.py). Step concerns cost a reference table per new config (≈ 65 ms in mpmath) and a multistep
#: run; schedule concerns cost a constructor and set_timesteps.
DEFAULT_EXAMPLES = {
    "config": 40, "timesteps": 100, "original_inference_steps": 100, "strength": 100, "custom_timesteps": 80,
    "tables": 25, "denoised": 30, "prev_sample": 30, "final_step": 25, "noise": 25, "dtype": 20,
    "clip_threshold": 25, "add_noise": 30, "get_velocity": 30, "previous_timestep": 50, "errors": 60, "state": 25,
    "interface": 10,
}

DEFAULT_TIMEOUT_S = 30.0
#: wall-clock seconds hypothesis may spend shrinking one concern's failure (then the smallest failing case found)
SHRINK_SECONDS = 10.0


#: concern -> its check function (each module of this package holds a family's checks, causes and helpers)
CHECKS: dict = {
    "config": check_config, "timesteps": check_schedule, "original_inference_steps": check_schedule,
    "strength": check_schedule, "custom_timesteps": check_schedule, "tables": check_tables,
    "denoised": check_denoised, "prev_sample": check_prev_sample, "final_step": check_final_step,
    "noise": check_noise, "dtype": check_dtype, "clip_threshold": check_denoised, "add_noise": check_forward,
    "get_velocity": check_forward, "previous_timestep": check_previous_timestep, "errors": check_errors,
    "state": check_state, "interface": check_interface,
}
