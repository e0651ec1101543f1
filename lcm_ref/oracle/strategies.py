"""Hypothesis strategies for LCM scheduler inputs: configs, schedule requests, tensors (exported for any test).

Every strategy draws a small, JSON-able *spec* (a dict or a ``TensorRecipe``) and builds the object from it, so a
failing example can be printed as a literal and rebuilt (``build_config``, ``TensorRecipe.make``). Draws inside the
composites are labelled (``draw(..., label=...)``), so a falsifying example says what each value was for.

Profiles (docs/design.md §3): by default (``profile="diffusers"``, ``quirks=False``) every draw is a valid input that
diffusers' ``LCMScheduler`` handles as intended, so an implementation that refuses diffusers' quirk inputs
(``lcm_ref.torch_impl``) is compared on common ground; ``errors=True`` adds requests that diffusers itself rejects
(ValueError). ``quirks=True`` (the default for ``profile="strict"``) adds the inputs of docs/design.md §6's quirks 1–5.

    >>> from hypothesis import given
    >>> from lcm_ref import strategies as lst
    >>> @given(lst.configs())
    ... def test_tables(cfg): ...
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from hypothesis import strategies as st

from ..config import DIFFUSERS_LCM_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS, LCMConfig

__all__ = [
    "SCHEDULES", "DTYPES", "POST", "trained_betas", "build_config", "config_specs", "configs", "schedule_requests",
    "concern_requests", "shapes", "TensorRecipe", "tensor_recipes", "tensors", "timestep_batches",
]

#: beta schedules diffusers' LCMScheduler accepts, plus "trained_betas" (a given beta array)
SCHEDULES = DIFFUSERS_LCM_SCHEDULES + ("trained_betas",)
DTYPES = (torch.float32, torch.float64)
#: x0 post-processing a config draw may be restricted to (``config_specs(post=...)``): None draws any (none 2 : clip 1 :
#: threshold 1), "none" neither clip nor thresholding, "clip_threshold" one of the two
POST = (None, "none", "clip_threshold")


def _weighted(weighted: dict):
    """One of the keys, with the given integer weights. (An integer roll: in a composite, sampled_from over a
    list with repeated elements came out far from its weights in derandomized runs.)"""
    keys = [k for k, w in weighted.items() for _ in range(w)]
    return st.integers(0, len(keys) - 1).map(keys.__getitem__)


def _pick(weighted: dict):
    """One of the strategies (keys), chosen with the given integer weights (values)."""
    return _weighted(weighted).flatmap(lambda s: s)


def _decades(lo, hi):
    """Floats log-uniform over [10^lo, 10^hi] (powers of ten included), so every order of magnitude is drawn."""
    return st.one_of(st.integers(lo, hi).map(lambda e: 10.0 ** e),
                     st.floats(lo, hi, allow_nan=False).map(lambda e: 10.0 ** e))


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------

def trained_betas(num_train_timesteps: int, seed: int) -> tuple:
    """A deterministic, realistic-looking ``trained_betas`` array: a linear ramp 1e-4 → 0.02 with ±20 %
    multiplicative jitter from ``numpy.random.default_rng(seed)``, clipped to [1e-5, 0.5] (never 1, so ᾱ > 0)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(1e-4, 0.02, num_train_timesteps) * np.exp(0.2 * rng.standard_normal(num_train_timesteps))
    return tuple(float(b) for b in np.clip(ramp, 1e-5, 0.5))


#: smallest ᾱ[T−1] a drawn config may have: far above float32's smallest normal number (1.2e-38), where a float32
#: table loses relative precision and epsilon prediction would divide by an underflowed 0.
MIN_ALPHA_BAR = 1e-30


def _log_alpha_bar_min(T, spec):
    """log ᾱ[T−1] of a linear / scaled_linear spec (float64 estimate, only used to keep ᾱ above MIN_ALPHA_BAR)."""
    lo, hi = spec["beta_start"], spec["beta_end"]
    if spec["beta_schedule"] == "scaled_linear":
        b = np.linspace(math.sqrt(lo), math.sqrt(hi), T) ** 2
    else:
        b = np.linspace(lo, hi, T)
    return float(np.sum(np.log1p(-b)))


