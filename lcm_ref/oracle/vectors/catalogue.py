"""The golden-vector cases and the flags they carry (docs/design.md §10): which configs, requests, timesteps and
runs each file covers, and what each probes. Pure data; ``generator`` turns it into files by running the reference.

The flags come from ``format.NOTES``: a group's flags follow from its config (``config_flags``), a case's from what
it exercises (``step_flags``, ``table_flags``, ``error_flags``).
"""

from __future__ import annotations

import numpy as np

from ...config import LCMConfig
from .traps import strength_float32

__all__ = ["DEFAULT", "TRAINED", "GRID_TRAPS", "STRENGTH_TRAPS", "TWO_CALLS", "TABLE_CONFIGS", "STEP_GROUPS",
           "FORWARD_CONFIGS", "trained_betas", "config_flags", "timesteps_concerns", "step_concerns",
           "timesteps_groups", "table_probes", "table_flags", "step_flags", "error_flags", "forward_timesteps"]


def trained_betas(T, seed):
    """A float32-exact random β table around linspace(1e-4, 0.03, T), clipped to [1e-5, 0.5]."""
    rng = np.random.default_rng(seed)
    return tuple(float(np.float32(b)) for b in np.clip(np.linspace(1e-4, 0.03, T)
                                                        * np.exp(0.2 * rng.standard_normal(T)), 1e-5, 0.5))


DEFAULT = LCMConfig()    #: diffusers' defaults (Stable Diffusion's scaled_linear, epsilon, orig 50)
TRAINED = LCMConfig(num_train_timesteps=100, trained_betas=trained_betas(100, 0), original_inference_steps=10)


def config_flags(cfg: LCMConfig) -> list:
    """A group's flags: its beta schedule, zero-SNR, prediction type, clip/threshold, edge scalings, stride."""
    flags = []
    if cfg.trained_betas is not None:
        flags.append("TrainedBetas")
    else:
        flags.append({"linear": "Linear", "scaled_linear": "ScaledLinear",
                      "squaredcos_cap_v2": "Cosine"}[cfg.beta_schedule])
    if cfg.rescale_betas_zero_snr:
        flags.append("ZeroSNR")
    flags.append({"epsilon": "Epsilon", "v_prediction": "VPrediction", "sample": "Sample"}[cfg.prediction_type])
    if cfg.clip_sample:
        flags.append("Clip")
    if cfg.thresholding:
        flags.append("Threshold")
    if cfg.timestep_scaling in (0.0, 1e-3, 1e3):
        flags.append("TimestepScalingEdge")
    if cfg.num_train_timesteps % cfg.original_inference_steps:
        flags.append("OrigNotDividingT")
    return flags


# ---------------------------------------------------------------------------------------------------------------
# timesteps.json
# ---------------------------------------------------------------------------------------------------------------

def _case(req, comment, flags=(), profile="diffusers", prior=()):
    return dict(req=req, comment=comment, flags=list(flags), profile=profile, prior=list(prior))


#: float32 grid-selection traps (traps.grid_sweep over 1 ≤ n ≤ L ≤ 1000 at T = 1000: 25,657 differing (L, n), six
#: classes by the direction of the first difference and the number of differing positions): (orig, n, why). The
#: smallest (L, n) of each class (traps.grid_representatives, checked by tests/test_vectors.py), docs/design.md's tie
#: example orig 30 with n = 22 and 26, and the smallest n of the two most frequent classes at orig = T = 1000.
GRID_TRAPS = (
    (26, 22, "float32 picks an earlier index at 1 position (the most frequent class, 6,147 pairs)"),
    (30, 22, "float32 picks a later index at 1 position (6,129 pairs); position 11: 494 in float32, 527 here"),
    (60, 52, "float32 picks later indices at 3 or more positions (4,245 pairs)"),
    (65, 55, "float32 picks earlier indices at 3 or more positions (4,176 pairs)"),
    (45, 33, "float32 picks later indices at 2 positions (2,501 pairs)"),
    (39, 33, "float32 picks earlier indices at 2 positions (2,459 pairs)"),
    (30, 26, "orig 30, n = 26: the second differing n at orig 30"),
    (1000, 106, "orig = T: float32 picks an earlier index at 1 position"),
    (1000, 38, "orig = T: float32 picks a later index at 1 position"),
)

