"""The oracle: check any scheduler with diffusers' ``LCMScheduler`` interface against the float64 reference.

    >>> import diffusers, lcm_ref.oracle
    >>> print(lcm_ref.oracle.check(diffusers.LCMScheduler))        # raises OracleMismatch on a wrong answer

``check(factory)`` draws configs and inputs with hypothesis (``lcm_ref.oracle.strategies``), builds ``factory(**config)``
and compares, on the same inputs:

- ``set_timesteps``: the timesteps, exactly (integers), and the exception class where the reference raises;
- every ``step`` of a whole multistep run (``denoised`` and ``prev_sample``, shape and dtype too); each step's
  inputs are the implementation's own previous output, and the noise z the implementation draws is captured (a
  patch of ``torch.randn`` & co. records it; if nothing is drawn, the same generator state is replayed with
  ``randn_tensor``'s draw: ``lcm_ref.oracle.noise.step_noise``), so the reference steps with the same z;
- ``add_noise`` and ``get_velocity``.

Floats are compared in the scaled error of docs/design.md §8, ``|impl − ref| / (eps(D)·Σ|terms|)``
(``ref.scaled_error``, ``ref.step_terms``), against a budget derived from the dtype D and the table precision
``tables`` (default: the float32 tables that diffusers' interface stores), by the one acceptance rule of
``lcm_ref.oracle.compare`` (§8.4: the correctly rounded answer is accepted, ±inf and subnormals included). A
value over budget raises ``OracleMismatch`` naming the config, the step, the timestep, the worst element, got /
want, the scaled error and a reproduction to paste; success returns a ``Report`` (print it for a table). Command
line: ``lcm-ref check module:attr``. ``lcm_ref.oracle.conform`` is the same machinery judging each concern on its
own instead of stopping at the first difference.

The budget (``table_error_bound``, ``step_bound``, ``forward_bound``) is derived in ``lcm_ref.oracle.budget``, operation
by operation, from the dtype D and the float32 tables diffusers' interface stores: the same derivation the tests
use to compare diffusers with the reference.

The bound is worst case: diffusers' largest error/budget ratio in a default check is about
0.3 (``Report`` prints it), while every mutant in ``lcm_ref.oracle.mutants`` exceeds it (``tests/test_mutants.py``).
``tests/test_oracle.py`` checks E(t) itself against diffusers' float32 tables (ratio ≤ 0.15).

Exceptions: where the reference raises, the implementation must raise the same class (a subclass is fine; an
``LCMRefError`` counts as ValueError). Under ``profile="strict"`` a ``StrictError`` must come back as a ValueError
whose message names the parameter; refusing a schedule at ``set_timesteps`` that the strict reference refuses only
at the step using the bad timestep (zero-SNR T−1 under epsilon) is accepted: earlier, never later.
"""

from __future__ import annotations

import dataclasses
import pprint
from typing import Callable, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from .. import reference as ref
from . import strategies as lst
from ..errors import LCMRefError, StrictError
from .budget import TABLES, U_TABLE, forward_bound, step_bound, table_error_bound
from .compare import (call, compare_values, exceptions_match, hypothesis_seed, impl_path, load_factory,
                      source_independent_draws, step_outputs)
from ..numerics import torch_dtype
from ..errors import quiet
from .noise import NoiseTap, step_noise

__all__ = [
    "DEFAULT_MAX_EXAMPLES", "PARTS", "U_TABLE", "OracleMismatch", "Report", "Case", "NoiseTap",
    "check", "replay", "run_case", "draw_case", "table_error_bound", "step_bound", "forward_bound",
    "load_factory",
]

