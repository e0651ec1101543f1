"""What the LCM scheduler does with a given config: schedule tables, the inert parameters and the quirks of diffusers'
``LCMScheduler`` demonstrated live, and the timesteps other implementations pick (docs/design.md §13).

The logic behind ``notebooks/scheduler_behaviour.ipynb`` and ``lcm-ref timesteps``. Every number comes from
``lcm_ref.reference`` (float64, exact tables) or from the installed diffusers, run here and now; nothing is quoted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import Callable, NamedTuple

import numpy as np

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError, StrictError

#: Configs seen in the wild (docs/design.md §4). The SD/SDXL LCM carries steps_offset=1, set_alpha_to_one=False and
#: timestep_spacing="leading" from its base model's config; all three are inert for LCM.
COMMON_CONFIGS = {
    "SD/SDXL LCM (epsilon)": LCMConfig(steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading"),
    "Marigold-LCM (v_prediction)": LCMConfig(prediction_type="v_prediction", set_alpha_to_one=False),
    "SSD-1B LCM (original_inference_steps=4)": LCMConfig(original_inference_steps=4),
    "linear betas": LCMConfig(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "squaredcos_cap_v2": LCMConfig(beta_schedule="squaredcos_cap_v2"),
    "zero-SNR (rescale_betas_zero_snr)": LCMConfig(rescale_betas_zero_snr=True),
}

#: One shape for every live demo: batch 2 so that dynamic thresholding has a per-sample quantile to take.
DEMO_SHAPE = (2, 4, 8, 8)


# ---------------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------------

def _one_minus_c_out(cfg: LCMConfig, t):
    """1 − c_out without cancellation: σ²/(√(u²+σ²)·(√(u²+σ²)+u)), u = t·timestep_scaling (float64; for t ≥ 0)."""
    u = np.asarray(t, dtype=np.float64) * cfg.timestep_scaling
    with np.errstate(over="ignore"):
        r = np.hypot(u, ref.SIGMA_DATA)
        return ref.SIGMA_DATA ** 2 / (r * (r + u))


def schedule_table(cfg: LCMConfig, timesteps, num_inference_steps=None) -> list[dict]:
    """One row per step: t, ᾱ_t, SNR = ᾱ/(1−ᾱ), σ_t = √(1−ᾱ)/√ᾱ (the VE / k-diffusion noise level of the sample at
    t), c_skip, c_out, 1 − c_out, and the timestep the step re-noises to (``next_t``; None on the last step).

    ``num_inference_steps`` (default ``len(timesteps)``) decides which step is last, as in diffusers: with quirk 1 the
    last timestep re-noises to itself. A timestep outside [0, T) (quirk 4, strength > 1) gets NaN for the ᾱ-based
    columns."""
    ts = [int(t) for t in timesteps]
    n = len(ts) if num_inference_steps is None else num_inference_steps
    T = cfg.num_train_timesteps
    abar, sq, sq1m = ref.alphas_cumprod(cfg), ref.sqrt_alphas_cumprod(cfg), ref.sqrt_one_minus_alphas_cumprod(cfg)
    rows = []
    for i, t in enumerate(ts):
        c_skip, c_out = ref.boundary_scalings(cfg, t)
        inside = -T <= t < T
        a = float(abar[t]) if inside else math.nan
        with np.errstate(divide="ignore"):
            snr = a / (1.0 - a) if inside and a < 1 else (math.inf if inside else math.nan)
            sigma = float(np.float64(sq1m[t]) / np.float64(sq[t])) if inside else math.nan
        next_t = None if i == n - 1 else (ts[i + 1] if i + 1 < len(ts) else t)
        rows.append(dict(step=i, t=t, alpha_bar=a, snr=snr, sigma=sigma, c_skip=float(c_skip), c_out=float(c_out),
                         one_minus_c_out=float(_one_minus_c_out(cfg, t)) if t >= 0 else 1.0 - float(c_out),
                         next_t=next_t))
    return rows


def timestep_table(cfg: LCMConfig, steps=range(1, 9), *, live=True, **kwargs) -> list[dict]:
    """Rows ``{"n", "timesteps", "= diffusers"}``: ``ref.timesteps(cfg, n, **kwargs)`` and, with ``live``, whether the
    installed diffusers' ``set_timesteps`` chose the same (or raised the same exception class). An n that the config
    refuses gets the error message instead of timesteps."""
    rows = []
    for n in steps:
        try:
            got = ref.timesteps(cfg, n, **kwargs).tolist()
        except (ValueError, ZeroDivisionError) as e:
            got = e
        row = {"n": n, "timesteps": got if isinstance(got, list) else f"{type(got).__name__}: {got}"}
        if live:
            try:
                want = diffusers_timesteps(cfg, n, **kwargs)
            except Exception as e:   # compared by class below
                want = e
            row["= diffusers"] = (want == got) if isinstance(got, list) else type(want) is type(got)
        rows.append(row)
    return rows


#: (custom timesteps, strength, what the case probes)
CUSTOM_CASES = [
    ([999, 759, 499, 259], 1.0, "on the grid (the n=4 schedule)"),
    ([999, 879, 759, 639, 499, 379, 259, 139], 1.0, "the n=8 schedule"),
    ([999, 500], 1.0, "500 is off the grid: a warning, accepted"),
    ([899, 499, 99], 1.0, "starts below T−1: a warning, accepted"),
    ([999, 759, 499, 259], 0.5, "strength < 1 cuts from the front (quirk 1: num_inference_steps is not cut)"),
    ([999, 759, 499, 259], 0.3, "strength 0.3: int(4·0.3) = 1 timestep kept"),
]


def custom_schedules(cfg: LCMConfig | None = None, cases=CUSTOM_CASES) -> list[dict]:
    """Custom ``timesteps=`` schedules through ``ref.set_timesteps`` and the live diffusers: the timesteps kept, the
    ``num_inference_steps`` recorded, the warnings each side gave, and whether they agree."""
    cfg = cfg or LCMConfig()
    rows = []
    for ts, strength, what in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sched = ref.set_timesteps(cfg, timesteps=ts, strength=strength)
        s = diffusers_scheduler(cfg)
        with captured_diffusers_log() as logged:
            s.set_timesteps(timesteps=ts, strength=strength)
        rows.append({"timesteps=": ts, "strength": strength, "probes": what, "kept": sched.timesteps.tolist(),
                     "num_inference_steps": sched.num_inference_steps,
                     "lcm_ref warnings": len(caught), "diffusers warnings": len(logged),
                     "= diffusers": [int(t) for t in s.timesteps] == sched.timesteps.tolist()
                     and s.num_inference_steps == sched.num_inference_steps})
    return rows


def diffusers_timesteps(cfg: LCMConfig, num_inference_steps=None, **kwargs) -> list[int]:
    """The timesteps the installed diffusers' LCMScheduler chooses (live)."""
    s = diffusers_scheduler(cfg)
    with warnings.catch_warnings(), captured_diffusers_log():
        warnings.simplefilter("ignore")
        s.set_timesteps(num_inference_steps, **kwargs)
    return [int(t) for t in s.timesteps]