def build_config(spec: dict) -> LCMConfig:
    """The ``LCMConfig`` of a spec from ``config_specs``: the spec is LCMConfig's keyword arguments, except that
    ``trained_betas`` may be ``{"seed": s}``, meaning ``trained_betas(num_train_timesteps, s)``."""
    kw = dict(spec)
    tb = kw.get("trained_betas")
    if isinstance(tb, dict):
        kw["trained_betas"] = trained_betas(kw.get("num_train_timesteps", 1000), tb["seed"])
    return LCMConfig(**kw)


@st.composite
def config_specs(draw, *, profile: str = "diffusers", quirks: Optional[bool] = None,
                 schedules=SCHEDULES, prediction_types=PREDICTION_TYPES, num_train_timesteps=None,
                 post: Optional[str] = None) -> dict:
    """Keyword arguments of an ``LCMConfig`` (only the fields that differ from the default), see ``build_config``.

    Covers every schedule (``trained_betas`` as a seed), every prediction type, clip / dynamic thresholding,
    zero-SNR rescaling, ``timestep_scaling`` over 10⁻³…10³ (and 0), T from 2 to 2000 (mostly 1000), original steps
    from 1 to T, and the inert parameters. With ``quirks=False`` zero-SNR goes with v/sample prediction only
    (epsilon divides by ᾱ[T−1] = 0: quirk 3). ``post`` (``POST``) restricts the x0 post-processing drawn (the
    default None draws as before, so existing draws are unchanged)."""
    if post not in POST:
        raise ValueError(f"post={post!r} is not one of {POST}")
    quirks = (profile == "strict") if quirks is None else quirks
    spec = {}
    T = num_train_timesteps or draw(_pick({st.just(1000): 3, st.integers(2, 2000): 1}), label="T")
    if T != 1000:
        spec["num_train_timesteps"] = T
    schedule = draw(_weighted({s: 1 for s in schedules}), label="beta_schedule")
    if schedule == "trained_betas":
        spec["trained_betas"] = {"seed": draw(st.integers(0, 2 ** 16), label="trained_betas seed")}
    else:
        spec["beta_schedule"] = schedule
        if schedule != "squaredcos_cap_v2" and draw(st.booleans(), label="custom beta range"):
            spec["beta_start"] = draw(_decades(-5, -2), label="beta_start")
            spec["beta_end"] = draw(st.one_of(_decades(-4, -1), st.just(0.02)), label="beta_end")
            if _log_alpha_bar_min(T, spec) < math.log(MIN_ALPHA_BAR):
                del spec["beta_start"], spec["beta_end"]
    spec["prediction_type"] = draw(_weighted({p: 2 if p == "epsilon" else 1 for p in prediction_types}),
                                   label="prediction_type")
    if post is None:
        post = draw(_weighted({"none": 2, "clip": 1, "threshold": 1}), label="x0 post-processing")
    elif post == "clip_threshold":
        post = draw(_weighted({"clip": 1, "threshold": 1}), label="x0 post-processing")
    if post == "clip":
        spec["clip_sample"] = True
        spec["clip_sample_range"] = draw(_pick({st.just(1.0): 1, _decades(-1, 1): 3}), label="clip_sample_range")
    elif post == "threshold":
        spec["thresholding"] = True
        spec["dynamic_thresholding_ratio"] = draw(
            st.one_of(st.just(0.995), st.floats(0.5, 1.0)), label="dynamic_thresholding_ratio")
        spec["sample_max_value"] = draw(_pick({st.just(1.0): 1, _decades(0, 3): 4, st.floats(0.25, 1.0): 1}),
                                        label="sample_max_value")
    if draw(st.integers(0, 5), label="zero-SNR roll") == 0:
        spec["rescale_betas_zero_snr"] = True
        if not quirks and spec["prediction_type"] == "epsilon":
            spec["prediction_type"] = draw(st.sampled_from(["v_prediction", "sample"]), label="zero-SNR prediction")
    spec["timestep_scaling"] = draw(_pick({st.just(10.0): 4, _decades(-3, 3): 5, st.just(0.0): 1}),
                                    label="timestep_scaling")
    orig = draw(st.one_of(st.just(50), st.sampled_from([1, 4, 8, 30]), st.integers(1, min(T, 100)), st.just(T)),
                label="original_inference_steps")
    spec["original_inference_steps"] = min(orig, T)
    # Inert in diffusers' LCM (docs/design.md §5) except set_alpha_to_one with a negative custom timestep: drawn anyway.
    if draw(st.booleans(), label="inert parameters"):
        spec["set_alpha_to_one"] = draw(st.booleans(), label="set_alpha_to_one")
        spec["steps_offset"] = draw(st.integers(0, 2), label="steps_offset")
        spec["timestep_spacing"] = draw(st.sampled_from(TIMESTEP_SPACINGS), label="timestep_spacing")
    return {k: v for k, v in spec.items() if not (k in _DEFAULTS and v == _DEFAULTS[k])}