#: examples per check(): enough that every mutant in lcm_ref.oracle.mutants dies, by the hypothesis draws alone too
#: (tests/test_mutants.py; measured with the fixed seed hypothesis_seed("check") and source-independent draws:
#: ThresholdQuantileNearest, the last, at example 146 of 200), small enough that a check of diffusers
#: takes seconds on one CPU core
DEFAULT_MAX_EXAMPLES = 200
#: what check() compares; the conformance suite runs them one by one
PARTS = ("timesteps", "step", "add_noise", "get_velocity")


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    """Everything one example needs, as plain data (``to_dict`` is a literal for ``replay``)."""
    config: dict                     # lcm_ref.oracle.strategies.build_config spec
    request: dict                    # lcm_ref.oracle.strategies.schedule_requests
    sample: lst.TensorRecipe         # x at the first step
    model_output: lst.TensorRecipe   # step i uses seed + i
    generator_seed: int              # the torch.Generator passed to step()
    forward: Optional[dict] = None   # {"x0": recipe, "noise": recipe, "timesteps": [...]}
    extra: Optional[dict] = None     # what one conformance concern needs beyond this (lcm_ref.oracle.conform)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sample"], d["model_output"] = self.sample._asdict(), self.model_output._asdict()
        if self.forward:
            d["forward"] = dict(self.forward, x0=self.forward["x0"]._asdict(),
                                noise=self.forward["noise"]._asdict())
        if self.extra is None:
            del d["extra"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        rec = lambda r: r if isinstance(r, lst.TensorRecipe) else lst.TensorRecipe(**dict(r, shape=tuple(r["shape"])))
        fw = d.get("forward")
        if fw:
            fw = dict(fw, x0=rec(fw["x0"]), noise=rec(fw["noise"]))
        return cls(dict(d["config"]), dict(d["request"]), rec(d["sample"]), rec(d["model_output"]),
                   int(d["generator_seed"]), fw, dict(d["extra"]) if d.get("extra") is not None else None)


#: Explicit examples run before the hypothesis draws (as hypothesis' @example): the configurations and calls of
#: docs/design.md §4 that real pipelines make, one feature each, so that every check covers them whatever hypothesis draws.
CANONICAL = (
    ("LCM-SD/SDXL config (inert steps_offset, set_alpha_to_one, spacing), 4 steps: [999, 759, 499, 259]",
     dict(steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading"), dict(num_inference_steps=4), {}),
    ("Marigold-LCM: v_prediction, 4 steps, timestep_scaling 0.1 (c_skip, c_out far from 0 and 1)",
     dict(prediction_type="v_prediction", timestep_scaling=0.1), dict(num_inference_steps=4), {}),
    ("SSD-1B LCM: original_inference_steps 4, 2 steps",
     dict(original_inference_steps=4), dict(num_inference_steps=2), {}),
    ("img2img strength 0.5, 4 steps: [499, 379, 259, 139]",
     {}, dict(num_inference_steps=4, strength=0.5), {}),
    ("strength at the int/round boundary: 50 x 0.51 = 25.5 -> 25 grid points",
     {}, dict(num_inference_steps=3, strength=0.51), {}),
    ("num_inference_steps above int(orig x strength): ValueError",
     {}, dict(num_inference_steps=30, strength=0.5), {}),
    ("custom timesteps ending at 0: the step before re-noises with ᾱ[0]",
     {}, dict(timesteps=[999, 499, 259, 0]), {}),
    ("sample prediction, clip_sample_range 2.5, model outputs beyond it",
     dict(prediction_type="sample", clip_sample=True, clip_sample_range=2.5), dict(num_inference_steps=4),
     dict(scale=4.0)),
    ("dynamic thresholding (ratio 0.995, sample_max_value 10), epsilon",
     dict(thresholding=True, sample_max_value=10.0), dict(num_inference_steps=4), dict(shape=(2, 3, 4, 4))),
    ("zero-SNR with v_prediction, 4 steps from T-1 (ᾱ = 0)",
     dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), dict(num_inference_steps=4), {}),
    ("squaredcos_cap_v2, orig 30 (first timestep 989), 6 steps from index 2 by set_begin_index, int timesteps",
     dict(beta_schedule="squaredcos_cap_v2", original_inference_steps=30),
     dict(num_inference_steps=6, start=2, begin_index=True, timestep_as="int"), {}),
    ("trained_betas, 8 steps, timestep_scaling 1",
     dict(trained_betas={"seed": 0}, timestep_scaling=1.0), dict(num_inference_steps=8), {}),
    ("linear, T = 100, orig 100 (k = 1: the grid reaches 0), 5 steps",
     dict(num_train_timesteps=100, beta_schedule="linear", original_inference_steps=100),
     dict(num_inference_steps=5), {}),
)


def canonical_cases(dtype=torch.float32):
    """The ``CANONICAL`` examples as (comment, Case) pairs, tensors in ``dtype``."""
    dt = str(torch_dtype(dtype)).replace("torch.", "")
    out = []
    for k, (comment, config, request, extra) in enumerate(CANONICAL):
        req = dict(num_inference_steps=None, original_inference_steps=None, timesteps=None, strength=None,
                   start=0, begin_index=False, timestep_as="tensor", extra_steps=0, kind="canonical")
        req.update(request)
        shape = extra.get("shape", (1, 4, 4, 4))
        T = config.get("num_train_timesteps", 1000)
        fw = dict(x0=lst.TensorRecipe(shape, dt, 100 + k, 1.0), noise=lst.TensorRecipe(shape, dt, 200 + k, 1.0),
                  timesteps=[(0, T // 2, T - 1)[i % 3] for i in range(shape[0])])
        out.append((comment, Case(dict(config), req, lst.TensorRecipe(shape, dt, k, 1.0),
                                  lst.TensorRecipe(shape, dt, 50 + k, extra.get("scale", 1.0)), k, fw)))
    return out


def draw_case(data, *, dtype=torch.float32, profile="diffusers", quirks=None, errors=True) -> Case:
    """Draw one ``Case`` from hypothesis ``st.data()``, with labelled draws."""
    dt = str(torch_dtype(dtype)).replace("torch.", "")
    spec = data.draw(lst.config_specs(profile=profile, quirks=quirks), label="config")
    cfg = lst.build_config(spec)
    req = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=quirks, errors=errors), label="schedule")
    # diffusers' thresholding needs >= 3 dims: with (batch, channels) np.prod([]) = 1.0 is a float and reshape
    # raises TypeError (the reference thresholds any >= 2-dim sample)
    shape = data.draw(lst.shapes(min_dims=3 if cfg.thresholding else 1), label="shape")
    sample = data.draw(lst.tensor_recipes(shape, dt), label="sample")
    model_output = data.draw(lst.tensor_recipes(shape, dt), label="model_output")
    gen_seed = data.draw(st.integers(0, 2 ** 31 - 1), label="generator seed")
    fw = dict(x0=data.draw(lst.tensor_recipes(shape, dt), label="add_noise x0"),
              noise=data.draw(lst.tensor_recipes(shape, dt, scales=st.just(1.0)), label="add_noise noise"),
              timesteps=data.draw(lst.timestep_batches(cfg, shape[0]), label="forward timesteps"))
    return Case(spec, req, sample, model_output, gen_seed, fw)


# ---------------------------------------------------------------------------------------------------------------
# Report and mismatch
# ---------------------------------------------------------------------------------------------------------------

class OracleMismatch(AssertionError):
    """The implementation differs from the reference beyond the budget, or raises where the reference does not
    (or the other way round). ``str()`` names the config, step, timestep, worst element and a reproduction."""

    def __init__(self, message, *, quantity, case=None, step_index=None, timestep=None, index=None, got=None,
                 want=None, scaled=None, budget=None, repro=None):
        super().__init__(message)
        self.quantity, self.case, self.step_index, self.timestep = quantity, case, step_index, timestep
        self.index, self.got, self.want, self.scaled, self.budget, self.repro = index, got, want, scaled, budget, repro


@dataclasses.dataclass
class _Row:
    compared: int = 0
    max_scaled: float = 0.0
    where_scaled: str = ""
    max_ratio: float = 0.0
    budget_at: float = 0.0
    where_ratio: str = ""
    max_rel: float = 0.0


class Report:
    """What a successful ``check`` saw: per quantity, how many values were compared, the largest scaled error
    (units of eps(dtype)) and where, and the largest error/budget ratio (< 1 everywhere) and where."""

    QUANTITIES = ("timesteps", "exceptions", "denoised", "prev_sample", "add_noise", "get_velocity")

    def __init__(self, impl="", dtype=torch.float32, device="cpu", profile="diffusers", tables="float32"):
        self.impl, self.dtype, self.device, self.profile = impl, torch_dtype(dtype), str(device), profile
        self.tables = tables
        self.rows = {q: _Row() for q in self.QUANTITIES}
        self.examples = 0
        self.canonical = 0
        self.steps = 0

    def count(self, quantity, n=1):
        self.rows[quantity].compared += n

    def add(self, quantity, scaled, ratio, budget, where, rel=None):
        """Record one comparison: arrays of scaled error and error/budget ratio, the budget (scaled), a function
        idx -> description of where, and (diagnostic only, docs/design.md §8) the relative error."""
        row = self.rows[quantity]
        row.compared += int(np.size(scaled))
        if np.size(scaled) == 0:
            return
        if rel is not None and np.size(rel):
            row.max_rel = max(row.max_rel, float(np.max(rel)))
        i = np.unravel_index(int(np.argmax(scaled)), np.shape(scaled))
        if float(scaled[i]) > row.max_scaled:
            row.max_scaled, row.where_scaled = float(scaled[i]), where(i)
        j = np.unravel_index(int(np.argmax(ratio)), np.shape(ratio))
        if float(ratio[j]) > row.max_ratio:
            row.max_ratio, row.budget_at, row.where_ratio = float(ratio[j]), float(budget[j]), where(j)

    def __str__(self):
        dt = str(self.dtype).replace("torch.", "")
        lines = [f"lcm_ref oracle: {self.impl or 'implementation'} vs lcm_ref.reference "
                 f"(profile={self.profile}, dtype={dt}, device={self.device})",
                 f"{self.canonical} canonical + {self.examples} hypothesis examples, {self.steps} steps; scaled error = |impl - ref| / (eps({dt}) * "
                 f"sum|terms|); budget derived in lcm_ref.oracle ({self.tables} tables allowed)",
                 "",
                 "| quantity | compared | max scaled error | where | max error/budget | budget there | where "
                 "| max rel. error |",
                 "|---|---:|---:|---|---:|---:|---|---:|"]
        for q, r in self.rows.items():
            if q in ("timesteps", "exceptions"):
                lines.append(f"| {q} | {r.compared} | exact | | | | | |")
            else:
                lines.append(f"| {q} | {r.compared} | {r.max_scaled:.3g} | {r.where_scaled} | {r.max_ratio:.3g} | "
                             f"{r.budget_at:.3g} | {r.where_ratio} | {r.max_rel:.3g} |")
        return "\n".join(lines)

    def ok(self) -> bool:
        return all(r.max_ratio <= 1 for r in self.rows.values())


def _impl_path(factory):
    return impl_path(factory)


class _Ctx:
    """The per-case state that messages need."""

    def __init__(self, case, cfg, impl, dtype, device, profile, report, example, tables="float32"):
        self.case, self.cfg, self.impl, self.dtype, self.device = case, cfg, impl, dtype, device
        self.profile, self.report, self.example, self.schedule = profile, report, example, None
        self.tables = tables

    def repro(self):
        impl = repr(self.impl) if self.impl else "factory  # your scheduler class or factory"
        dt = str(self.dtype).replace("torch.", "")
        case = pprint.pformat(self.case.to_dict(), width=100, sort_dicts=False)
        case = "\n".join("    " + line for line in case.splitlines())
        return (f"import lcm_ref.oracle\nlcm_ref.oracle.replay(\n    {impl},\n{case},\n"
                f"    dtype={dt!r}, device={self.device!r}, profile={self.profile!r}, tables={self.tables!r})")

    def header(self, quantity, what):
        req = {k: v for k, v in self.case.request.items()
               if k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength") and v is not None}
        args = ", ".join(f"{k}={v!r}" for k, v in req.items())
        sched = "" if self.schedule is None else f" -> {self.schedule.tolist()}"
        dt = str(self.dtype).replace("torch.", "")
        return (f"{quantity}: {what}\n"
                f"  implementation: {self.impl or 'factory'} (profile={self.profile}, dtype={dt}, "
                f"device={self.device})\n"
                f"  config:   {self.cfg!r}\n"
                f"  schedule: set_timesteps({args}){sched}")

    def fail(self, quantity, what, detail="", **kw):
        msg = self.header(quantity, what) + (("\n" + detail) if detail else "")
        repro = self.repro()
        raise OracleMismatch(msg + "\nreproduce:\n" + "\n".join("    " + s for s in repro.splitlines()),
                             quantity=quantity, case=self.case, repro=repro, **kw)

    def where(self, step=None, t=None):
        def describe(idx):
            s = self.example if isinstance(self.example, str) else f"ex {self.example}"
            if step is not None:
                s += f" step {step} t={t}"
            return s + f" {tuple(int(i) for i in idx)}"
        return describe


_call = call
_exceptions_match = exceptions_match


def _compare_exceptions(ctx, what, want, got, **kw):
    if want is None and got is None:
        return False
    if want is not None and got is not None and _exceptions_match(want, got):
        ctx.report.count("exceptions")
        return True
    w = "returns normally" if want is None else f"raises {type(want).__name__}: {want}"
    g = "returns normally" if got is None else f"raises {type(got).__name__}: {got}"
    need = ""
    if isinstance(want, StrictError):
        need = f" (expected: a ValueError whose message names {want.parameter!r})"
    ctx.fail("exceptions", f"{what}: the reference {w}, the implementation {g}{need}", **kw)


def _compare_values(ctx, quantity, got, want, terms, bound, *, step=None, t=None):
    """Element-wise check within the budget by ``lcm_ref.oracle.compare``'s rule (docs/design.md §8.4: the correctly
    rounded answer is accepted); raise on the first rejected value, else record into the report."""
    c = compare_values(got, want, terms, bound, ctx.dtype)
    if c.shape is not None:
        ctx.fail(quantity, c.shape, step_index=step, timestep=t)
    if not c.ok:
        detail = (f"  step:     index {step}, timestep {t} (passed as {ctx.case.request.get('timestep_as')})\n"
                  if step is not None else "")
        ctx.fail(quantity, "differs from the reference beyond the budget", detail + c.describe(ctx.dtype),
                 step_index=step, timestep=t, index=c.index, got=c.got, want=c.want, scaled=c.worst_scaled,
                 budget=c.worst_budget)
    finite = lambda a: np.where(np.isfinite(a), a, 0.0)  # noqa: E731
    ctx.report.add(quantity, finite(c.scaled), finite(c.ratio), finite(c.budget), ctx.where(step, t), rel=c.rel)


def _check_like(ctx, quantity, out, like, step=None, t=None):
    if not isinstance(out, torch.Tensor):
        ctx.fail(quantity, f"is a {type(out).__name__}, want a torch.Tensor", step_index=step, timestep=t)
    if out.dtype != like.dtype or tuple(out.shape) != tuple(like.shape):
        ctx.fail(quantity, f"has dtype {out.dtype} and shape {tuple(out.shape)}, want those of the sample: "
                 f"{like.dtype}, {tuple(like.shape)}", step_index=step, timestep=t)


_outputs = step_outputs


def run_case(factory, case: Case, *, dtype=torch.float32, device="cpu", profile="diffusers", parts=PARTS,
             report: Optional[Report] = None, impl: Optional[str] = None, example: int = 0,
             tables: str = "float32") -> Report:
    """Run one ``Case`` against the reference: raises ``OracleMismatch``, or records into ``report``."""
    dtype = torch_dtype(dtype)
    report = report if report is not None else Report(impl or _impl_path(factory) or "", dtype, device, profile,
                                                      tables)
    cfg = lst.build_config(case.config)
    ctx = _Ctx(case, cfg, impl if impl is not None else _impl_path(factory), dtype, device, profile, report, example,
               tables)
    with quiet():
        sched, exc = _call(lambda: factory(**cfg.to_dict()))
        if exc is not None:
            ctx.fail("exceptions", f"the constructor raises {type(exc).__name__}: {exc} for a valid config")
        if "timesteps" in parts or "step" in parts:
            _run_schedule(ctx, sched, parts)
        if case.forward and ("add_noise" in parts or "get_velocity" in parts):
            _run_forward(ctx, sched, parts)
    return report


def _run_schedule(ctx, sched, parts):
    req, cfg = ctx.case.request, ctx.cfg
    kw = {k: req[k] for k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength")
          if req.get(k) is not None}
    want, w_exc = _call(lambda: ref.set_timesteps(
        cfg, req.get("num_inference_steps"), original_inference_steps=req.get("original_inference_steps"),
        timesteps=req.get("timesteps"), strength=1.0 if req.get("strength") is None else req["strength"],
        profile=ctx.profile))
    _, g_exc = _call(lambda: sched.set_timesteps(device=ctx.device, **kw))
    if ctx.profile == "strict" and w_exc is None and g_exc is not None:
        later = _strict_error_later(ctx, want)
        if later is not None and _exceptions_match(later, g_exc):
            ctx.report.count("exceptions")   # refused early: allowed, the reference refuses later in this run
            return
    if _compare_exceptions(ctx, "set_timesteps", w_exc, g_exc):
        return
    ctx.schedule = want.timesteps
    got = getattr(sched, "timesteps", None)
    got = None if got is None else (got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got))
    if got is None or got.dtype.kind not in "iu" or got.shape != want.timesteps.shape \
            or not np.array_equal(got, want.timesteps):
        ctx.fail("timesteps", f"scheduler.timesteps = {None if got is None else got.tolist()} "
                 f"(dtype {None if got is None else got.dtype}), want {want.timesteps.tolist()} (int64)")
    ctx.report.count("timesteps")
    if "step" in parts:
        _run_steps(ctx, sched, want)


def _strict_error_later(ctx, want):
    """The StrictError the strict reference raises for a step at any index of this schedule (the case's inputs,
    zero noise), or None. A strict implementation may refuse at set_timesteps a schedule that the reference
    refuses only at the step that uses the bad timestep (a zero-SNR T−1 under epsilon prediction): earlier than
    the reference, for the same parameter, is allowed; later or never is not."""
    req, cfg, case = ctx.case.request, ctx.cfg, ctx.case
    ts, x = want.timesteps, case.sample.make()
    for i in range(len(ts) + int(req.get("extra_steps") or 0)):
        t = int(ts[min(i, len(ts) - 1)])
        try:
            ref.step(cfg, case.model_output.make(seed_offset=i), t, x, schedule=ts, noise=np.zeros(tuple(x.shape)),
                     step_index=i, num_inference_steps=want.num_inference_steps, profile="strict")
        except StrictError as e:
            return e
        except Exception:
            return None
    return None


def _run_steps(ctx, sched, want):
    req, cfg, case, device = ctx.case.request, ctx.cfg, ctx.case, ctx.device
    ts, n_eff = want.timesteps, want.num_inference_steps
    start = int(req.get("start") or 0)
    if req.get("begin_index"):
        sched.set_begin_index(start)
        idx = start
    else:
        idx = None
    x = case.sample.make(device)
    gen = torch.Generator(device=device).manual_seed(case.generator_seed)
    n_calls = len(ts) - start + int(req.get("extra_steps") or 0)
    for k in range(n_calls):
        pos = min(start + k, len(ts) - 1)
        t = int(ts[pos])
        t_impl = sched.timesteps[pos] if req.get("timestep_as", "tensor") == "tensor" else t
        m = case.model_output.make(device, seed_offset=start + k)
        with step_noise(x, gen) as tap:
            out, g_exc = _call(lambda: sched.step(m, t_impl, x, generator=gen))
        z = tap.z
        # step_index None: the reference finds it from the timestep as diffusers' first call does
        r, w_exc = _call(lambda: ref.step(cfg, m, t, x, schedule=ts, noise=z, step_index=idx,
                                          num_inference_steps=n_eff, profile=ctx.profile))
        if _compare_exceptions(ctx, f"step (index {idx}, timestep {t})", w_exc, g_exc, step_index=idx, timestep=t):
            return
        if idx is None:
            idx = ref.index_for_timestep(ts, t)
        prev, den = _outputs(out)
        # a step that returns no denoised (only prev_sample) is judged on what it returns: on the last step
        # prev_sample is denoised, and it is compared below (docs/design.md §9.3, not_observable)
        for name, val in (("prev_sample", prev), ("denoised", den)):
            if val is not None or name == "prev_sample":
                _check_like(ctx, name, val, x, idx, t)
        bound_den, bound_prev = step_bound(cfg, m, t, x, z, schedule=ts, step_index=idx, num_inference_steps=n_eff,
                                           dtype=ctx.dtype, tables=ctx.tables)
        terms = ref.step_terms(cfg, m, t, x, schedule=ts, noise=z, step_index=idx, num_inference_steps=n_eff)
        if den is not None:
            _compare_values(ctx, "denoised", den, r.denoised, terms.denoised, bound_den, step=idx, t=t)
        _compare_values(ctx, "prev_sample", prev, r.prev_sample, terms.prev_sample, bound_prev, step=idx, t=t)
        ctx.report.steps += 1
        x = prev
        idx += 1


def _run_forward(ctx, sched, parts):
    fw, cfg, device = ctx.case.forward, ctx.cfg, ctx.device
    x0, noise = fw["x0"].make(device), fw["noise"].make(device)
    tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=device)
    for name, a, b in (("add_noise", x0, noise), ("get_velocity", noise, x0)):
        if name not in parts:
            continue
        if name == "add_noise":
            want, w_exc = _call(lambda: ref.add_noise(cfg, x0, noise, fw["timesteps"]))
            got, g_exc = _call(lambda: sched.add_noise(x0, noise, tt))
        else:   # get_velocity(sample=x0, noise, t) = √ᾱ·noise − √(1−ᾱ)·x0
            want, w_exc = _call(lambda: ref.get_velocity(cfg, x0, noise, fw["timesteps"]))
            got, g_exc = _call(lambda: sched.get_velocity(x0, noise, tt))
        if _compare_exceptions(ctx, name, w_exc, g_exc):
            continue
        _check_like(ctx, name, got, x0)
        terms, bound = forward_bound(cfg, a, b, fw["timesteps"], dtype=ctx.dtype, tables=ctx.tables)
        _compare_values(ctx, name, got, want, terms, bound)


# ---------------------------------------------------------------------------------------------------------------
# check / replay
# ---------------------------------------------------------------------------------------------------------------

def check(factory: Callable, *, dtype=torch.float32, device="cpu", max_examples: int = DEFAULT_MAX_EXAMPLES,
          profile: str = "diffusers", quirks: Optional[bool] = None, errors: bool = True, parts=PARTS,
          shrink: bool = True, explicit: bool = True, impl: Optional[str] = None,
          tables: str = "float32") -> Report:
    """Check ``factory`` (``factory(**LCMConfig.to_dict())`` -> a scheduler with diffusers' LCMScheduler
    interface) against ``lcm_ref.reference`` on ``max_examples`` hypothesis examples (drawn from a fixed seed: a
    rerun, or another install, draws the same examples). Returns a ``Report``; raises ``OracleMismatch`` on the
    first wrong answer (shrunk to a small example unless ``shrink=False``). ``tables`` is the table precision the
    budget allows (``lcm_ref.oracle.budget.TABLES``, docs/design.md §8.5).

    ``profile="strict"`` expects ValueErrors naming the parameter for diffusers' quirk inputs (docs/design.md §6);
    ``quirks`` (default: True for strict) adds those inputs to the draws; ``errors`` adds requests diffusers
    rejects; ``parts`` selects among ``PARTS``; ``explicit`` runs the ``CANONICAL`` examples first."""
    dtype = torch_dtype(dtype)
    if profile not in ref.PROFILES:
        raise LCMRefError("profile", profile, f"one of {ref.PROFILES}")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise LCMRefError("parts", bad, f"a subset of {PARTS}")
    if not (isinstance(max_examples, int) and max_examples >= 1):
        raise LCMRefError("max_examples", max_examples, "an integer >= 1")
    if tables not in TABLES:
        raise LCMRefError("tables", tables, f"one of {TABLES}")
    name = impl if impl is not None else _impl_path(factory)
    report = Report(name or "", dtype, device, profile, tables)
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if shrink else ())
    if explicit:
        for k, (comment, case) in enumerate(canonical_cases(dtype)):
            try:
                run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts,
                         report=report, impl=name, example=f"canonical {k}", tables=tables)
                report.canonical += 1
            except OracleMismatch as e:
                e.examples = f"canonical {k}"
                e.args = (f"[canonical example {k}: {comment}]\n" + e.args[0],)
                raise

    @seed(hypothesis_seed("check"))
    @settings(max_examples=max_examples, derandomize=False, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=phases, report_multiple_bugs=False)
    @given(st.data())
    def run(data):
        report.examples += 1
        case = draw_case(data, dtype=dtype, profile=profile, quirks=quirks, errors=errors)
        run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts, report=report,
                 impl=name, example=report.examples, tables=tables)

    try:
        with source_independent_draws():
            run()
    except OracleMismatch as e:
        e.examples = report.examples
        raise
    return report


def replay(factory, case, *, dtype="float32", device="cpu", profile="diffusers", parts=PARTS,
           tables="float32") -> Report:
    """Rerun one case (a ``Case`` or its ``to_dict()``, as printed in an OracleMismatch); ``factory`` may be a
    ``"module:attr"`` string."""
    impl = factory if isinstance(factory, str) else None
    if isinstance(factory, str):
        factory = load_factory(factory)
    case = case if isinstance(case, Case) else Case.from_dict(case)
    return run_case(factory, case, dtype=dtype, device=device, profile=profile, parts=parts, impl=impl,
                    tables=tables)