def curves(cfg: LCMConfig) -> dict:
    """ᾱ, SNR, c_skip and 1 − c_out over every training timestep t = 0..T−1 (for the per-schedule plots).
    1 − c_out is formed without cancellation: σ²/(√(u²+σ²)(√(u²+σ²)+u))."""
    t = np.arange(cfg.num_train_timesteps)
    abar = np.asarray(ref.alphas_cumprod(cfg))
    c_skip, c_out = ref.boundary_scalings(cfg, t)
    with np.errstate(divide="ignore"):
        snr = abar / (1.0 - abar)
    return dict(t=t, alpha_bar=abar, snr=snr, c_skip=c_skip, c_out=c_out, one_minus_c_out=_one_minus_c_out(cfg, t))


#: the configs and timestep_scaling values of ``schedule_curves_figure``
CURVE_CONFIGS = ("SD/SDXL LCM (epsilon)", "linear betas", "squaredcos_cap_v2", "zero-SNR (rescale_betas_zero_snr)")
CURVE_SCALINGS = (0.1, 1.0, 10.0, 100.0)


def schedule_curves_figure(configs=CURVE_CONFIGS, scalings=CURVE_SCALINGS):
    """ᾱ_t and SNR_t per config of ``COMMON_CONFIGS`` (top), c_skip(t) and 1 − c_out(t) per timestep_scaling
    (bottom); dots mark the 4-step schedule's timesteps. Returns (figure, rows of ``behaviour_alpha_bar_snr.csv``,
    rows of ``behaviour_c_skip_c_out.csv``)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.8))
    snr_rows, scaling_rows = [], []
    for name in configs:
        cfg = COMMON_CONFIGS[name]
        c, ts = curves(cfg), ref.timesteps(cfg, 4)
        line, = axes[0, 0].plot(c["t"], c["alpha_bar"], label=name)
        axes[0, 0].plot(ts, c["alpha_bar"][ts], "o", color=line.get_color())
        axes[0, 1].semilogy(c["t"], c["snr"], color=line.get_color())
        axes[0, 1].semilogy(ts, c["snr"][ts], "o", color=line.get_color())
        snr_rows += [{"config": name, "t": int(t), "alpha_bar": float(c["alpha_bar"][t]), "snr": float(c["snr"][t])}
                     for t in c["t"]]
    ts = ref.timesteps(LCMConfig(), 4)
    for s in scalings:
        c = curves(LCMConfig(timestep_scaling=s))
        line, = axes[1, 0].loglog(c["t"][1:], c["c_skip"][1:], label=f"timestep_scaling = {s:g}")
        axes[1, 1].loglog(c["t"][1:], c["one_minus_c_out"][1:], color=line.get_color())
        axes[1, 0].loglog(ts, c["c_skip"][ts], "o", color=line.get_color())
        axes[1, 1].loglog(ts, c["one_minus_c_out"][ts], "o", color=line.get_color())
        scaling_rows += [{"timestep_scaling": s, "t": int(t), "c_skip": float(c["c_skip"][t]),
                          "one_minus_c_out": float(c["one_minus_c_out"][t])} for t in c["t"]]
    text = (("ᾱ_t: the share of signal kept at timestep t", "ᾱ_t (signal variance, 0 to 1)"),
            ("signal-to-noise ratio SNR_t = ᾱ/(1 − ᾱ)", "SNR_t (log)"),
            ("c_skip(t): weight of the input sample (ideal 0)", "c_skip (log)"),
            ("1 − c_out(t): shortfall of the model's weight (ideal 0)", "1 − c_out (log)"))
    for ax, (title, ylabel) in zip(axes.flat, text):
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="timestep t", ylabel=ylabel)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Schedules of common configs; dots: the timesteps of a 4-step schedule", fontsize=10)
    fig.tight_layout()
    return fig, snr_rows, scaling_rows


# ---------------------------------------------------------------------------------------------------------------
# Running diffusers live
# ---------------------------------------------------------------------------------------------------------------

def diffusers_scheduler(cfg: LCMConfig, **overrides):
    """A ``diffusers.LCMScheduler`` with ``cfg``'s fields (plus ``overrides``), built quietly."""
    from diffusers import LCMScheduler
    d = cfg.to_dict()
    d.update(overrides)
    return LCMScheduler(**d)


