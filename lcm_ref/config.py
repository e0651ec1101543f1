"""``LCMConfig``: diffusers' ``LCMScheduler`` configuration as a frozen, validated, hashable dataclass.

Validation refuses (``ConfigError``) what diffusers cannot use at all: wrong types, unknown names, non-finite floats.
A config diffusers accepts although its noise schedule is degenerate is accepted too, with an ``LCMRefWarning``
(docs/design.md §3): some β outside (0, 1) — from ``beta_start`` / ``beta_end`` or ``trained_betas`` — or
``trained_betas`` whose length is not ``num_train_timesteps``. ``LCMConfig.degeneracies()`` lists what is wrong;
``LCMConfig.check("strict")`` refuses it with a ``StrictError`` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from typing import NamedTuple, Optional, Tuple

import mpmath

from .errors import ConfigError, LCMRefError, LCMRefWarning, StrictError

#: Beta schedules of the reference. LCMScheduler itself accepts the first three (plus ``trained_betas``);
#: ``sigmoid`` and ``laplace`` come from DDPMScheduler, ``exp`` from HeunDiscreteScheduler.
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace")
DIFFUSERS_LCM_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")
#: the two profiles (docs/design.md §3): diffusers' meaning, quirks included, or refuse what diffusers mishandles
PROFILES = ("diffusers", "strict")
#: schedules whose betas run monotonically from an end set by beta_start to one set by beta_end (diffusers'
#: ``torch.linspace``, its square, and DDPM's sigmoid); the others are built from ᾱ(t) and capped at 0.999
ENDPOINT_SCHEDULES = ("linear", "scaled_linear", "sigmoid")


class Degeneracy(NamedTuple):
    """One reason a config's noise schedule is degenerate: the parameter, its value, and what a sound value is."""
    parameter: str
    value: object
    allowed: str


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
        # Any finite beta_start / beta_end, as diffusers takes them; a β outside (0, 1) is a degeneracy (warned
        # about below, refused by check("strict")). scaled_linear takes their square roots: diffusers' float ** 0.5
        # of a negative number is complex and its torch.linspace raises, so a negative one is refused here.
        real("beta_start", lambda x: True, "a finite float")
        real("beta_end", lambda x: True, "a finite float")
        if self.beta_schedule == "scaled_linear" and self.trained_betas is None:
            for name in ("beta_start", "beta_end"):
                check(name, getattr(self, name) >= 0, "a finite float >= 0 for scaled_linear (its betas are "
                      "linspace(√beta_start, √beta_end)²)")
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
            check("trained_betas", len(tb) >= 1, "None or a non-empty sequence of floats")
            bad = [b for b in tb if not math.isfinite(b)]
            if bad:
                raise ConfigError("trained_betas", bad[0], "finite floats")
            object.__setattr__(self, "trained_betas", tb)
        for d in self.degeneracies():
            warnings.warn(f"LCMConfig: {d.parameter}={d.value!r} makes a degenerate noise schedule; a sound "
                          f"value is {d.allowed}. diffusers accepts it, and so does profile='diffusers' (lcm_ref "
                          "computes what diffusers computes from it); profile='strict' refuses it "
                          "(docs/design.md §3)", LCMRefWarning, stacklevel=3)

    # -- degenerate schedules (docs/design.md §3) ----------------------------------------------------------------
    def degeneracies(self) -> Tuple[Degeneracy, ...]:
        """What makes this config's noise schedule degenerate, empty for a sound one. Sound means: every β_t in
        (0, 1), except that the last may be exactly 1 (zero terminal SNR, ᾱ[T−1] = 0: docs/design.md §6.Q3), and
        ``trained_betas``, if given, of length ``num_train_timesteps``. Otherwise:

        - a β ≥ 1 makes ᾱ 0 (β = 1) or change sign (β > 1) from there on: √ᾱ is NaN, epsilon prediction divides
          by zero or by NaN;
        - a β ≤ 0 lets ᾱ stay or grow, up to above 1: √(1 − ᾱ) is NaN;
        - diffusers sizes its tables by ``trained_betas`` but its timesteps by ``num_train_timesteps``: a timestep
          past the table's end raises IndexError, a longer table has entries no timestep reaches.

        Found exactly: ``linear`` and ``scaled_linear`` run from β_0 = beta_start to β_{T−1} = beta_end (exact
        endpoints of torch.linspace, and of its square), ``sigmoid`` monotonically between its end values
        (evaluated at 50 digits); the ᾱ-built schedules (``squaredcos_cap_v2``, ``exp``, ``laplace``) always give β
        in (0, 0.999]."""
        T, found = self.num_train_timesteps, []
        if self.trained_betas is not None:
            tb = self.trained_betas
            if len(tb) != T:
                found.append(Degeneracy("trained_betas", f"{len(tb)} betas",
                                        f"num_train_timesteps={T} betas (diffusers sizes ᾱ by trained_betas and "
                                        "its timesteps by num_train_timesteps)"))
            for i, b in enumerate(tb):
                if not _sound_beta(b, last=i == len(tb) - 1):
                    found.append(Degeneracy("trained_betas", b, f"every beta in (0, 1) (the last may be 1); "
                                            f"trained_betas[{i}] = {b!r}"))
                    break
        elif self.beta_schedule in ENDPOINT_SCHEDULES:
            ends = _end_betas(self.beta_schedule, self.beta_start, self.beta_end, T)
            for (name, beta), last in zip((("beta_start", ends[0]), ("beta_end", ends[-1])), (T == 1, True)):
                if not _sound_beta(beta, last):
                    found.append(Degeneracy(name, getattr(self, name),
                                            f"one giving every beta in (0, 1) (the last may be 1); "
                                            f"{self.beta_schedule} gives β = {float(beta)!r} at that end"))
                if T == 1:
                    break
        return tuple(found)

    def check(self, profile: str) -> "LCMConfig":
        """Apply ``profile`` (docs/design.md §3) to this config: ``"diffusers"`` accepts a degenerate one (the
        ``LCMRefWarning`` was given when it was built); ``"strict"`` raises ``StrictError`` naming the parameter
        of its first degeneracy. Returns the config."""
        if profile not in PROFILES:
            raise LCMRefError("profile", profile, f"one of {PROFILES}")
        found = self.degeneracies()
        if profile == "strict" and found:
            d = found[0]
            raise StrictError(d.parameter, d.value, d.allowed, "a degenerate noise schedule: docs/design.md §3")
        return self

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


def _sound_beta(beta, last: bool) -> bool:
    """β in (0, 1), or exactly 1 in the last position (zero terminal SNR)."""
    return 0 < beta < 1 or (last and beta == 1)


_mp = mpmath.MPContext()
_mp.dps = 50


def _end_betas(schedule: str, beta_start: float, beta_end: float, T: int):
    """(β_0, β_{T−1}) of a schedule in ENDPOINT_SCHEDULES, exactly (linear / scaled_linear: the doubles given) or to
    50 digits (sigmoid: start + (end − start)·σ(∓6)); the betas between lie between them (monotone in t)."""
    if schedule in ("linear", "scaled_linear"):
        return beta_start, beta_end
    w = _mp.mpf(beta_end) - _mp.mpf(beta_start)
    return tuple(w / (1 + _mp.exp(-x)) + beta_start for x in (-6, 6 if T > 1 else -6))
