"""The golden-vector cases and the flags they carry (docs/design.md §10): which configs, requests, timesteps and
runs each file covers, and what each probes. Pure data; ``generator`` turns it into files by running the reference.

The flags come from ``format.NOTES``: a group's flags follow from its config (``config_flags``), a case's from what
it exercises (``step_flags``, ``table_flags``, ``error_flags``).
"""

from __future__ import annotations

import numpy as np

from ...config import LCMConfig

__all__ = ["DEFAULT", "TRAINED", "TABLE_CONFIGS", "STEP_GROUPS", "FORWARD_CONFIGS", "trained_betas", "config_flags",
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

def _case(req, comment, flags=(), profile="diffusers"):
    return dict(req=req, comment=comment, flags=list(flags), profile=profile)


def timesteps_groups() -> list:
    """[(config, [case]), ...]: each case a set_timesteps request ``req`` with its comment, flags and profile."""
    default = [_case(dict(num_inference_steps=n), f"{n} steps of the orig-50 grid", ["Tie"] if n in (3, 6, 7) else [])
               for n in range(1, 9)]
    default += [_case(dict(num_inference_steps=n), f"{n} steps: floor(linspace) near-tie", ["Tie"])
                for n in (9, 11, 13, 17, 23, 29, 50)]
    default += [_case(dict(num_inference_steps=4, original_inference_steps=30), "orig 30: k = 33, first timestep 989",
                      ["OrigNotDividingT"]),
                _case(dict(num_inference_steps=2, original_inference_steps=4), "SSD-1B: orig 4"),
                _case(dict(num_inference_steps=5, original_inference_steps=1000), "orig = T: k = 1, grid from 0"),
                _case(dict(num_inference_steps=7, original_inference_steps=7), "orig 7: k = 142, n = orig",
                      ["OrigNotDividingT"])]
    for s in (0.5, 0.58, 0.29, 0.51, 0.99, 0.02):
        default.append(_case(dict(num_inference_steps=1 if s == 0.02 else 4, strength=s),
                             f"strength {s}: int(50 x {s}) = {int(50 * s)} grid points", ["Strength", "Tie"]))
    default += [_case(dict(timesteps=[999, 759, 499, 259]), "custom on the grid", ["CustomTimesteps"]),
                _case(dict(timesteps=[999, 500, 3, 0]), "custom off the grid, ending at 0", ["CustomTimesteps"]),
                _case(dict(timesteps=[800, 400]), "custom not starting at T-1 (a warning only)", ["CustomTimesteps"])]
    errors = [(dict(), "neither n nor timesteps"), (dict(num_inference_steps=2, timesteps=[999]), "both"),
              (dict(num_inference_steps=1, original_inference_steps=1001), "orig > T"),
              (dict(num_inference_steps=1001), "n > T"), (dict(num_inference_steps=51), "n > orig"),
              (dict(num_inference_steps=30, strength=0.5), "n > int(orig x strength)"),
              (dict(timesteps=[500, 700]), "custom ascending"), (dict(timesteps=[500, 500]), "custom repeated"),
              (dict(timesteps=[1000, 0]), "custom timesteps[0] >= T"),
              (dict(num_inference_steps=0), "n = 0: ZeroDivisionError in diffusers"),
              (dict(num_inference_steps=1, original_inference_steps=0), "orig = 0: ZeroDivisionError"),
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
    return [
        (DEFAULT, default),
        (LCMConfig(num_train_timesteps=7, original_inference_steps=3),
         [_case(dict(num_inference_steps=n), f"T = 7, orig 3, {n} steps", ["OrigNotDividingT"]) for n in (1, 2, 3)]),
        (LCMConfig(num_train_timesteps=2000, original_inference_steps=30),
         [_case(dict(num_inference_steps=n), f"T = 2000, orig 30, {n} steps", ["OrigNotDividingT", "Tie"])
          for n in (4, 7, 8)]),
    ]


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
# model output, start (set_begin_index), extra_steps past the end, quirk (the flag of the quirk the run shows).
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
    ("zero-SNR with epsilon: step at T-1 divides by ᾱ = 0", LCMConfig(rescale_betas_zero_snr=True),
     dict(num_inference_steps=2), dict(quirk="Quirk3")),
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
    return flags


# ---------------------------------------------------------------------------------------------------------------
# forward.json
# ---------------------------------------------------------------------------------------------------------------

FORWARD_CONFIGS = (DEFAULT, LCMConfig(beta_schedule="squaredcos_cap_v2"), LCMConfig(rescale_betas_zero_snr=True),
                   TRAINED)


def forward_timesteps(T) -> list:
    """One timestep per row: both ends, the middle, and the last two (ᾱ = 0 under zero-SNR)."""
    return [0, 1, T // 2, T - 2, T - 1]