class Run(NamedTuple):
    """A sampling loop run through diffusers: the timesteps, and per call the (prev_sample, denoised) tensors, or the
    exception that stopped it (``error``); ``inputs`` per completed call (timestep passed, sample, model output, the
    noise z the step drew or would have drawn), so that ``compare_with_reference`` can replay each step."""
    timesteps: list
    outputs: list
    error: Exception | None
    warnings: list
    inputs: tuple = ()


@contextlib.contextmanager
def captured_diffusers_log():
    """Collect what diffusers logs (its warnings go through ``logging``, not ``warnings``) into a list of strings,
    instead of printing them."""
    messages = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("diffusers")
    handler, propagate = _Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    saved = [(h, h.level) for h in logger.handlers if h is not handler]
    for h, _ in saved:
        h.setLevel(logging.CRITICAL + 1)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        for h, level in saved:
            h.setLevel(level)


def run_diffusers(scheduler, set_timesteps: dict, *, calls=None, timesteps_to_pass=None, seed=0,
                  shape=DEMO_SHAPE, dtype="float32") -> Run:
    """Run ``scheduler.set_timesteps(**set_timesteps)`` then ``step`` once per timestep (or ``calls`` times, passing
    ``timesteps_to_pass[i]`` if given, else the schedule's i-th entry, else its last), as a pipeline does.

    Inputs are fixed by ``seed``: x_T and one model output per call from a CPU ``torch.Generator``; the scheduler's
    noise comes from a second generator seeded ``seed + 1``. Two runs with equal seeds see identical inputs."""
    import torch
    from ..oracle.noise import step_noise
    dt = getattr(torch, dtype)
    with warnings.catch_warnings(record=True) as caught, captured_diffusers_log() as logged:
        warnings.simplefilter("always")
        scheduler.set_timesteps(**set_timesteps)
    sched = list(scheduler.timesteps)
    n_calls = len(sched) if calls is None else calls
    g_in = torch.Generator().manual_seed(seed)
    g_noise = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape, generator=g_in, dtype=torch.float64).to(dt)
    outputs, inputs, error = [], [], None
    for i in range(n_calls):
        t = timesteps_to_pass[i] if timesteps_to_pass is not None else sched[min(i, len(sched) - 1)]
        m = torch.randn(shape, generator=g_in, dtype=torch.float64).to(dt)
        try:
            with step_noise(m, g_noise) as tap:
                out = scheduler.step(m, t, x, generator=g_noise)
        except Exception as e:          # the demo reports what diffusers raised
            error = e
            break
        outputs.append((out.prev_sample, out.denoised))
        inputs.append((int(t), x, m, tap.z))
        x = out.prev_sample
    return Run([int(t) for t in sched], outputs, error, logged + [str(w.message) for w in caught], inputs)


