"""``LCMConfig``: diffusers' ``LCMScheduler`` configuration as a frozen, validated, hashable dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from typing import Optional, Tuple

from .errors import ConfigError, LCMRefWarning

#: Beta schedules of the reference. LCMScheduler itself accepts the first three (plus ``trained_betas``);
#: ``sigmoid`` and ``laplace`` come from DDPMScheduler, ``exp`` from HeunDiscreteScheduler.
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace")
DIFFUSERS_LCM_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class LCMConfig:
    """The fields and defaults of ``diffusers.LCMScheduler.__init__``, validated on construction.

    Float fields are taken as the binary64 values Python holds (docs/design.md §2). ``trained_betas`` is stored as a tuple
    of floats so that the config is hashable (tables are cached per config).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: Optional[Tuple[float, ...]] = None
    original_inference_steps: int = 50
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    timestep_spacing: str = "leading"
    timestep_scaling: float = 10.0
    rescale_betas_zero_snr: bool = False

    def __post_init__(self):
        def check(name, ok, allowed):
            if not ok:
                raise ConfigError(name, getattr(self, name), allowed)

        def positive_int(name):
            v = getattr(self, name)
            check(name, _is_int(v) and v >= 1, "an integer >= 1")
            object.__setattr__(self, name, int(v))

        def real(name, ok, allowed):
            v = getattr(self, name)
            check(name, _is_real(v) and math.isfinite(v) and ok(float(v)), allowed)
            object.__setattr__(self, name, float(v))

        def flag(name):
            check(name, isinstance(getattr(self, name), bool), "True or False")

        positive_int("num_train_timesteps")
        positive_int("original_inference_steps")
        v = self.steps_offset
        check("steps_offset", _is_int(v) and v >= 0, "an integer >= 0")
        object.__setattr__(self, "steps_offset", int(v))
        check("beta_schedule", self.beta_schedule in BETA_SCHEDULES, f"one of {BETA_SCHEDULES}")
        check("prediction_type", self.prediction_type in PREDICTION_TYPES, f"one of {PREDICTION_TYPES}")
        check("timestep_spacing", self.timestep_spacing in TIMESTEP_SPACINGS, f"one of {TIMESTEP_SPACINGS}")
        real("beta_start", lambda x: 0 < x < 1, "a finite float in (0, 1)")
        real("beta_end", lambda x: 0 < x < 1, "a finite float in (0, 1)")
        real("clip_sample_range", lambda x: x > 0, "a finite float > 0")
        real("dynamic_thresholding_ratio", lambda x: 0 <= x <= 1, "a finite float in [0, 1] (a quantile)")
        real("sample_max_value", lambda x: x > 0, "a finite float > 0")
        real("timestep_scaling", lambda x: x >= 0, "a finite float >= 0")
        for name in ("clip_sample", "set_alpha_to_one", "thresholding", "rescale_betas_zero_snr"):
            flag(name)
        tb = self.trained_betas
        if tb is not None:
            try:
                tb = tuple(float(b) for b in (tb.tolist() if hasattr(tb, "tolist") else tb))
            except (TypeError, ValueError):
                raise ConfigError("trained_betas", self.trained_betas, "None or a sequence of floats") from None
            check("trained_betas", len(tb) == self.num_train_timesteps,
                  f"a sequence of num_train_timesteps={self.num_train_timesteps} floats")
            bad = [b for b in tb if not (0 < b <= 1)]
            if bad:
                raise ConfigError("trained_betas", bad[0], "every beta in (0, 1]")
            object.__setattr__(self, "trained_betas", tb)

    # -- constructors ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d) -> "LCMConfig":
        """Build from a mapping (e.g. a ``scheduler_config.json``). Keys starting with ``_`` (``_class_name``,
        ``_diffusers_version``) are skipped silently; other unknown keys are warned about and ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and not str(k).startswith("_"))
        if unknown:
            warnings.warn(f"LCMConfig ignores unknown keys {unknown}", LCMRefWarning, stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path) -> "LCMConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_diffusers(cls, scheduler_or_config) -> "LCMConfig":
        """From a diffusers scheduler (anything with ``.config``) or its config mapping."""
        cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
        return cls.from_dict(dict(cfg))

    def to_dict(self) -> dict:
        """Plain dict of every field; ``diffusers.LCMScheduler(**cfg.to_dict())`` builds the same scheduler."""
        d = dataclasses.asdict(self)
        if d["trained_betas"] is not None:
            d["trained_betas"] = list(d["trained_betas"])
        return d

    def replace(self, **changes) -> "LCMConfig":
        return dataclasses.replace(self, **changes)

    def __repr__(self):
        default = LCMConfig.__new__(LCMConfig)
        for f in dataclasses.fields(self):
            object.__setattr__(default, f.name, f.default)
        diff = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)]
        return f"LCMConfig({', '.join(diff)})"