_DEFAULTS = LCMConfig().to_dict()


def configs(**kwargs):
    """``LCMConfig`` values; keyword arguments as ``config_specs``."""
    return config_specs(**kwargs).map(build_config)


# ---------------------------------------------------------------------------------------------------------------
# Schedule requests: what is passed to set_timesteps, plus how the run is started and driven
# ---------------------------------------------------------------------------------------------------------------

def _strengths(orig):
    """Strengths in (0, 1] whose int(orig·strength) is >= 1: 1.0, uniform floats, and values at and just off the
    integer ties of orig·strength (j/orig, (j + ½)/orig: the int-vs-round boundary)."""
    ties = st.integers(1, orig).flatmap(
        lambda j: st.sampled_from([min(j / orig, 1.0), min((j + 0.5) / orig, 1.0), min((j + 0.9) / orig, 1.0)]))
    return st.one_of(st.just(1.0), ties, st.floats(1.0 / orig, 1.0)).filter(lambda s: int(orig * s) >= 1)


def _custom_timesteps(draw, T, origin):
    """Strictly descending integers in [0, T): on the origin grid or anywhere, often starting at T−1 and often
    ending at 0 (the only way a standard step reaches ᾱ[0] as its previous timestep)."""
    size = draw(st.integers(1, min(8, T)), label="custom length")
    pool = sorted(set(origin.tolist())) if (len(origin) and draw(st.booleans(), label="on grid")) else None
    elems = st.sampled_from(pool) if pool else st.integers(0, T - 1)
    ts = set(draw(st.lists(elems, min_size=1, max_size=size, unique=True), label="custom timesteps"))
    if draw(st.booleans(), label="start at T-1"):
        ts.add(T - 1)
    if draw(st.booleans(), label="end at 0"):
        ts.add(0)
    return sorted(ts, reverse=True)