def compare_with_reference(cfg: LCMConfig, run: Run, num_inference_steps=None) -> str:
    """Replay every step of ``run`` (diffusers, float32) through ``ref.step`` on the very same inputs (sample, model
    output, noise, step index; ``num_inference_steps`` as the scheduler had it, default the schedule's length) and
    say whether the outputs agree: the same non-finite elements (exact: a NaN or ±inf is a yes/no per element), and
    every finite element within the oracle's float32 budget (``oracle.budget.step_bound``: the largest |float32 −
    exact| diffusers' arithmetic and float32 tables admit, the reference's own error included). Returns a sentence
    that starts "agrees" or "differs"."""
    from ..numerics import to_f64
    from ..oracle.budget import step_bound
    n = len(run.timesteps) if num_inference_steps is None else num_inference_steps
    worst, nonfinite, total = 0.0, 0, 0
    for i, ((t, x, m, z), outs) in enumerate(zip(run.inputs, run.outputs)):
        x, m, z = to_f64(x), to_f64(m), to_f64(z)
        with np.errstate(all="ignore"):
            want = ref.step(cfg, m, t, x, schedule=run.timesteps, noise=z, step_index=i, num_inference_steps=n)
            bounds = step_bound(cfg, m, t, x, z, schedule=run.timesteps, step_index=i, num_inference_steps=n)
        for what, got, w, b in zip(("prev_sample", "denoised"), outs, (want.prev_sample, want.denoised),
                                   (bounds[1], bounds[0])):    # step_bound gives (denoised, prev)
            got = to_f64(got)
            fin = np.isfinite(w)
            if not np.array_equal(fin, np.isfinite(got)) or not np.array_equal(got[~fin], w[~fin], equal_nan=True):
                return (f"differs from diffusers at call {i + 1} (t={t}): {what} has non-finite elements at other "
                        f"places or of other values ({int((~np.isfinite(got)).sum())} in diffusers, "
                        f"{int((~fin).sum())} in the reference)")
            with np.errstate(all="ignore"):
                ratio = np.where(fin, np.abs(got - w) / np.where(b > 0, b, np.inf), 0.0)
            if fin.any() and not np.all(np.abs(got - w)[fin] <= b[fin]):
                return (f"differs from diffusers at call {i + 1} (t={t}): {what} is {float(ratio.max()):.3g}× the "
                        "float32 budget away")
            worst = max(worst, float(ratio.max()) if ratio.size else 0.0)
            nonfinite, total = nonfinite + int((~fin).sum()), total + fin.size
    finite = (f"the finite ones within the float32 budget (worst {worst:.2g} of it)" if nonfinite < total else
              "no finite one to compare")
    return (f"agrees with diffusers on all {len(run.outputs)} calls: the same non-finite elements ({nonfinite} of "
            f"{total}), {finite}")


def same_as_diffusers(ours, theirs) -> str:
    """Integers (timesteps, counts) compared exactly: "equal to diffusers'" or "differs from diffusers' (…)"."""
    return "equal to diffusers'" if list(ours) == list(theirs) else f"differs from diffusers' ({list(theirs)})"


def bit_identical(a: Run, b: Run) -> bool:
    """Same timesteps, same number of outputs, every output tensor equal bit for bit (NaN compared as bits)."""
    import torch
    if a.timesteps != b.timesteps or len(a.outputs) != len(b.outputs):
        return False
    for (pa, da), (pb, db) in zip(a.outputs, b.outputs):
        for u, v in ((pa, pb), (da, db)):
            if u.dtype != v.dtype or u.shape != v.shape:
                return False
            bits = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
                    torch.bfloat16: torch.int16}[u.dtype]
            if not torch.equal(u.view(bits), v.view(bits)):
                return False
    return True


#: (parameter, value A, value B): every value diffusers' config accepts for the parameter, paired against the default.
INERT_PARAMETERS = [
    ("timestep_spacing", "leading", "trailing"),
    ("timestep_spacing", "leading", "linspace"),
    ("steps_offset", 0, 1),
    ("steps_offset", 0, 7),
    ("set_alpha_to_one", True, False),
]

#: The set_timesteps calls each inert parameter is run through.
INERT_CALLS = [
    {"num_inference_steps": 1},
    {"num_inference_steps": 4},
    {"num_inference_steps": 8, "original_inference_steps": 30},
    {"num_inference_steps": 3, "strength": 0.6},
    {"timesteps": [999, 759, 499, 259]},
]


def inert_parameters(cfg: LCMConfig | None = None, *, prediction_types=("epsilon", "v_prediction", "sample"),
                     seed=0) -> list[dict]:
    """Build two diffusers schedulers differing only in one parameter, run identical sampling loops through both and
    compare every output bit for bit; one row per (parameter, values, prediction type, set_timesteps call)."""
    cfg = cfg or LCMConfig()
    rows = []
    for name, a, b in INERT_PARAMETERS:
        for pt in prediction_types:
            c = cfg.replace(prediction_type=pt)
            for call in INERT_CALLS:
                ra = run_diffusers(diffusers_scheduler(c, **{name: a}), call, seed=seed)
                rb = run_diffusers(diffusers_scheduler(c, **{name: b}), call, seed=seed)
                rows.append(dict(parameter=name, values=f"{a!r} vs {b!r}", prediction_type=pt,
                                 set_timesteps=_call_repr(call), timesteps=ra.timesteps,
                                 bit_identical=bit_identical(ra, rb)))
    return rows


