"""One example of one concern: the settings of a run (``Run``), the calls into the implementation and the findings
(``Example``), and what counts as a refusal on purpose (``refusal``, docs/design.md §9.1).

The per-case timeout (``time_limit``) uses ``signal.setitimer`` (SIGALRM): it works in the main thread of a POSIX
process only (elsewhere cases run without a limit), it replaces any other SIGALRM handler for the duration of a case,
and it interrupts Python code only: a loop inside one C call (a torch kernel) is interrupted when it returns. It times
the whole case, the reference's side included (well under a second per case); after a timeout the rest of that
concern is not run, and the next concern starts."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import threading
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import reference as ref
from ..numerics import dtype_name
from ..torch_impl.noise import draw_noise
from . import strategies as lst
from .cases import Case
from .compare import call, compare_values, step_outputs
from .noise import NoiseTap

class CaseTimeout(BaseException):
    """A case ran past ``timeout_s`` (a BaseException, so that the calls into the implementation, which catch
    Exception, do not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raise CaseTimeout in this thread after ``seconds`` (SIGALRM; module docstring for the limits)."""
    usable = (seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    state = {"armed": True}

    def handler(signum, frame):
        if state["armed"]:
            state["armed"] = False
            raise CaseTimeout(f"timed out after {seconds:g} s (timeout_s)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Stop(Exception):
    """Ends an example once its outcome is known."""


#: a TypeError about the call's signature: the implementation does not take a keyword it was given
_SIGNATURE = re.compile(r"unexpected keyword argument|got multiple values", re.IGNORECASE)


def refusal(exc, keys=()) -> bool:
    """Does ``exc`` say, on purpose, that the implementation does not do what was asked (``unsupported``), rather
    than that it broke (``fail``)? Only what an implementation says on purpose counts (docs/design.md §9.1):

    - a ``NotImplementedError``, from any call;
    - a ``TypeError`` or ``ValueError`` about one of ``keys``, the keywords or config keys of the request it was
      given (its message names the key, or it is Python's "unexpected keyword argument"): pass ``keys`` only for
      the constructor and ``set_timesteps``.

    Anything else (an AttributeError inside ``step``, a TypeError from an expression, an IndexError) is a crash: it
    fails the concern. A missing method is tested with ``hasattr`` before the call, never inferred from an
    AttributeError raised inside one."""
    if isinstance(exc, NotImplementedError):
        return True
    if not keys or not isinstance(exc, (TypeError, ValueError)):
        return False
    text = str(exc)
    if isinstance(exc, TypeError) and _SIGNATURE.search(text):
        return True
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", text) for k in keys)


def exception_text(exc, frames=0) -> str:
    """``Type: first line of the message``; with ``frames``, the last ``frames`` frames of its traceback too (where
    the implementation broke), one line each."""
    text = str(exc).strip().splitlines()
    out = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    if frames and exc.__traceback__ is not None:
        stack = traceback.extract_tb(exc.__traceback__)[-frames:]
        out += "".join(f"\n    {Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
                       for f in stack)
    return out


@dataclasses.dataclass
class Finding:
    kind: str                   # "fail", "unsupported", "not_observable", "skip"
    message: str
    cause: Optional[str] = None
    worst: Optional[dict] = None
    timeout: bool = False


@dataclasses.dataclass
class StepRec:
    pos: int
    idx: int
    t: int
    x: torch.Tensor
    m: torch.Tensor
    last: bool
    prev: object = None
    den: object = None
    exc: Optional[BaseException] = None
    problem: Optional[str] = None
    z: Optional[torch.Tensor] = None
    z_expected: Optional[torch.Tensor] = None


class Run:
    """The settings of one conform() run, for one concern."""

    def __init__(self, factory, concern, *, dtype, device, tables, profile, timeout_s, impl, min_judged=None,
                 support=None):
        self.factory, self.concern, self.dtype, self.device = factory, concern, dtype, device
        self.support = support      # support.Support: the region draws stay in (None: no probe, draw anything)
        self.tables, self.profile, self.timeout_s, self.impl = tables, profile, timeout_s, impl
        self.min_judged = 0 if min_judged is None else min_judged      # judged examples a pass needs
        self.dt = dtype_name(dtype)
        self.aborted = False
        self.refusals = {}          # config -> what the constructor refuses (concern config)


class Example:
    def __init__(self, run: Run, case: Case, label):
        self.run, self.case, self.label = run, case, label
        self.cfg = lst.build_config(case.config)
        self.findings: list[Finding] = []
        self.values = 0
        self.unbounded = 0          # values admitted unjudged: their bound is infinite (budget point 9, §6.Q3)
        self.max_ratio = None       # largest error/budget of the values compared within a budget (None: none)
        self.max_error = None       # where max_ratio is: {"scaled_error", "budget", "unit"} (scaled units)
        self.judged = False
        self.seconds = 0.0

    @property
    def config_text(self) -> str:
        """The config as its spec (only the keys that differ from the default; trained betas as their seed)."""
        return "LCMConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.case.config.items()) + ")"

    @property
    def description(self) -> str:
        """What identifies this case for a reader: the canonical case's name where it is one, its config, the
        schedule request, and the samples' shape and dtype (the full case is the ``replay`` literal)."""
        name = f"the canonical case \"{self.label.split(': ', 1)[-1]}\", " if str(self.label).startswith(
            "canonical") else ""
        s = self.case.sample
        return (f"{name}{self.config_text}, {request_text(self.case.request)}, samples {tuple(s.shape)} "
                f"{s.dtype}")

    # --- outcomes -----------------------------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return any(f.kind == "fail" for f in self.findings)

    def fail(self, message, *, cause=None, worst=None):
        self.findings.append(Finding("fail", message, cause, worst))
        raise Stop

    def unsupported(self, what):
        self.findings.append(Finding("unsupported", what))
        raise Stop

    def skip(self, why):
        self.findings.append(Finding("skip", why))
        raise Stop

    def not_observable(self, why):
        if not any(f.kind == "not_observable" and f.message == why for f in self.findings):
            self.findings.append(Finding("not_observable", why))

    # --- calls into the implementation --------------------------------------------------------------------------
    def build(self):
        """The scheduler for this case's config; a constructor that refuses or fails it skips the example (that
        is concern ``config``'s finding)."""
        sched, exc = call(lambda: self.run.factory(**self.cfg.to_dict()))
        if exc is not None:
            self.skip(f"the constructor raises {exception_text(exc)} (see concern config)")
        if sched is None or not hasattr(sched, "set_timesteps"):
            self.skip(f"the factory returns {type(sched).__name__}, not a scheduler (see concern config)")
        return sched

    def set_timesteps_kwargs(self, req=None):
        req = self.case.request if req is None else req
        return {k: req[k] for k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength")
                if req.get(k) is not None}

    def reference_schedule(self, req=None):
        req = self.case.request if req is None else req
        return call(lambda: ref.set_timesteps(
            self.cfg, req.get("num_inference_steps"), original_inference_steps=req.get("original_inference_steps"),
            timesteps=req.get("timesteps"), strength=1.0 if req.get("strength") is None else req["strength"],
            profile=self.run.profile))

    def own_schedule(self, sched, req=None):
        """set_timesteps(request) on the implementation, and the schedule it reports: (numpy int64 timesteps, the
        num_inference_steps that decides the last step). Skips the example where the request cannot be run (the
        schedule concerns judge that)."""
        want, w_exc = self.reference_schedule(req)
        if w_exc is not None:
            self.skip(f"the reference refuses the request ({exception_text(w_exc)})")
        _, g_exc = call(lambda: sched.set_timesteps(device=self.run.device, **self.set_timesteps_kwargs(req)))
        if g_exc is not None:
            self.skip(f"set_timesteps raises {exception_text(g_exc)} (see the schedule concerns)")
        ts, problem = read_timesteps(getattr(sched, "timesteps", None), integral_floats=True)
        T = self.cfg.num_train_timesteps
        if problem is not None or len(ts) == 0 or ts.min() < 0 or ts.max() >= T:
            self.skip(f"the implementation's schedule {problem or ts.tolist()} cannot be stepped (see concern "
                      "timesteps)")
        n_eff = want.num_inference_steps if np.array_equal(ts, want.timesteps) else len(ts)
        return ts, n_eff

    def generators(self, kind="single"):
        case = self.case
        if kind == "list":
            return [torch.Generator(device=self.run.device).manual_seed(case.generator_seed + i)
                    for i in range(case.sample.shape[0])]
        return torch.Generator(device=self.run.device).manual_seed(case.generator_seed)

    def schedule_both(self):
        """The case's schedule request on both sides: (scheduler, request, set_timesteps keywords, the reference's
        Schedule or None, its exception, the implementation's exception)."""
        sched = self.build()
        kw = self.set_timesteps_kwargs()
        want, w_exc = self.reference_schedule()
        _, g_exc = call(lambda: sched.set_timesteps(device=self.run.device, **kw))
        return sched, self.case.request, kw, want, w_exc, g_exc

    def own_run(self):
        """(schedule, num_inference_steps, step records) of one whole run on the implementation's own schedule."""
        sched = self.build()
        ts, n_eff = self.own_schedule(sched)
        return ts, n_eff, self.run_steps(sched, ts, n_eff)

    def run_steps(self, sched, ts, n_eff, *, generator="single", start=None, begin_index=None):
        """Step through the implementation's own schedule ``ts`` from ``start`` (the request's by default), each
        step's input its own previous prev_sample; returns one ``StepRec`` per step made. Stops at an exception or
        at an output that cannot be the next input (not a tensor shaped like the sample)."""
        case, req, device = self.case, self.case.request, self.run.device
        start = int(req.get("start") or 0) if start is None else start
        start = start if start < len(ts) else 0
        begin = bool(req.get("begin_index")) if begin_index is None else begin_index
        if begin and hasattr(sched, "set_begin_index"):
            _, exc = call(lambda: sched.set_begin_index(start))
            if exc is not None:
                self.skip(f"set_begin_index raises {exception_text(exc)} (see concern state)")
            idx = start
        else:
            idx = ref.index_for_timestep(ts, int(ts[start]))
        x = case.sample.make(device)
        gen = self.generators(generator)
        gens = gen if isinstance(gen, list) else [gen]
        as_tensor = req.get("timestep_as", "tensor") == "tensor"
        recs = []
        for pos in range(start, len(ts)):
            t = int(ts[pos])
            t_arg = sched.timesteps[pos] if as_tensor else t
            m = case.model_output.make(device, seed_offset=pos)
            states = [g.get_state() for g in gens]
            rec = StepRec(pos, idx, t, x, m, idx == n_eff - 1)
            with NoiseTap() as tap:
                out, rec.exc = call(lambda: sched.step(m, t_arg, x, generator=gen))
            recs.append(rec)
            if rec.exc is not None:
                break
            rec.prev, rec.den = step_outputs(out)
            rec.z = tap.noise_like(m)
            replay_gens = []
            for g, s in zip(gens, states):
                r = torch.Generator(device=g.device)
                r.set_state(s)
                replay_gens.append(r)
            rec.z_expected = draw_noise(tuple(m.shape), replay_gens if isinstance(gen, list) else replay_gens[0],
                                        m.device, x.dtype)
            rec.problem = tensor_problem(rec.prev, x)
            if out is None:
                rec.problem = "None"
            if rec.problem is not None:
                break
            if rec.prev.is_floating_point() and not torch.isfinite(rec.prev).all():
                # judged at this step (an accepted overflow, or a fail); a non-finite input is not stepped on
                break
            x = rec.prev
            idx += 1
        return recs

    def require_step(self, rec: StepRec):
        """Fail (or, for a refusal of a keyword, declare unsupported) a step that raised or returned nothing
        usable."""
        where = f"step {rec.idx} (t={rec.t})"
        if rec.exc is not None:
            if refusal(rec.exc, keys=("generator",)):
                self.unsupported(f"step(model_output, timestep, sample, generator=...) refused: "
                                 f"{exception_text(rec.exc)}")
            self.fail(f"{where} raises {exception_text(rec.exc, frames=3)}\n  on a config and request the "
                      f"implementation accepted\n  config: {self.config_text}\n  request: "
                      f"{request_text(self.case.request)}", cause="the implementation crashes in step",
                      worst={"where": where, "got": type(rec.exc).__name__, "want": "returns normally"})
        if rec.problem is not None:
            self.fail(f"{where} returns {rec.problem}, want prev_sample as a torch.Tensor shaped like the sample",
                      cause="step does not return (prev_sample, denoised) or an output object with prev_sample",
                      worst={"where": where})

    def reference_step(self, rec, ts, n_eff, z):
        """The reference's step at the implementation's own inputs and schedule (z None: zeros where needed)."""
        noise = z if z is not None else (None if rec.last else torch.zeros_like(rec.m))
        r, exc = call(lambda: ref.step(self.cfg, rec.m, rec.t, rec.x, schedule=ts, noise=noise, step_index=rec.idx,
                                       num_inference_steps=n_eff, profile=self.run.profile))
        if exc is not None:
            self.skip(f"the reference refuses step {rec.idx} of the implementation's schedule ({exception_text(exc)})")
        return r

    # --- value comparisons --------------------------------------------------------------------------------------
    def compare(self, what, got, want, terms, bound, *, where="", cause=None, dtype=None):
        """Judge ``got`` against ``want`` within ``bound`` (compare.compare_values); fail with the worst element
        and a likely cause (``cause(comparison)``) when it is not accepted."""
        dtype = self.run.dtype if dtype is None else dtype
        if not isinstance(got, torch.Tensor) and not isinstance(got, (np.ndarray, float, int)):
            self.fail(f"{what}{where} is a {type(got).__name__}, want a tensor")
        c = compare_values(got, want, terms, bound, dtype)
        self.judged = True
        if c.shape is not None:
            self.fail(f"{what}{where}: {c.shape}", worst={"where": what + where})
        self.values += c.size
        self.unbounded += c.unbounded
        d = dtype_name(dtype)
        if c.ok:
            if c.top_scaled is not None and (self.max_ratio is None or c.max_ratio >= self.max_ratio):
                self.max_error = {"scaled_error": c.top_scaled, "budget": c.top_budget, "unit": f"eps({d})"}
            self.max_ratio = max(self.max_ratio or 0.0, c.max_ratio)
        if not c.ok:
            worst = {"where": f"{what}{where} element {c.index}", "got": c.got, "want": c.want,
                     "scaled_error": c.worst_scaled, "budget": c.worst_budget, "ratio": c.worst_ratio,
                     "unit": f"eps({d})"}
            msg = (f"{what}{where} differs from the reference beyond the budget\n"
                   f"{c.describe(d)}\n"
                   f"  config: {self.config_text}\n"
                   f"  request: {request_text(self.case.request)}")
            self.fail(msg, cause=cause(c) if cause else None, worst=worst)
        return c

    def count(self, n=1):
        self.values += n
        self.judged = True


def request_text(req) -> str:
    args = ", ".join(f"{k}={req[k]!r}" for k in ("num_inference_steps", "original_inference_steps", "timesteps",
                                                  "strength") if req.get(k) is not None)
    extra = ""
    if req.get("start"):
        extra += f", run from index {req['start']}" + (" (set_begin_index)" if req.get("begin_index") else "")
    return f"set_timesteps({args}){extra}"


def read_timesteps(value, *, integral_floats=False):
    """(numpy int64 array, None), or (None, what is wrong) for a scheduler's ``timesteps``: a tensor, array or list
    of integers (``integral_floats``: integer-valued floats too)."""
    if value is None:
        return None, "None"
    try:
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    except Exception as e:  # noqa: BLE001 - whatever the implementation stored
        return None, f"unreadable ({exception_text(e)})"
    if arr.ndim != 1:
        return None, f"shaped {arr.shape}"
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), None
    if integral_floats and arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64), None
    return None, f"of dtype {arr.dtype} ({arr.tolist()[:8]})"


def tensor_problem(value, like) -> Optional[str]:
    """What keeps ``value`` from being an output like ``like`` (a torch.Tensor of its shape), or None."""
    if value is None:
        return "None"
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}"
    if tuple(value.shape) != tuple(like.shape):
        return f"a tensor of shape {tuple(value.shape)} (sample: {tuple(like.shape)})"
    return None