#: float32 strength-product traps (traps.strength_sweep over two-decimal strengths; three decimals at orig 1000):
#: (orig, strength) where int(fl32(orig)·fl32(strength)) differs from diffusers' float64 int(orig·strength).
STRENGTH_TRAPS = ((50, 0.58), (100, 0.29), (100, 0.53), (1000, 0.251))

#: two set_timesteps calls on one scheduler: (first request, second request, comment). A port that appends the
#: second schedule to the first (OpenVINO GenAI before 2025.0) fails.
TWO_CALLS = ((dict(num_inference_steps=4), dict(num_inference_steps=2), "set_timesteps(4), then set_timesteps(2)"),
             (dict(num_inference_steps=2), dict(num_inference_steps=4), "set_timesteps(2), then set_timesteps(4)"),
             (dict(num_inference_steps=4, strength=0.5), dict(num_inference_steps=4),
              "strength 0.5, then strength 1: the cut does not persist"))


def timesteps_groups() -> list:
    """[(config, [case]), ...]: each case a set_timesteps request ``req`` (``prior``: earlier requests on the same
    scheduler) with its comment, flags and profile. Configured original_inference_steps live in the config; a
    request's own original_inference_steps is the per-call argument (flagged PerCallOriginalSteps by the
    generator)."""
    default = [_case(dict(num_inference_steps=n), f"{n} steps of the orig-50 grid", ["Tie"] if n in (3, 6, 7) else [])
               for n in range(1, 9)]
    default += [_case(dict(num_inference_steps=n), f"{n} steps: floor(linspace) near-tie", ["Tie"])
                for n in (9, 11, 13, 17, 23, 29, 50)]
    default += [_case(dict(num_inference_steps=4, original_inference_steps=30), "per call orig 30: k = 33, first "
                      "timestep 989", ["OrigNotDividingT"]),
                _case(dict(num_inference_steps=22, original_inference_steps=30), "per call orig 30, n = 22: a float32 "
                      "grid-selection trap", ["OrigNotDividingT", "Float32Grid"]),
                _case(dict(num_inference_steps=2, original_inference_steps=4), "per call orig 4 (SSD-1B)"),
                _case(dict(num_inference_steps=5, original_inference_steps=1000), "per call orig = T: k = 1, grid from "
                      "0"),
                _case(dict(num_inference_steps=7, original_inference_steps=7), "per call orig 7: k = 142, n = orig",
                      ["OrigNotDividingT"])]
    for s in (0.5, 0.58, 0.29, 0.51, 0.99, 0.02):
        trap = ["Float32Strength"] if (50, s) in STRENGTH_TRAPS else []
        default.append(_case(dict(num_inference_steps=1 if s == 0.02 else 4, strength=s),
                             f"strength {s}: int(50 x {s}) = {int(50 * s)} grid points", ["Strength", "Tie"] + trap))
    default += [_case(dict(timesteps=[999, 759, 499, 259]), "custom on the grid", ["CustomTimesteps"]),
                _case(dict(timesteps=[999, 500, 3, 0]), "custom off the grid, ending at 0", ["CustomTimesteps"]),
                _case(dict(timesteps=[800, 400]), "custom not starting at T-1 (a warning only)", ["CustomTimesteps"])]
    default += [_case(second, comment, ["TwoCalls"] + (["Strength"] if "strength" in first else []), prior=[first])
                for first, second, comment in TWO_CALLS]
    errors = [(dict(), "neither n nor timesteps"), (dict(num_inference_steps=2, timesteps=[999]), "both"),
              (dict(num_inference_steps=1, original_inference_steps=1001), "per call orig > T"),
              (dict(num_inference_steps=1001), "n > T"), (dict(num_inference_steps=51), "n > orig"),
              (dict(num_inference_steps=30, strength=0.5), "n > int(orig x strength)"),
              (dict(timesteps=[500, 700]), "custom ascending"), (dict(timesteps=[500, 500]), "custom repeated"),
              (dict(timesteps=[1000, 0]), "custom timesteps[0] >= T"),
              (dict(num_inference_steps=0), "n = 0: ZeroDivisionError in diffusers"),
              (dict(num_inference_steps=1, original_inference_steps=0), "per call orig = 0: ZeroDivisionError"),
              (dict(timesteps=[]), "empty custom timesteps: IndexError")]
    default += [_case(r, c, ["Error"]) for r, c in errors]
    quirks = [(dict(timesteps=[999, 759, 499, 259], strength=0.5), "custom + strength 0.5: truncated, n kept",
               ["Quirk1", "CustomTimesteps", "Strength"]),
              (dict(timesteps=[999, 500, -1]), "negative custom timestep", ["Quirk2", "CustomTimesteps"]),
              (dict(timesteps=[999.7, 500.2]), "float custom timesteps, truncated", ["Quirk2", "CustomTimesteps"]),
              (dict(num_inference_steps=4, strength=1.5), "strength 1.5: timesteps >= T", ["Quirk4", "Strength"]),
              (dict(timesteps=[999, 259], strength=0.25), "custom cut to nothing by strength",
               ["Quirk1", "CustomTimesteps", "Strength"])]
    for r, c, f in quirks:
        default.append(_case(r, c, f))
        default.append(_case(r, c + " (strict)", f + ["Strict"], profile="strict"))
    default.append(_case(dict(num_inference_steps=0), "n = 0 (strict)", ["Error", "Strict"], "strict"))
    groups = [
        (DEFAULT, default),
        (LCMConfig(num_train_timesteps=7, original_inference_steps=3),
         [_case(dict(num_inference_steps=n), f"T = 7, orig 3, {n} steps", ["OrigNotDividingT"]) for n in (1, 2, 3)]),
        (LCMConfig(num_train_timesteps=2000, original_inference_steps=30),
         [_case(dict(num_inference_steps=n), f"T = 2000, orig 30, {n} steps", ["OrigNotDividingT", "Tie"])
          for n in (4, 7, 8)]),
        (LCMConfig(original_inference_steps=4), [_case(dict(num_inference_steps=2), "orig 4 (SSD-1B)")]),
        (LCMConfig(original_inference_steps=1001), [_case(dict(num_inference_steps=1), "configured orig > T",
                                                          ["Error"])]),
    ]
    by_orig = {}
    for orig, n, why in GRID_TRAPS:
        by_orig.setdefault(orig, []).append(_case(dict(num_inference_steps=n), f"orig {orig}, n = {n}: {why}",
                                                  ["Float32Grid", "Tie"]))
    for orig, s in STRENGTH_TRAPS:
        if orig != DEFAULT.original_inference_steps:
            by_orig.setdefault(orig, []).append(_case(
                dict(num_inference_steps=4, strength=s), f"orig {orig}, strength {s}: int({orig} x {s}) = "
                f"{int(orig * s)}, float32 product gives {strength_float32(orig, s)}",
                ["Strength", "Tie", "Float32Strength"]))
    if 30 in by_orig:
        by_orig[30].insert(0, _case(dict(num_inference_steps=4), "orig 30: k = 33, first timestep 989"))
    groups += [(LCMConfig(original_inference_steps=orig), cases) for orig, cases in sorted(by_orig.items())]
    return groups