def set_alpha_to_one_matters(cfg: LCMConfig | None = None, seed=0) -> dict:
    """The one case where ``set_alpha_to_one`` acts: a custom schedule whose next timestep is negative, so ᾱ_prev is
    ``final_alpha_cumprod`` (1.0, or ᾱ_0). Returns the two runs' re-noised samples' difference and what lcm_ref's
    reference says ᾱ_prev is in each case."""
    cfg = cfg or LCMConfig()
    call = {"timesteps": [999, 499, -1]}
    runs = {v: run_diffusers(diffusers_scheduler(cfg, set_alpha_to_one=v), call, seed=seed) for v in (True, False)}
    step = 1                    # the step at t=499, whose next timestep is -1
    d = (runs[True].outputs[step][0] - runs[False].outputs[step][0]).abs().max().item()
    return dict(timesteps=call["timesteps"], step=step, max_abs_difference_of_prev_sample=d,
                final_alpha_cumprod={v: ref.final_alpha_cumprod(cfg.replace(set_alpha_to_one=v))
                                     for v in (True, False)},
                bit_identical=bit_identical(runs[True], runs[False]))


def _call_repr(call):
    return ", ".join(f"{k}={v}" for k, v in call.items())


# ---------------------------------------------------------------------------------------------------------------
# Quirks (docs/design.md §6), each demonstrated live against the installed diffusers, beside lcm_ref's strict profile
# ---------------------------------------------------------------------------------------------------------------

class Quirk(NamedTuple):
    number: int
    title: str
    diffusers: str          # what the installed diffusers did, measured now
    reference: str          # what lcm_ref's default profile (profile="diffusers") does with the same input
    strict: str             # what lcm_ref's strict profile says


def _strict_says(fn: Callable) -> str:
    try:
        out = fn()
    except StrictError as e:
        return f"StrictError: {e}"
    except (LCMRefError, ValueError, IndexError) as e:
        return f"{type(e).__name__}: {e}"
    return out


def _max_abs(t) -> float:
    return float(t.double().abs().max())


def _demo_inputs(seed, shape=DEMO_SHAPE):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)


def quirk_1(seed=0) -> Quirk:
    """Custom timesteps with strength < 1: the schedule is cut but num_inference_steps is not, so the last step is not
    recognised as last and the output is re-noised."""
    cfg = LCMConfig()
    call = {"timesteps": [999, 759, 499, 259], "strength": 0.5}
    s = diffusers_scheduler(cfg)
    run = run_diffusers(s, call, seed=seed)
    prev, den = run.outputs[-1]
    d = (f"set_timesteps(timesteps=[999, 759, 499, 259], strength=0.5) keeps timesteps {run.timesteps} but "
         f"num_inference_steps={s.num_inference_steps}; after the last step prev_sample != denoised "
         f"(max |prev − denoised| = {_max_abs(prev - den):.3g}): the final output is re-noised to "
         f"t={run.timesteps[-1]}.")
    sched = ref.set_timesteps(cfg, timesteps=call["timesteps"], strength=0.5)
    strict = ref.set_timesteps(cfg, timesteps=call["timesteps"], strength=0.5, profile="strict")
    r = (f"ref.set_timesteps returns Schedule(timesteps={sched.timesteps.tolist()}, "
         f"num_inference_steps={sched.num_inference_steps}) ("
         + same_as_diffusers([*sched.timesteps.tolist(), sched.num_inference_steps],
                             [*run.timesteps, s.num_inference_steps])
         + "); replayed on diffusers' inputs with that num_inference_steps, ref.step "
         + compare_with_reference(cfg, run, num_inference_steps=sched.num_inference_steps) + ".")
    x, m, _ = _demo_inputs(seed)
    last = ref.step(cfg, m, int(strict.timesteps[-1]), x, schedule=strict.timesteps, profile="strict")
    st = (f"Schedule(timesteps={strict.timesteps.tolist()}, num_inference_steps={strict.num_inference_steps}): the "
          "last "
          f"step returns denoised (prev_sample is denoised: {bool(np.array_equal(last.prev_sample, last.denoised))}); "
          "step with the quirky num_inference_steps raises " + _strict_says(
              lambda: ref.step(cfg, m, int(strict.timesteps[-1]), x, schedule=strict.timesteps, noise=x,
                               num_inference_steps=sched.num_inference_steps, profile="strict")).split(":")[0] + ".")
    return Quirk(1, "custom timesteps with strength < 1 re-noise the final output", d, r, st)