@st.composite
def schedule_requests(draw, cfg: LCMConfig, *, profile: str = "diffusers", quirks: Optional[bool] = None,
                      errors: bool = True, max_steps: int = 8, allow=None) -> dict:
    """A ``set_timesteps`` request for ``cfg`` and how a run uses it, as a dict:

    ``num_inference_steps``, ``original_inference_steps``, ``timesteps`` (custom), ``strength`` (the
    ``set_timesteps`` arguments; None = not passed), ``start`` (first index stepped), ``begin_index`` (True:
    ``set_begin_index(start)`` is called; False: the first ``step`` finds its index from the timestep),
    ``timestep_as`` ("tensor" as pipelines pass ``scheduler.timesteps[i]``, or "int"), ``extra_steps`` (steps
    past the end: quirk 5, only with quirks) and ``kind`` (what the draw probes).

    ``errors`` adds requests diffusers rejects with a ValueError (both/neither of n and timesteps, orig > T,
    n > T, n > int(orig·strength), custom timesteps not descending or starting at >= T). ``allow`` (None: all)
    is the set of set_timesteps keywords the implementation accepts (``support.REQUEST_PROBES``): a request never
    uses one outside it. One n-request in eight draws n up to the whole grid, not only up to ``max_steps``."""
    quirks = (profile == "strict") if quirks is None else quirks
    allow = REQUEST_KEYWORDS if allow is None else allow
    T, orig = cfg.num_train_timesteps, cfg.original_inference_steps
    req = dict(num_inference_steps=None, original_inference_steps=None, timesteps=None, strength=None,
               start=0, begin_index=False, timestep_as="tensor", extra_steps=0, kind="n")
    # weights in percent: n 60, custom 25, error 15 (quirk takes 15 of n's share when quirks are on)
    roll = draw(st.integers(0, 99), label="request kind roll")
    kind = ("error" if errors and roll >= 85 else "quirk" if quirks and roll < 15 else
            "custom" if roll >= 60 and "timesteps" in allow else "n")
    req["kind"] = kind
    if draw(st.integers(0, 3), label="override orig roll") == 0 and "original_inference_steps" in allow:
        orig = draw(st.integers(1, T), label="original_inference_steps")
        req["original_inference_steps"] = orig
    strength = draw(_strengths(orig), label="strength") if "strength" in allow else 1.0
    L = int(orig * strength)
    k = T // orig
    origin = np.arange(1, L + 1) * k - 1

    if kind == "n":
        top = L if draw(st.integers(0, 7), label="whole-grid roll") == 0 else min(L, max_steps)
        req["num_inference_steps"] = draw(st.integers(1, top), label="num_inference_steps")
        req["strength"] = strength if strength != 1.0 else None
    elif kind == "custom":
        req["timesteps"] = _custom_timesteps(draw, T, origin)
    elif kind == "error":
        _error_request(draw, req, T, orig, L, strength)
        return req
    else:
        _quirk_request(draw, req, cfg, T, orig, origin)
    n = len(req["timesteps"]) if req["timesteps"] is not None else req["num_inference_steps"]
    if req["kind"] == "n" or req["kind"] == "custom":
        req["start"] = draw(st.integers(0, n - 1) if draw(st.integers(0, 3), label="mid-start roll") == 0
                            else st.just(0), label="start")
        req["begin_index"] = draw(st.booleans(), label="set_begin_index")
    req["timestep_as"] = draw(st.sampled_from(["tensor", "tensor", "int"]), label="timestep_as")
    return req


def _error_request(draw, req, T, orig, L, strength):
    """A request diffusers rejects with ValueError (docs/design.md §4, errors)."""
    what = draw(_weighted({"both": 1, "neither": 1, "orig_gt_T": 1, "n_gt_T": 1, "n_gt_L": 3,
                           "not_descending": 1, "first_ge_T": 1}), label="error kind")
    req["kind"] = "error:" + what
    if what == "both":
        req["num_inference_steps"], req["timesteps"] = 1, [T - 1]
    elif what == "orig_gt_T":
        req["original_inference_steps"] = T + draw(st.integers(1, 50), label="orig excess")
        req["num_inference_steps"] = 1
    elif what == "n_gt_T":
        req["num_inference_steps"] = T + draw(st.integers(1, 5), label="n excess")
    elif what == "n_gt_L":
        # n in (L, orig] when strength < 1 cuts the grid below n; n > orig otherwise.
        req["num_inference_steps"] = draw(st.integers(L + 1, max(L + 1, min(orig, T))), label="n above L")
        req["strength"] = strength if strength != 1.0 else None
    elif what == "not_descending":
        a = draw(st.integers(0, T - 1), label="repeated timestep")
        ascending = a > 0 and draw(st.booleans(), label="ascending")
        req["timesteps"] = [a - 1, a] if ascending else [a, a]
    elif what == "first_ge_T":
        req["timesteps"] = [T + draw(st.integers(0, 20), label="first excess"), 0]