def error_flags(flags, exc) -> list:
    """A case's flags once its request raised ``exc``: Error, and QuirkError for diffusers' accidental classes."""
    odd = {"QuirkError"} if isinstance(exc, (ZeroDivisionError, IndexError)) else set()
    return sorted(set(flags) | {"Error"} | odd)


# ---------------------------------------------------------------------------------------------------------------
# tables.json
# ---------------------------------------------------------------------------------------------------------------

TABLE_CONFIGS = (
    DEFAULT, LCMConfig(beta_schedule="linear"), LCMConfig(beta_schedule="squaredcos_cap_v2"), TRAINED,
    LCMConfig(rescale_betas_zero_snr=True), LCMConfig(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True),
    LCMConfig(timestep_scaling=0.0), LCMConfig(timestep_scaling=1e-3), LCMConfig(timestep_scaling=1e3),
    LCMConfig(set_alpha_to_one=False), LCMConfig(num_train_timesteps=2000, beta_schedule="linear",
                                                 beta_start=1e-4, beta_end=0.02),
)


def table_probes(T) -> list:
    """The probe timesteps of a table: both ends, the cosine cap, the middle and a few in between."""
    return sorted({0, 1, 19, 259, T // 2 - 1, 499, 513, T - 20, T - 2, T - 1} & set(range(T)))


def table_flags(t) -> list:
    return ["TimestepScalingEdge"] if t in (0, 19) else []


# ---------------------------------------------------------------------------------------------------------------
# steps.json: (comment, config, set_timesteps request, options). Options: shape (default (1, 2, 2)), scale of the
# model output, start (set_begin_index), extra_steps past the end, quirk (the flag of the quirk the run shows), prior
# (set_timesteps requests made on the same scheduler before the run's). diffusers' quirk 3 (zero-SNR with epsilon
# divides by √ᾱ[T−1] = 0) has no step case: its outputs are non-finite with an unbounded budget, so a case would
# judge nothing; tables.json carries ᾱ[T−1] = 0.
# ---------------------------------------------------------------------------------------------------------------

STEP_GROUPS = (
    ("SD / SDXL LCM, 4 steps", DEFAULT, dict(num_inference_steps=4), {}),
    ("linear betas, 4 steps", LCMConfig(beta_schedule="linear"), dict(num_inference_steps=4), {}),
    ("cosine betas, 2 steps (t = 999: β capped)", LCMConfig(beta_schedule="squaredcos_cap_v2"),
     dict(num_inference_steps=2), {}),
    ("trained betas, T = 100, 3 steps", TRAINED, dict(num_inference_steps=3), {}),
    ("v_prediction, 4 steps", LCMConfig(prediction_type="v_prediction"), dict(num_inference_steps=4), {}),
    ("sample prediction, 2 steps", LCMConfig(prediction_type="sample"), dict(num_inference_steps=2), {}),
    ("clip_sample range 1.5, sample prediction, model output scale 3",
     LCMConfig(prediction_type="sample", clip_sample=True, clip_sample_range=1.5), dict(num_inference_steps=2),
     dict(scale=3.0)),
    ("dynamic thresholding, sample_max_value 5", LCMConfig(thresholding=True, sample_max_value=5.0),
     dict(num_inference_steps=3), dict(shape=(2, 2, 3))),
    ("zero-SNR, v_prediction, 3 steps (ᾱ[999] = 0)", LCMConfig(rescale_betas_zero_snr=True,
                                                               prediction_type="v_prediction"),
     dict(num_inference_steps=3), {}),
    ("timestep_scaling 0: c_skip = 1, c_out = 0", LCMConfig(timestep_scaling=0.0), dict(num_inference_steps=2), {}),
    ("timestep_scaling 1e-3", LCMConfig(timestep_scaling=1e-3), dict(num_inference_steps=2), {}),
    ("timestep_scaling 1e3", LCMConfig(timestep_scaling=1e3), dict(num_inference_steps=2), {}),
    ("custom timesteps ending at 0", DEFAULT, dict(timesteps=[999, 500, 19, 0]), {}),
    ("strength 0.5 (img2img), 3 steps from index 1 via set_begin_index", DEFAULT,
     dict(num_inference_steps=4, strength=0.5), dict(start=1)),
    ("orig 30 (first timestep 989), 3 steps", LCMConfig(original_inference_steps=30), dict(num_inference_steps=3),
     {}),
    ("zero-SNR with epsilon, strength 0.8 (t ≤ 799, ᾱ > 0): a port that ignores the rescale fails",
     LCMConfig(rescale_betas_zero_snr=True), dict(num_inference_steps=4, strength=0.8), {}),
    ("clip_sample range 1 with epsilon prediction (x0 far outside the range at t = 999)",
     LCMConfig(clip_sample=True, clip_sample_range=1.0), dict(num_inference_steps=4), {}),
    ("dynamic thresholding with epsilon prediction, ratio 0.9, sample_max_value 2",
     LCMConfig(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0), dict(num_inference_steps=2),
     dict(shape=(2, 1, 5))),
    ("two calls on one scheduler: set_timesteps(4), then set_timesteps(2), then step", DEFAULT,
     dict(num_inference_steps=2), dict(prior=[dict(num_inference_steps=4)])),
    ("custom timesteps + strength 0.5: the last step re-noises", DEFAULT,
     dict(timesteps=[999, 759, 499, 259], strength=0.5), dict(quirk="Quirk1")),
    ("negative custom timestep: ᾱ[-1] wraps, c_out < 0, then final_alpha_cumprod",
     LCMConfig(set_alpha_to_one=False), dict(timesteps=[999, 0, -1]), dict(quirk="Quirk2")),
    ("a step past the end: re-noised at the last timestep's level", DEFAULT, dict(num_inference_steps=2),
     dict(extra_steps=1, quirk="Quirk5")),
)


def step_flags(k, i, schedule, num_inference_steps, options) -> list:
    """The flags of the k-th step taken in a run (at schedule position i); Quirk5 only on the steps past the end."""
    quirk = options.get("quirk") if options.get("quirk") != "Quirk5" or i >= len(schedule) else None
    flags = ["FirstStep"] if k == 0 else []
    flags += ["LastStep"] if i == num_inference_steps - 1 else []
    flags += ["BeginIndex"] if options.get("start", 0) and k == 0 else []
    flags += ["PrevZero"] if i + 1 < len(schedule) and schedule[i + 1] == 0 else []
    flags += [quirk] if quirk else []
    flags += ["TwoCalls"] if options.get("prior") else []
    return flags


# ---------------------------------------------------------------------------------------------------------------
# Concerns: each case names the conformance concern (docs/design.md §9.2) each of its outputs is judged under
# ---------------------------------------------------------------------------------------------------------------

def timesteps_concerns(req, prior, result) -> list:
    """[concern] of a TimestepsTest case: errors for an error case, state after an earlier call, else the
    request's most specific feature (custom timesteps, strength, per-call original_inference_steps) or timesteps."""
    if result == "error":
        return ["errors"]
    if prior:
        return ["state"]
    if req.get("timesteps") is not None:
        return ["custom_timesteps"]
    if req.get("strength") is not None:
        return ["strength"]
    if req.get("original_inference_steps") is not None:
        return ["original_inference_steps"]
    return ["timesteps"]


def step_concerns(cfg, last, prior) -> list:
    """[concern of denoised, concern of prev_sample] of a StepTest case."""
    den = "clip_threshold" if (cfg.clip_sample or cfg.thresholding) else "denoised"
    prev = "state" if prior else ("final_step" if last else "prev_sample")
    return [den, prev]


# ---------------------------------------------------------------------------------------------------------------
# forward.json
# ---------------------------------------------------------------------------------------------------------------

FORWARD_CONFIGS = (DEFAULT, LCMConfig(beta_schedule="squaredcos_cap_v2"), LCMConfig(rescale_betas_zero_snr=True),
                   TRAINED)


def forward_timesteps(T) -> list:
    """One timestep per row: both ends, the middle, and the last two (ᾱ = 0 under zero-SNR)."""
    return [0, 1, T // 2, T - 2, T - 1]