def quirk_2(seed=0) -> Quirk:
    """Negative custom timesteps are accepted (ᾱ[−1] wraps to ᾱ[T−1], c_out flips sign); floats are truncated."""
    cfg = LCMConfig()
    s = diffusers_scheduler(cfg)
    run = run_diffusers(s, {"timesteps": [999, 499, -1]}, seed=seed)
    c_skip, c_out = s.get_scalings_for_boundary_condition_discrete(-1)
    a_wrap = float(s.alphas_cumprod[-1])
    s2 = diffusers_scheduler(cfg)
    with captured_diffusers_log() as logged:
        s2.set_timesteps(timesteps=[999.7, 500.2, 259.9])
    d = (f"timesteps=[999, 499, -1] accepted: the step at t=-1 uses ᾱ[-1] = ᾱ[999] = {a_wrap:.6g} and "
         f"c_out(-1) = {c_out:.6g} (sign flipped), c_skip = {c_skip:.3g}; its denoised has max |·| = "
         f"{_max_abs(run.outputs[-1][1]):.3g}. timesteps=[999.7, 500.2, 259.9] is truncated to "
         f"{[int(t) for t in s2.timesteps]} without a word about it (the {len(logged)} logged warnings are about the "
         "first timestep and off-grid values).")
    ours = ref.timesteps(cfg, timesteps=[999, 499, -1]).tolist()
    r = (f"ref.boundary_scalings(cfg, -1) = ({ref.boundary_scalings(cfg, -1)[0]:.3g}, "
         f"{ref.boundary_scalings(cfg, -1)[1]:.6g}); ref.timesteps accepts the schedule: {ours} "
         f"({same_as_diffusers(ours, run.timesteps)}); replayed on diffusers' inputs, ref.step "
         + compare_with_reference(cfg, run) + ".")
    st = (_strict_says(lambda: ref.timesteps(cfg, timesteps=[999, 499, -1], profile="strict")) + "; floats: "
          + _strict_says(lambda: ref.timesteps(cfg, timesteps=[999.7, 500.2, 259.9], profile="strict")).split(";")[0])
    return Quirk(2, "negative custom timesteps wrap around; float ones are truncated", d, r, st)


def quirk_3(seed=0) -> Quirk:
    """rescale_betas_zero_snr makes ᾱ[T−1] = 0: epsilon prediction divides by zero at t = T−1."""
    cfg = LCMConfig(rescale_betas_zero_snr=True)
    s = diffusers_scheduler(cfg)
    run = run_diffusers(s, {"num_inference_steps": 4}, seed=seed)
    den = run.outputs[0][1]
    import torch
    d = (f"ᾱ[999] = {float(s.alphas_cumprod[-1])!r}; the first step (t=999) gives a denoised with "
         f"{int((~torch.isfinite(den)).sum())} of {den.numel()} elements non-finite, and every later step inherits "
         f"them ({int((~torch.isfinite(run.outputs[-1][0])).sum())} non-finite at the end).")
    x, m, z = (v.double().numpy() for v in run.inputs[0][1:])
    sched = ref.timesteps(cfg, 4)
    r = (f"ref.alphas_cumprod(cfg)[999] = {float(ref.alphas_cumprod(cfg)[-1])!r}; replayed on diffusers' inputs, "
         f"ref.step {compare_with_reference(cfg, run)}.")
    st = _strict_says(lambda: ref.step(cfg, m, 999, x, schedule=sched, noise=z, profile="strict"))
    return Quirk(3, "zero-SNR config with epsilon prediction divides by zero at t = T−1", d, r, st)


def quirk_4(seed=0) -> Quirk:
    """strength is not range-checked: 1.5 gives timesteps >= T, then IndexError in step."""
    cfg = LCMConfig()
    run = run_diffusers(diffusers_scheduler(cfg), {"num_inference_steps": 4, "strength": 1.5}, seed=seed)
    d = (f"set_timesteps(4, strength=1.5) gives {run.timesteps} (≥ T = 1000); step raises "
         f"{type(run.error).__name__}: {run.error}")
    ours = ref.timesteps(cfg, 4, strength=1.5).tolist()
    r = f"ref.timesteps(cfg, 4, strength=1.5) = {ours} ({same_as_diffusers(ours, run.timesteps)})"
    st = _strict_says(lambda: ref.timesteps(cfg, 4, strength=1.5, profile="strict"))
    return Quirk(4, "strength is not range-checked", d, r, st)