def _quirk_request(draw, req, cfg, T, orig, origin):
    """Inputs that diffusers accepts but mishandles (docs/design.md §6, quirks 1, 2, 4, 5; quirk 3 is in the config)."""
    what = draw(_weighted({"custom_strength": 2, "negative": 2, "float_timesteps": 1, "strength_gt_1": 1,
                           "extra_steps": 2, "zero_steps": 1, "empty_timesteps": 1}), label="quirk kind")
    req["kind"] = "quirk:" + what
    if what == "custom_strength":
        req["timesteps"] = _custom_timesteps(draw, T, origin)
        req["strength"] = draw(st.sampled_from([0.25, 0.5, 0.75]), label="custom strength")
    elif what == "negative":
        req["timesteps"] = sorted(set(_custom_timesteps(draw, T, origin)) | {-1}, reverse=True)
    elif what == "float_timesteps":
        ts = _custom_timesteps(draw, T, origin)
        req["timesteps"] = [float(t) + 0.25 for t in ts]
    elif what == "strength_gt_1":
        req["strength"] = draw(st.sampled_from([1.25, 1.5, 2.0]), label="strength > 1")
        req["num_inference_steps"] = draw(st.integers(1, min(4, orig)), label="num_inference_steps")
    elif what == "extra_steps":
        req["num_inference_steps"] = draw(st.integers(1, min(4, orig)), label="num_inference_steps")
        req["extra_steps"] = draw(st.integers(1, 2), label="extra steps")
    elif what == "zero_steps":
        req["num_inference_steps"] = 0
    else:
        req["timesteps"] = []


#: the set_timesteps keywords a request may use besides num_inference_steps (``allow`` of the request strategies)
REQUEST_KEYWORDS = frozenset({"original_inference_steps", "strength", "timesteps"})
#: what ``concern_requests`` draws for each schedule concern of docs/design.md §9.2
REQUEST_CONCERNS = ("timesteps", "original_inference_steps", "strength", "custom_timesteps", "errors")