def quirk_5(seed=0) -> Quirk:
    """step called more often than there are timesteps keeps re-noising at the last level."""
    cfg = LCMConfig()
    run = run_diffusers(diffusers_scheduler(cfg), {"num_inference_steps": 2}, calls=3,
                        timesteps_to_pass=[999, 499, 499], seed=seed)
    (p1, d1), (p2, d2) = run.outputs[1], run.outputs[2]
    d = (f"schedule {run.timesteps}; call 2 (the last) returns denoised (prev == denoised: {bool((p1 == d1).all())}); "
         f"a 3rd call with t=499 is accepted and re-noises (max |prev − denoised| = {_max_abs(p2 - d2):.3g}).")
    x, m, z = (v.double().numpy() for v in run.inputs[2][1:])
    sched = ref.timesteps(cfg, 2)
    out = ref.step(cfg, m, 499, x, schedule=sched, noise=z, step_index=2)
    r = (f"ref.step(..., step_index=2) on diffusers' 3rd-call inputs: prev == denoised: "
         f"{bool(np.array_equal(out.prev_sample, out.denoised))}; replayed on diffusers' inputs, ref.step "
         f"{compare_with_reference(cfg, run)}.")
    st = _strict_says(lambda: ref.step(cfg, m, 499, x, schedule=sched, noise=z, step_index=2, profile="strict"))
    return Quirk(5, "step past the end re-noises at the last level", d, r, st)


def quirk_6(seed=0) -> Quirk:
    """previous_timestep was t − T//n before diffusers 0.32; step never calls it."""
    cfg = LCMConfig()
    s = diffusers_scheduler(cfg)
    s.set_timesteps(4)
    ts = [int(t) for t in s.timesteps]
    live = [int(s.previous_timestep(t)) for t in s.timesteps] if hasattr(s, "previous_timestep") else None
    old = [t - cfg.num_train_timesteps // 4 for t in ts]
    d = (f"schedule {ts}, previous_timestep → {live}; the pre-0.32 formula "
         f"t − T//n gives {old}. step() never calls previous_timestep, so no output changed.")
    ours = [ref.previous_timestep(ts, t) for t in ts]
    r = (f"ref.previous_timestep → {ours} "
         f"({same_as_diffusers(ours, live) if live is not None else 'this diffusers has no previous_timestep'})")
    return Quirk(6, "previous_timestep was wrong before 0.32 (unused by step)", d, r,
                 "same as the default profile (nothing to refuse: step does not use it)")


def quirk_markdown(q: Quirk) -> str:
    """A quirk as a markdown section: what diffusers did (live), what lcm_ref's two profiles do."""
    import diffusers
    return (f"### Quirk {q.number}: {q.title}\n\n- **diffusers {diffusers.__version__}** (run now): {q.diffusers}\n"
            f"- **lcm_ref, `profile=\"diffusers\"`**: {q.reference}\n- **lcm_ref, `profile=\"strict\"`**: {q.strict}\n")


def inert_summary(rows) -> list[dict]:
    """``inert_parameters`` rows grouped by (parameter, values): runs, and how many were bit-identical."""
    groups = {}
    for r in rows:
        g = groups.setdefault((r["parameter"], r["values"]), {"parameter": r["parameter"], "values": r["values"],
                                                               "runs": 0, "bit-identical": 0})
        g["runs"] += 1
        g["bit-identical"] += bool(r["bit_identical"])
    return list(groups.values())


QUIRKS = (quirk_1, quirk_2, quirk_3, quirk_4, quirk_5, quirk_6)


def quirks(seed=0) -> list[Quirk]:
    """Every quirk of docs/design.md §6, demonstrated live."""
    with warnings.catch_warnings(), captured_diffusers_log():
        warnings.simplefilter("ignore")
        return [q(seed) for q in QUIRKS]


# ---------------------------------------------------------------------------------------------------------------
# Timestep selection of other implementations (docs/design.md §13 "Other implementations")
# ---------------------------------------------------------------------------------------------------------------

def original_lcm_timesteps(cfg: LCMConfig, n: int, original_inference_steps=None, strength=1.0) -> list[int]:
    """The authors' original scheduler (diffusers community ``latent_consistency_txt2img``): stride selection
    ``origin[::-(L // n)][:n]`` on the same origin grid."""
    origin = ref.origin_grid(cfg, original_inference_steps or cfg.original_inference_steps, strength, None)
    return origin[::-(len(origin) // n)][:n].tolist()


def tcd_timesteps(cfg: LCMConfig, n: int, eta=0.3) -> tuple[list[int], list[int]]:
    """diffusers' TCDScheduler (live): its timesteps t and the intermediate s = floor((1 − eta)·t_next) each step
    jumps to (t_next = 0 after the last)."""
    from diffusers import TCDScheduler
    d = cfg.to_dict()
    d.pop("timestep_scaling")       # the one LCMScheduler key TCDScheduler does not take
    s = TCDScheduler(**d)
    s.set_timesteps(n)
    ts = [int(t) for t in s.timesteps]
    nxt = ts[1:] + [0]
    return ts, [math.floor((1 - eta) * t) for t in nxt]


def _distilled_log_sigmas(cfg: LCMConfig, orig: int):
    """ComfyUI's ModelSamplingDiscreteDistilled / A1111's LCMCompVisDenoiser: float32 log σ at the orig-point grid
    (k−1, 2k−1, …, T−1), σ = √((1−ᾱ)/ᾱ)."""
    import torch
    grid = ref.origin_grid(cfg, orig, 1.0, None)
    k = cfg.num_train_timesteps // orig
    abar = np.asarray(ref.alphas_cumprod(cfg))[grid]
    return torch.tensor(np.log(np.sqrt((1 - abar) / abar)), dtype=torch.float32), k, grid


def _snap(cfg: LCMConfig, t_float, orig: int) -> list[int]:
    """t (float, in training-timestep units) → σ by linear interpolation of log σ between grid points → the grid
    timestep whose log σ is nearest (argmin, first on ties): what the model is then called with. Float32, as both
    UIs compute it."""
    import torch
    log_sigmas, k, grid = _distilled_log_sigmas(cfg, orig)
    t = torch.as_tensor(t_float, dtype=torch.float32)
    idx = torch.clamp((t - (k - 1)) / k, min=0, max=len(grid) - 1)
    lo, hi, w = idx.floor().long(), idx.ceil().long(), idx.frac()
    log_sigma = (1 - w) * log_sigmas[lo] + w * log_sigmas[hi]
    nearest = (log_sigma[None, :] - log_sigmas[:, None]).abs().argmin(dim=0)
    return (nearest * k + (k - 1)).tolist()


def a1111_timesteps(cfg: LCMConfig, n: int, original_inference_steps=50) -> list[int]:
    """A1111's LCM sampler (also ComfyUI's ``lcm`` sampler with the ``normal`` scheduler): t = linspace(T−1, k−1, n)
    on the distilled grid, snapped to the nearest grid point in log σ. The last step always lands on t = k − 1."""
    k = cfg.num_train_timesteps // original_inference_steps
    import torch
    return _snap(cfg, torch.linspace(cfg.num_train_timesteps - 1, k - 1, n), original_inference_steps)


def comfyui_sgm_uniform_timesteps(cfg: LCMConfig, n: int, original_inference_steps=50) -> list[int]:
    """ComfyUI's ``lcm`` sampler with the ``sgm_uniform`` scheduler (the usual LCM setting):
    linspace(T−1, k−1, n+1) without its last point, snapped as in ``a1111_timesteps``."""
    k = cfg.num_train_timesteps // original_inference_steps
    import torch
    return _snap(cfg, torch.linspace(cfg.num_train_timesteps - 1, k - 1, n + 1)[:-1], original_inference_steps)


def selection_table(cfg: LCMConfig | None = None, steps=range(1, 9)) -> list[dict]:
    """Per n, the timesteps each implementation evaluates the model at; ``diffusers`` is the live LCMScheduler and is
    checked equal to ``ref.timesteps`` (raises AssertionError otherwise)."""
    cfg = cfg or LCMConfig()
    rows = []
    for n in steps:
        live = diffusers_timesteps(cfg, n)
        mine = ref.timesteps(cfg, n).tolist()
        if live != mine:
            raise AssertionError(f"n={n}: diffusers chose {live}, lcm_ref.reference {mine}")
        tcd, tcd_s = tcd_timesteps(cfg, n)
        rows.append({"n": n, "diffusers LCMScheduler (= lcm_ref)": live,
                     "authors' original": original_lcm_timesteps(cfg, n),
                     "TCD": tcd, "TCD s (eta=0.3)": tcd_s,
                     "ComfyUI lcm + sgm_uniform": comfyui_sgm_uniform_timesteps(cfg, n),
                     "A1111 LCM (= ComfyUI lcm + normal)": a1111_timesteps(cfg, n)})
    return rows


def plot_selection(rows, ns=(4, 8)):
    """One panel per step count n in ``ns``: the timesteps each implementation of ``selection_table`` picks, one
    row of dots per implementation (TCD's intermediate s left out)."""
    import matplotlib.pyplot as plt
    cols = [c for c in rows[0] if c != "n" and not c.startswith("TCD s")]
    fig, axes = plt.subplots(1, len(ns), figsize=(11, 3.4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], ns):
        row = next(r for r in rows if r["n"] == n)
        for i, c in enumerate(cols):
            ax.plot(row[c], [i] * len(row[c]), "o")
        ax.set(xlabel="timestep t (0 = clean, 999 = pure noise)", xlim=(-10, 1010))
        ax.set_title(f"{n} steps: where each implementation evaluates the model", fontsize=9)
    axes[0][0].set_yticks(range(len(cols)), cols)
    fig.tight_layout()
    return fig