@st.composite
def concern_requests(draw, cfg: LCMConfig, concern: str, *, profile: str = "diffusers",
                     quirks: Optional[bool] = None, max_steps: int = 64, allow=None) -> dict:
    """A ``set_timesteps`` request (the dict of ``schedule_requests``) aimed at one schedule concern:

    - ``timesteps``: ``num_inference_steps`` alone, 1…min(orig, ``max_steps``), the config's own orig;
    - ``original_inference_steps``: the per-call override (any 1…T, often a divisor-free value) or the config's
      value, with n ≤ orig;
    - ``strength``: img2img strengths (ties of orig·strength included) with n ≤ int(orig·strength), and one in five
      with n above it (the ValueError);
    - ``custom_timesteps``: custom lists on and off the grid, one in four cut by a strength, one in six invalid
      (not descending, or starting at ≥ T: ValueError);
    - ``errors``: requests diffusers rejects (as ``schedule_requests(errors=True)``), plus, with ``quirks`` (the
      default for the strict profile), the quirk inputs of docs/design.md §6.

    ``allow``: as ``schedule_requests`` (the per-call original_inference_steps is drawn only where allowed)."""
    if concern not in REQUEST_CONCERNS:
        raise ValueError(f"concern={concern!r} is not one of {REQUEST_CONCERNS}")
    quirks = (profile == "strict") if quirks is None else quirks
    T, orig = cfg.num_train_timesteps, cfg.original_inference_steps
    req = dict(num_inference_steps=None, original_inference_steps=None, timesteps=None, strength=None,
               start=0, begin_index=False, timestep_as="tensor", extra_steps=0, kind=concern)
    if concern == "timesteps":
        req["num_inference_steps"] = draw(st.integers(1, min(orig, max_steps)), label="num_inference_steps")
    elif concern == "original_inference_steps":
        if draw(st.integers(0, 3), label="override roll") > 0 and (allow is None or
                                                                    "original_inference_steps" in allow):
            orig = draw(st.one_of(st.integers(1, T), st.sampled_from(sorted({1, 3, 4, 7, 8, 30, 50, 64, T} & set(
                range(1, T + 1))))), label="original_inference_steps")
            req["original_inference_steps"] = orig
        req["num_inference_steps"] = draw(st.integers(1, min(orig, max_steps)), label="num_inference_steps")
    elif concern == "strength":
        strength = draw(_strengths(orig), label="strength")
        L = int(orig * strength)
        req["strength"] = strength
        if L < min(orig, T) and draw(st.integers(0, 4), label="too-many-steps roll") == 0:
            req["num_inference_steps"] = draw(st.integers(L + 1, min(orig, T)), label="n above L")
            req["kind"] = "strength:error"
        else:
            req["num_inference_steps"] = draw(st.integers(1, min(L, max_steps)), label="num_inference_steps")
    elif concern == "custom_timesteps":
        L = orig
        origin = np.arange(1, L + 1) * (T // orig) - 1
        roll = draw(st.integers(0, 11), label="custom roll")
        if roll < 2:                                  # invalid: diffusers raises ValueError
            a = draw(st.integers(0, T - 1), label="repeated timestep")
            req["timesteps"] = ([a - 1, a] if a > 0 and roll == 0 else [a, a]) if draw(
                st.booleans(), label="order or range") else [T + draw(st.integers(0, 20), label="excess"), 0]
            req["kind"] = "custom:error"
        else:
            req["timesteps"] = _custom_timesteps(draw, T, origin)
            if roll < 5:                              # strength cuts from the front: int(len·strength) kept
                n = len(req["timesteps"])
                req["strength"] = draw(st.sampled_from(sorted({min(1.0, j / n) for j in range(1, n + 1)}
                                                              | {0.5, 0.75})).filter(lambda s: int(n * s) >= 1),
                                       label="custom strength")
    else:   # errors
        if quirks and draw(st.integers(0, 2), label="quirk roll") == 0:
            origin = np.arange(1, orig + 1) * (T // orig) - 1
            _quirk_request(draw, req, cfg, T, orig, origin)
        else:
            strength = draw(_strengths(orig), label="strength")
            _error_request(draw, req, T, orig, int(orig * strength), strength)
    return req


# ---------------------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------------------

@st.composite
def shapes(draw, *, min_dims: int = 1, max_dims: int = 4, max_side: int = 4, max_batch: int = 3) -> tuple:
    """Shapes (batch, channels, ...) with 1 ≤ batch ≤ max_batch and other sides in [1, max_side]."""
    nd = draw(st.integers(min_dims, max_dims), label="ndim")
    return tuple([draw(st.integers(1, max_batch), label="batch")]
                 + [draw(st.integers(1, max_side), label=f"side {i}") for i in range(1, nd)])


class TensorRecipe(NamedTuple):
    """A tensor as a few numbers: N(0, 1) draws from ``torch.Generator().manual_seed(seed)`` in float64, times
    ``scale``, with every ``zero_every``-th element set to 0 (0 = none), then cast to ``dtype``."""
    shape: tuple
    dtype: str
    seed: int
    scale: float
    zero_every: int = 0

    def make(self, device="cpu", *, seed_offset: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + seed_offset)
        x = torch.randn(self.shape, generator=g, dtype=torch.float64) * self.scale
        if self.zero_every:
            x.view(-1)[:: self.zero_every] = 0.0
        return x.to(getattr(torch, self.dtype)).to(device)


@st.composite
def tensor_recipes(draw, shape=None, dtype=torch.float32, *, scales=None, **shape_kwargs) -> TensorRecipe:
    """A ``TensorRecipe`` of the given (or a drawn) shape and dtype, scale over 10⁻²…10² by default."""
    shape = tuple(shape) if shape is not None else draw(shapes(**shape_kwargs), label="shape")
    if isinstance(dtype, (list, tuple)):
        dtype = draw(st.sampled_from(dtype), label="dtype")
    scale = draw(scales if scales is not None else st.one_of(st.just(1.0), _decades(-2, 2)), label="scale")
    return TensorRecipe(shape, str(dtype).replace("torch.", ""), draw(st.integers(0, 2 ** 31 - 1), label="seed"),
                        float(scale), draw(st.sampled_from([0, 0, 0, 2, 3]), label="zero_every"))


def tensors(shape=None, dtype=torch.float32, *, device="cpu", **kwargs):
    """torch tensors (latents, model outputs) of any shape and dtype; keyword arguments as ``tensor_recipes``."""
    return tensor_recipes(shape, dtype, **kwargs).map(lambda r: r.make(device))


def timestep_batches(cfg: LCMConfig, batch: int):
    """One training timestep in [0, T) per batch element (as ``add_noise`` and ``get_velocity`` take them)."""
    T = cfg.num_train_timesteps
    t = st.one_of(st.integers(0, T - 1), st.sampled_from(sorted({0, 1, T // 2, T - 2, T - 1} & set(range(T)))))
    return st.lists(t, min_size=batch, max_size=batch)
