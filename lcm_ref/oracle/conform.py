"""Conformance: every concern of an LCM scheduler, each judged on its own (docs/design.md §9).

    >>> import diffusers
    >>> from lcm_ref.oracle.conform import conform
    >>> report = conform(diffusers.LCMScheduler)
    >>> print(report)                  # a verdict per concern, then PASS or FAIL
    >>> report.ok, report.to_json()

``conform(factory)`` takes what ``check`` takes — ``factory(**LCMConfig.to_dict())`` builds a scheduler with diffusers'
``LCMScheduler`` interface — and checks each concern of ``CONCERNS`` separately: its own examples (canonical cases
where useful, then a hypothesis run from a seed fixed by the concern's name, ``compare.hypothesis_seed``), its own
verdict (``VERDICTS``). A deviation therefore shows in the concern it breaks and hides no other one, where ``check``
stops at the first difference.

- Schedule concerns (``timesteps``, ``original_inference_steps``, ``strength``, ``custom_timesteps``, ``errors``)
  compare the integers and exception classes of ``set_timesteps``.
- Step concerns (``denoised``, ``prev_sample``, ``final_step``, ``noise``, ``dtype``, ``clip_threshold``) run whole
  multistep runs on the implementation's **own** schedule (``scheduler.timesteps`` after its ``set_timesteps``):
  given the timesteps it chose, are its steps right? Each step's input is its own previous ``prev_sample``; the
  reference is evaluated at those inputs with the schedule the implementation reports. ``prev_sample`` re-noises the
  implementation's own ``denoised`` with the z it drew (captured by ``noise.NoiseTap``), so an error of denoised is
  judged once, in ``denoised``, and a wrong noise stream only in ``noise``.
- ``tables``, ``add_noise``, ``get_velocity``, ``previous_timestep``, ``config``, ``state``: see ``DESCRIPTIONS``.

Floats are judged by ``lcm_ref.oracle.compare`` (docs/design.md §8.4: the correctly rounded answer is accepted) against
the budget of ``lcm_ref.oracle.budget`` for the dtype and the table precision ``tables`` (§8.5).

Limits: the per-case timeout (``timeout_s``) uses ``signal.setitimer`` (SIGALRM): it works in the main thread of a
POSIX process only (elsewhere cases run without a limit), it replaces any other SIGALRM handler for the duration of
a case, and it interrupts Python code only: a loop inside one C call (a torch kernel) is interrupted when it returns.
It times the whole case, the reference's side included (well under a second per case); after a timeout the rest of
that concern is not run, and the next concern starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pprint
import re
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

from .. import __version__
from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError
from ..errors import quiet
from ..numerics import dtype_name, eps, markdown_table, to_f64, torch_dtype
from ..torch_impl.noise import draw_noise
from . import strategies as lst
from .budget import TABLES, alphas_cumprod_bound, forward_bound, renoise_bound, scalings_bound, step_bound
from .check import Case, OracleMismatch, canonical_cases, load_factory
from .compare import (abbreviate, call, compare_values, exceptions_match, hypothesis_seed, impl_path, round_to,
                      source_independent_draws, step_outputs)
from .noise import NoiseTap
from .support import probe

__all__ = ["CONCERNS", "DESCRIPTIONS", "VERDICTS", "STATUSES", "EXIT_CODES", "MIN_JUDGED", "STEP_CONCERNS",
           "NO_KNOWN_PATTERN", "DEFAULT_EXAMPLES", "refusal", "exception_text", "DEFAULT_TIMEOUT_S", "SHRINK_SECONDS",
           "SCHEMA_PATH", "ConcernResult", "ConformanceReport", "CaseTimeout", "conform", "replay", "schema",
           "draw_concern_case"]

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

VERDICTS = ("pass", "fail", "inconclusive", "unsupported", "not_observable")
#: the verdict of a whole run: PASS (exit 0), FAIL (exit 1), INCOMPLETE (exit 3; 2 is a usage error)
STATUSES = ("PASS", "FAIL", "INCOMPLETE")
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 3}

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
SCHEMA_PATH = Path(__file__).with_name("conformance.schema.json")


def schema() -> dict:
    """The JSON Schema (2020-12) of ``ConformanceReport.to_dict()``, shipped as ``conformance.schema.json``."""
    return json.loads(SCHEMA_PATH.read_text())


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ConcernResult:
    """The verdict on one concern, with its evidence. ``examples``: examples run (canonical and drawn);
    ``judged``: those compared with the reference that did not fail (a pass needs ``min_judged`` of them);
    ``failing_examples``: those that failed; ``skipped``: why the others were not judged (reason -> count);
    ``reason``: one line saying why the verdict is not pass (empty for pass); ``reproduce``: a pasteable
    ``replay(...)`` of the smallest failing case (None unless the verdict is fail); ``worst``: the worst value of
    that case (got, want, scaled error, budget, where); ``refused``: what the implementation refused."""
    concern: str
    verdict: str
    detail: str
    failing_examples: int = 0
    reproduce: Optional[str] = None
    description: str = ""
    examples: int = 0
    judged: int = 0
    min_judged: int = 0
    reason: str = ""
    skipped: dict = dataclasses.field(default_factory=dict)
    values: int = 0
    max_ratio: Optional[float] = None
    likely_cause: Optional[str] = None
    refused: list = dataclasses.field(default_factory=list)
    worst: Optional[dict] = None
    case: Optional[dict] = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["worst"] = None if self.worst is None else {k: _json_float(v) if isinstance(v, float) else v
                                                      for k, v in self.worst.items()}
        d["max_ratio"] = _json_float(self.max_ratio)
        d["seconds"] = round(self.seconds, 3)
        return d


def _json_float(v):
    """A float as JSON allows it: finite as a number, else the string "inf", "-inf" or "nan"."""
    if v is None or not isinstance(v, float) or math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


class ConformanceReport:
    """One verdict per concern (``concerns``: ``ConcernResult`` in ``CONCERNS`` order). ``ok``: no concern fails.
    ``str()`` is the human verdict table ending in PASS or FAIL; ``to_dict``/``to_json`` follow
    ``conformance.schema.json``; ``to_markdown`` is the table for a report page."""

    def __init__(self, implementation, dtype, device, tables, profile, examples, timeout_s):
        self.implementation, self.dtype, self.device = implementation, dtype, device
        self.tables, self.profile, self.examples, self.timeout_s = tables, profile, examples, timeout_s
        self.lcm_ref_version = __version__
        self.region = None          # support.Support: what the implementation accepts, the region drawn from
        self.concerns: list[ConcernResult] = []
        self.seconds = 0.0

    @property
    def status(self) -> str:
        """PASS: no concern fails, none is inconclusive, and the step was judged; FAIL: a concern fails;
        INCOMPLETE: nothing fails but something could not be judged (``incomplete_reasons``)."""
        if any(c.verdict == "fail" for c in self.concerns):
            return "FAIL"
        return "INCOMPLETE" if self.incomplete_reasons() else "PASS"

    def incomplete_reasons(self) -> list:
        """Why the run is not PASS although no concern fails (empty when it is PASS or FAIL)."""
        out = [f"{c.concern}: {c.reason}" for c in self.concerns if c.verdict == "inconclusive"]
        if not any(c.verdict == "pass" for c in self.concerns):
            out.append("no concern passed: nothing was judged")
        steps = [c for c in self.concerns if c.concern in STEP_CONCERNS]
        if steps and not any(c.verdict == "pass" for c in steps):
            out.append("no step concern (" + ", ".join(c.concern for c in steps) + ") passed: the scheduler's step "
                       "was not judged")
        return out

    @property
    def ok(self) -> bool:
        """The run is PASS."""
        return self.status == "PASS"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def __getitem__(self, concern) -> ConcernResult:
        for c in self.concerns:
            if c.concern == concern:
                return c
        raise KeyError(concern)

    def verdicts(self) -> dict:
        return {c.concern: c.verdict for c in self.concerns}

    def to_dict(self) -> dict:
        return {"implementation": self.implementation, "status": self.status,
                "incomplete_reasons": self.incomplete_reasons(), "dtype": self.dtype, "device": self.device,
                "lcm_ref_version": self.lcm_ref_version, "tables": self.tables, "profile": self.profile,
                "examples": self.examples, "timeout_s": self.timeout_s, "seconds": round(self.seconds, 3),
                "region": self.region.to_dict() if self.region is not None else None,
                "concerns": [c.to_dict() for c in self.concerns]}

    def to_json(self, indent=2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

    def _summary(self) -> str:
        counts = {v: sum(c.verdict == v for c in self.concerns) for v in VERDICTS}
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        judged = sum(c.judged for c in self.concerns)
        return (f"{self.status} ({len(self.concerns)} concerns: {parts}; {judged} examples judged; "
                f"{self.seconds:.1f} s)")

    def _header(self) -> str:
        head = (f"lcm_ref {self.lcm_ref_version} conformance of {self.implementation or 'the implementation'}: "
                f"dtype {self.dtype}, device {self.device}, tables {self.tables}, profile {self.profile}")
        if self.region is not None:
            head += "\njudged region (what the implementation accepts; draws stay inside):\n" + "\n".join(
                "  " + line for line in self.region.describe().splitlines())
        return head

    def _rows(self):
        return [{"concern": c.concern, "verdict": c.verdict.upper() if c.verdict == "fail" else c.verdict,
                 "judged": f"{c.judged}/{c.examples}", "min": c.min_judged, "failing": c.failing_examples,
                 "max error/budget": c.max_ratio, "why": c.reason}
                for c in self.concerns]

    def __str__(self):
        lines = [self._header(), "", markdown_table(self._rows(), floatfmt=".3g").rstrip()]
        for c in self.concerns:
            if c.verdict != "fail":
                continue
            lines += ["", f"--- {c.concern}: FAIL ({c.failing_examples} of {c.examples} examples) ---", c.detail]
            if c.likely_cause:
                lines.append(f"likely cause: {c.likely_cause}")
            if c.reproduce:
                lines += ["reproduce (paste into a file and run):", c.reproduce]
        lines += ["", "judged/examples: examples compared with the reference / examples run (canonical and drawn); "
                  "min: judged examples a pass needs"]
        lines += [f"INCOMPLETE: {r}" for r in self.incomplete_reasons()]
        lines += ["", self._summary()]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [f"# Conformance: {self.implementation or 'implementation'}", "", self._header(), "",
               markdown_table(self._rows(), floatfmt=".3g")]
        for c in self.concerns:
            if c.verdict == "fail":
                out += [f"## {c.concern}: fail", "", f"{c.failing_examples} of {c.examples} examples fail.", "",
                        "```", c.detail, "```", ""]
                if c.likely_cause:
                    out += [f"Likely cause: {c.likely_cause}", ""]
                if c.reproduce:
                    out += ["```python", c.reproduce, "```", ""]
        out += [f"- incomplete: {r}" for r in self.incomplete_reasons()]
        out += ["", f"**{self._summary()}**", ""]
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Per-case timeout
# ---------------------------------------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    """A case ran past ``timeout_s`` (a BaseException, so that the calls into the implementation, which catch
    Exception, do not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds):
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


# ---------------------------------------------------------------------------------------------------------------
# One example of one concern
# ---------------------------------------------------------------------------------------------------------------

class _Stop(Exception):
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
class _Finding:
    kind: str                   # "fail", "unsupported", "not_observable", "skip"
    message: str
    cause: Optional[str] = None
    worst: Optional[dict] = None
    timeout: bool = False


@dataclasses.dataclass
class _StepRec:
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


class _Run:
    """The settings of one conform() run, for one concern."""

    def __init__(self, factory, concern, *, dtype, device, tables, profile, timeout_s, impl, min_judged=None,
                 support=None):
        self.factory, self.concern, self.dtype, self.device = factory, concern, dtype, device
        self.support = support      # support.Support: the region draws stay in (None: no probe, draw anything)
        self.tables, self.profile, self.timeout_s, self.impl = tables, profile, timeout_s, impl
        self.min_judged = MIN_JUDGED[concern] if min_judged is None else min_judged
        self.dt = dtype_name(dtype)
        self.aborted = False
        self.refusals = {}          # config -> what the constructor refuses (concern config)

    def execute(self, case: Case, label) -> "_Example":
        ex = _Example(self, case, label)
        t0 = time.perf_counter()
        try:
            with quiet(), _time_limit(self.timeout_s):
                _CHECKS[self.concern](ex)
        except _Stop:
            pass
        except CaseTimeout as e:
            ex.findings.append(_Finding("fail", f"the implementation {e} on this case ({label})",
                                        cause="a call into the implementation hangs (or is slower than timeout_s)",
                                        timeout=True))
            self.aborted = True
        ex.seconds = time.perf_counter() - t0
        return ex


class _Example:
    def __init__(self, run: _Run, case: Case, label):
        self.run, self.case, self.label = run, case, label
        self.cfg = lst.build_config(case.config)
        self.findings: list[_Finding] = []
        self.values = 0
        self.unbounded = 0          # values admitted unjudged: their bound is infinite (budget point 9, §6.Q3)
        self.max_ratio = None       # largest error/budget of the values compared within a budget (None: none)
        self.judged = False
        self.seconds = 0.0

    @property
    def config_text(self) -> str:
        """The config as its spec (only the keys that differ from the default; trained betas as their seed)."""
        return "LCMConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.case.config.items()) + ")"

    # --- outcomes -----------------------------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return any(f.kind == "fail" for f in self.findings)

    def fail(self, message, *, cause=None, worst=None):
        self.findings.append(_Finding("fail", message, cause, worst))
        raise _Stop

    def unsupported(self, what):
        self.findings.append(_Finding("unsupported", what))
        raise _Stop

    def skip(self, why):
        self.findings.append(_Finding("skip", why))
        raise _Stop

    def not_observable(self, why):
        if not any(f.kind == "not_observable" and f.message == why for f in self.findings):
            self.findings.append(_Finding("not_observable", why))

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
        step's input its own previous prev_sample; returns one ``_StepRec`` per step made. Stops at an exception or
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
            rec = _StepRec(pos, idx, t, x, m, idx == n_eff - 1)
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

    def require_step(self, rec: _StepRec):
        """Fail (or, for a refusal of a keyword, declare unsupported) a step that raised or returned nothing
        usable."""
        where = f"step {rec.idx} (t={rec.t})"
        if rec.exc is not None:
            if refusal(rec.exc, keys=("generator",)):
                self.unsupported(f"step(model_output, timestep, sample, generator=...) refused: "
                                 f"{exception_text(rec.exc)}")
            self.fail(f"{where} raises {exception_text(rec.exc, frames=3)}\n  on a config and request the "
                      f"implementation accepted\n  config: {self.config_text}\n  request: "
                      f"{_request_text(self.case.request)}", cause="the implementation crashes in step",
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
        if c.ok:
            self.max_ratio = max(self.max_ratio or 0.0, c.max_ratio)
        if not c.ok:
            d = dtype_name(dtype)
            worst = {"where": f"{what}{where} element {c.index}", "got": c.got, "want": c.want,
                     "scaled_error": c.worst_scaled, "budget": c.worst_budget, "ratio": c.worst_ratio}
            msg = (f"{what}{where} differs from the reference beyond the budget\n"
                   f"{c.describe(d)}\n"
                   f"  config: {self.config_text}\n"
                   f"  request: {_request_text(self.case.request)}")
            self.fail(msg, cause=cause(c) if cause else None, worst=worst)
        return c

    def count(self, n=1):
        self.values += n
        self.judged = True


def _request_text(req) -> str:
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


# ---------------------------------------------------------------------------------------------------------------
# Likely causes: alternative formulas that explain a failing value
# ---------------------------------------------------------------------------------------------------------------

def _explains(got, alt, want, terms, bound, dtype) -> Optional[float]:
    """Is a cause confirmed? Its alternative formula ``alt``, evaluated on the failing case, must reproduce the
    implementation's value ``got`` by the oracle's own rule (compare.compare_values: within the budget ``bound``,
    the correctly rounded answer accepted), and must differ from ``want`` there, so that it tells the two apart.
    Returns how well (the largest error/budget against ``alt``: smaller is better), or None: not confirmed
    (docs/design.md §9.3)."""
    g, a = to_f64(got), to_f64(alt)
    if g.shape != a.shape:
        return None
    if compare_values(a, want, terms, bound, dtype).ok:
        return None
    c = compare_values(g, a, terms, bound, dtype)
    return c.max_ratio if c.ok else None


def _best_explanation(got, alternatives, want, terms, bound, dtype) -> Optional[str]:
    """The cause of the confirmed alternative that explains ``got`` best (``_explains``), or None."""
    scored = [(s, text) for text, alt in alternatives
              if (s := _explains(got, alt, want, terms, bound, dtype)) is not None]
    return min(scored)[1] if scored else None


def level_of(cfg, abar) -> str:
    """Where ᾱ lies in the config's table: "t ≈ 418.6" (log-σ interpolation between the neighbouring timesteps)."""
    table = np.asarray(ref.alphas_cumprod(cfg))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sigma = 0.5 * np.log((1 - table) / table)
        s = 0.5 * math.log((1 - abar) / abar) if 0 < abar < 1 else math.nan
    if not math.isfinite(s) or s < log_sigma[0] or s > log_sigma[-1]:
        return "outside the table"
    return f"t ≈ {float(np.interp(s, log_sigma, np.arange(len(table)))):.1f}"


def fitted_renoise_level(cfg, got, den, z, t_told):
    """(cause, alternative) of "the noise level used is not the level of the timestep the model is told": the ᾱ'
    that best explains prev = √ᾱ'·denoised + √(1 − ᾱ')·z (least squares over the elements for a = √ᾱ', b =
    √(1 − ᾱ'), then ᾱ' = a²/(a² + b²)), or None where the data cannot fix it (z or denoised all zero)."""
    g, D, Z = to_f64(got).ravel(), to_f64(den).ravel(), to_f64(z).ravel()
    A = np.stack([D, Z], axis=1)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(g))) or np.linalg.matrix_rank(A) < 2:
        return None
    (a, b), *_ = np.linalg.lstsq(A, g, rcond=None)
    if a <= 0 or b <= 0:
        return None
    abar = float(a * a / (a * a + b * b))
    alt = math.sqrt(abar) * to_f64(den) + math.sqrt(1 - abar) * to_f64(z)
    told = float(ref.alphas_cumprod(cfg)[t_told]) if t_told >= 0 else ref.final_alpha_cumprod(cfg)
    return (f"the noise level used is not the level of the timestep the model is told: re-noised to ᾱ = {abar:.6g} "
            f"({level_of(cfg, abar)}), while the schedule tells t = {t_told} (ᾱ = {told:.6g}); a σ schedule "
            f"interpolated off the timestep grid?"), alt


def fitted_denoise_level(cfg, rec, got):
    """(cause, alternative) of x0 taken at a noise level other than the timestep's (epsilon prediction): the ᾱ' that
    best explains denoised = c_out·(x − √(1 − ᾱ')·ε)/√ᾱ' + c_skip·x (least squares for p = 1/√ᾱ', q = √(1 − ᾱ')/√ᾱ'),
    or None."""
    if cfg.prediction_type != "epsilon" or cfg.clip_sample or cfg.thresholding:
        return None
    x, m = to_f64(rec.x).ravel(), to_f64(rec.m).ravel()
    c_skip, c_out = ref.boundary_scalings(cfg, rec.t)
    if c_out == 0:
        return None
    y = (to_f64(got).ravel() - c_skip * x) / c_out
    A = np.stack([x, -m], axis=1)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(y))) or np.linalg.matrix_rank(A) < 2:
        return None
    (p, q), *_ = np.linalg.lstsq(A, y, rcond=None)
    if p <= 0 or q <= 0:
        return None
    abar = float(1.0 / (1.0 + q * q))
    sa = math.sqrt(abar)
    alt = c_out * (to_f64(rec.x) - math.sqrt(1 - abar) * to_f64(rec.m)) / sa + c_skip * to_f64(rec.x)
    return (f"the noise level used is not the level of the timestep the model is told: x0 taken at ᾱ = {abar:.6g} "
            f"({level_of(cfg, abar)}), while the model is told t = {rec.t} "
            f"(ᾱ = {float(ref.alphas_cumprod(cfg)[rec.t]):.6g}); a σ schedule interpolated off the timestep grid?"), alt


def _denoised_alternatives(cfg, rec, dtype, got=None):
    """(cause, denoised) pairs of classic mistakes at this step's inputs (docs/design.md §9.5's mutant table)."""
    x, m, t = to_f64(rec.x), to_f64(rec.m), rec.t
    abar = float(ref.alphas_cumprod(cfg)[t])
    sa, s1a = math.sqrt(abar), math.sqrt(1 - abar)
    c_skip, c_out = ref.boundary_scalings(cfg, t)

    def x0_of(kind, mm):
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"epsilon": (x - s1a * mm) / sa, "sample": mm, "v_prediction": sa * x - s1a * mm}[kind]

    def post(x0):
        if cfg.thresholding:
            return ref.threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)[0]
        if cfg.clip_sample:
            return np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        return x0

    def scalings(s, sigma):
        u = t * s
        return sigma ** 2 / (u ** 2 + sigma ** 2), u / math.sqrt(u ** 2 + sigma ** 2)

    x0_raw = x0_of(cfg.prediction_type, m)
    x0 = post(x0_raw)
    out = []
    if cfg.clip_sample and not cfg.thresholding:
        out.append(("clip_sample clamps x0 to ±1 whatever clip_sample_range", c_out * np.clip(x0_raw, -1, 1)
                    + c_skip * x))
    if cfg.thresholding and x0_raw.ndim >= 2:
        flat = torch.from_numpy(np.abs(x0_raw.reshape(len(x0_raw), -1)))
        for method in ("nearest", "lower", "higher"):
            s = torch.quantile(flat, cfg.dynamic_thresholding_ratio, dim=1, interpolation=method).numpy()
            s = np.clip(s, 1.0, cfg.sample_max_value).reshape((-1,) + (1,) * (x0_raw.ndim - 1))
            out.append(("dynamic thresholding with a rank quantile (torch.quantile's 'nearest', 'lower' or "
                        "'higher') instead of linear interpolation", c_out * (np.clip(x0_raw, -s, s) / s) + c_skip * x))
    out += [("c_skip·x dropped from denoised (c_skip taken as 0)", c_out * x0),
           ("c_out taken as 1: denoised = x0 + c_skip·x", x0 + c_skip * x)]
    sk, so = scalings(cfg.timestep_scaling, 1.0)
    out.append(("σ_data = 1 in the boundary scalings instead of 0.5", so * x0 + sk * x))
    if not (cfg.clip_sample or cfg.thresholding) and 0 < abar < 1:
        out.append(("c_skip applied to the variance-exploding input x/√ᾱ (k-diffusion ports) instead of x",
                    c_out * x0 + c_skip * x / sa))
    fitted = fitted_denoise_level(cfg, rec, got) if got is not None else None
    if fitted is not None:
        out.append(fitted)
    sk, so = scalings(10.0, 0.5)
    out.append(("timestep_scaling ignored (always 10)", so * x0 + sk * x))
    if cfg.prediction_type == "v_prediction":
        out.append(("v-prediction's x0 with the wrong sign: √ᾱ·x + √(1−ᾱ)·v",
                    c_out * post(x0_of("v_prediction", -m)) + c_skip * x))
    if cfg.prediction_type == "epsilon":
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(("√ forgotten on 1 − ᾱ in epsilon's x0: (x − (1 − ᾱ)·ε)/√ᾱ",
                        c_out * post((x - (1 - abar) * m) / sa) + c_skip * x))
    return out


#: the likely cause of a fail that no known alternative formula reproduces (docs/design.md §9.3)
NO_KNOWN_PATTERN = "no known pattern (no alternative formula of the cause catalogue reproduces the values)"

#: the cause of a value that fails under tables="float64" and passes under the float32-table budget
FLOAT32_TABLES = ("within the float32-table budget, not the float64 one: float32 tables (ᾱ, c_skip, c_out) in a "
                  "float64 computation; --tables float32 allows them")


def _float32_tables_explain(ex, got, want, terms, bound32) -> bool:
    """Under tables="float64": is ``got`` within the float32-table budget ``bound32`` of ``want``?"""
    return ex.run.tables == "float64" and compare_values(got, want, terms, bound32, ex.run.dtype).ok


def _denoised_cause(ex, rec, ts, n_eff, want, terms, bound):
    def cause(c):
        got = rec.den if isinstance(rec.den, torch.Tensor) else rec.prev
        if ex.run.tables == "float64":
            bound32, _ = step_bound(ex.cfg, rec.m, rec.t, rec.x, None, schedule=ts, step_index=rec.idx,
                                    num_inference_steps=n_eff, dtype=ex.run.dtype, tables="float32")
            if _float32_tables_explain(ex, got, want, terms, bound32):
                return FLOAT32_TABLES
        return _best_explanation(got, _denoised_alternatives(ex.cfg, rec, ex.run.dtype, got), want, terms, bound,
                                 ex.run.dtype)
    return cause


# ---------------------------------------------------------------------------------------------------------------
# The concerns
# ---------------------------------------------------------------------------------------------------------------

def _check_config(ex: _Example):
    cfg = ex.cfg
    kwargs = cfg.to_dict()
    sched, exc = call(lambda: ex.run.factory(**kwargs))
    if exc is not None:
        if refusal(exc, keys=tuple(kwargs)):
            ex.unsupported(_refused_config(ex.run, cfg, exc))
        ex.fail(f"the constructor raises {exception_text(exc, frames=3)} for a valid config\n  config: "
                f"{ex.config_text}", cause="the constructor crashes")
    if sched is None or not (hasattr(sched, "set_timesteps") and hasattr(sched, "step")):
        ex.fail(f"the factory returns {type(sched).__name__}, not a scheduler (no set_timesteps/step)")
    conf = getattr(sched, "config", None)
    if conf is None:
        ex.not_observable("the scheduler exposes no config (only the constructor's acceptance is checked)")
        ex.count()
        return
    for key, asked in kwargs.items():
        value, exc = call(lambda: conf[key] if hasattr(conf, "__getitem__") else getattr(conf, key))
        if exc is not None:
            continue                                     # a key the config does not expose: nothing to compare
        if not _same_config_value(value, asked):
            ex.fail(f"config.{key} = {value!r}, asked {asked!r}\n  config: {ex.config_text}",
                    cause=f"the constructor overrides or ignores {key}")
        ex.count()


def _same_config_value(value, given) -> bool:
    if isinstance(given, (tuple, list)) or hasattr(value, "tolist"):
        v = value.tolist() if hasattr(value, "tolist") else value
        try:
            return [float(a) for a in v] == [float(b) for b in given]
        except TypeError:
            return False
    if isinstance(given, bool) or given is None or isinstance(given, str):
        return value == given
    try:
        return float(value) == float(given)
    except (TypeError, ValueError):
        return False


def _refused_config(run, cfg, exc) -> str:
    """Which key or value the constructor refuses: each key alone (at its default, then at the given value)."""
    defaults = LCMConfig().to_dict()
    if cfg in run.refusals:
        return run.refusals[cfg]
    refused = []
    _, exc0 = call(lambda: run.factory(**defaults))
    for k, v in cfg.to_dict().items():
        if exc0 is not None:
            _, e = call(lambda: run.factory(**{k: defaults[k]}))
            if e is not None and refusal(e, keys=(k,)):
                refused.append(f"config key {k!r}")
        elif v != defaults.get(k):
            _, e = call(lambda: run.factory(**dict(defaults, **{k: v})))
            if e is not None and refusal(e, keys=(k,)):
                refused.append(f"{k}={abbreviate(v)}")
    text = ("the constructor refuses " + (", ".join(refused) if refused else "this config")
            + f" ({exception_text(exc)})")
    run.refusals[cfg] = text
    return text


def _check_schedule(ex: _Example):
    """timesteps, original_inference_steps, strength, custom_timesteps: the integers and the exception class."""
    sched, req, kw, want, w_exc, g_exc = ex.schedule_both()
    call_text = _request_text(req)
    if g_exc is not None and refusal(g_exc, keys=tuple(kw)) and not (w_exc is not None
                                                                     and exceptions_match(w_exc, g_exc)):
        ex.unsupported(f"set_timesteps refuses a keyword ({', '.join(kw)}): {exception_text(g_exc)}")
    if w_exc is not None or g_exc is not None:
        _judge_exceptions(ex, call_text, w_exc, g_exc, sched)
        return
    got, problem = read_timesteps(getattr(sched, "timesteps", None))
    if problem is not None or not np.array_equal(got, want.timesteps):
        shown = problem if problem is not None else got.tolist()
        ex.fail(f"{call_text}: scheduler.timesteps = {shown}, want {want.timesteps.tolist()}\n"
                f"  config: {ex.config_text}",
                cause=_schedule_cause(ex, got, req), worst={"where": call_text, "got": str(shown),
                                                           "want": str(want.timesteps.tolist())})
    ex.count(len(want.timesteps))


def _judge_exceptions(ex, what, w_exc, g_exc, sched=None):
    """Exceptions must match by class (compare.exceptions_match); where the reference raises and the
    implementation does not, the fail says what it silently produced."""
    if w_exc is not None and g_exc is not None:
        if exceptions_match(w_exc, g_exc):
            ex.count()
            return
        need = (f" (expected: a ValueError whose message names {w_exc.parameter!r})"
                if hasattr(w_exc, "parameter") and ex.run.profile == "strict" else "")
        ex.fail(f"{what}: the reference raises {exception_text(w_exc)}, the implementation {exception_text(g_exc)}{need}"
                f"\n  config: {ex.config_text}", cause="raises a different exception class than diffusers",
                worst={"where": what, "got": type(g_exc).__name__, "want": type(w_exc).__name__})
    if w_exc is not None:
        produced = ""
        if sched is not None:
            got, _ = read_timesteps(getattr(sched, "timesteps", None))
            if got is not None:
                produced = f"; it silently produced timesteps {got.tolist()[:12]}"
        cause = "no ValueError where diffusers rejects the request (a missing argument check)"
        req = ex.case.request
        if (isinstance(w_exc, ValueError) and req.get("num_inference_steps") and req.get("timesteps") is None
                and "strength" in str(w_exc)):
            cause = "no ValueError when num_inference_steps > int(original_inference_steps·strength)"
        ex.fail(f"{what}: the reference raises {exception_text(w_exc)}, the implementation returns normally{produced}"
                f"\n  config: {ex.config_text}", cause=cause, worst={"where": what, "got": "returns normally",
                                                              "want": type(w_exc).__name__})
    ex.fail(f"{what}: the implementation raises {exception_text(g_exc)} on valid input\n  config: {ex.config_text}",
            worst={"where": what, "got": type(g_exc).__name__, "want": "returns normally"})


def _schedule_cause(ex, got, req):
    if got is None:
        return "scheduler.timesteps is not an integer tensor"
    cfg = ex.cfg
    T = cfg.num_train_timesteps
    orig = req.get("original_inference_steps") or cfg.original_inference_steps
    strength = 1.0 if req.get("strength") is None else req["strength"]
    n = req.get("num_inference_steps")
    if req.get("timesteps") is None and n:
        desc = (np.arange(1, int(orig * strength) + 1) * (T // orig) - 1)[::-1]
        if len(desc) // n >= 1 and np.array_equal(got, desc[:: len(desc) // n][:n]):
            return "selects origin[::-(L//n)][:n] (the authors' stride rule, diffusers 0.22–0.23) instead of " \
                   "floor(linspace(0, L, n, endpoint=False))"
        L = round(orig * strength)
        desc = (np.arange(1, L + 1) * (T // orig) - 1)[::-1]
        if L and np.array_equal(got, desc[np.floor(np.linspace(0, L, n, endpoint=False)).astype(int)]):
            return "round(original_inference_steps·strength) for the grid length instead of int(...)"
        if req.get("original_inference_steps"):
            cfg_orig = cfg.original_inference_steps
            desc = (np.arange(1, int(cfg_orig * strength) + 1) * (T // cfg_orig) - 1)[::-1]
            if len(desc) and np.array_equal(got, desc[np.floor(np.linspace(0, len(desc), n, endpoint=False)).astype(
                    int)]):
                return "the per-call original_inference_steps is ignored (the config's value is used)"
    return None


def _check_tables(ex: _Example):
    cfg, run = ex.cfg, ex.run
    sched = ex.build()
    T = cfg.num_train_timesteps
    seen = False
    abar = getattr(sched, "alphas_cumprod", None)
    if abar is not None:
        seen = True
        got = to_f64(abar, "alphas_cumprod").reshape(-1)
        want = np.asarray(ref.alphas_cumprod(cfg))
        if got.shape != want.shape:
            ex.fail(f"alphas_cumprod has {got.size} entries, want num_train_timesteps = {T}")
        storage = _storage_dtype(abar)
        # A float32-stored table under tables="float64" is diffusers' interface table (the drop-in keeps one for
        # compatibility); what a float64 port computes with is judged through c_skip/c_out below and the step
        # concerns. Any other storage is held to the requested table precision.
        tables = "float32" if (run.tables == "float64" and storage == "float32") else run.tables
        bound = alphas_cumprod_bound(cfg, tables)
        # judged in the table precision (not the storage dtype: a float16-stored table must not get float16's
        # rounding interval, docs/design.md §8.5)
        ex.compare("alphas_cumprod", got, want, want, bound, dtype=tables,
                   cause=lambda c: _table_cause(cfg, got, c, storage))
    fac = getattr(sched, "final_alpha_cumprod", None)
    if fac is not None:
        seen = True
        want = ref.final_alpha_cumprod(cfg)
        storage = _storage_dtype(fac)
        tables = "float32" if (run.tables == "float64" and storage == "float32") else run.tables
        bound = float(alphas_cumprod_bound(cfg, tables)[0]) if not cfg.set_alpha_to_one else 0.0
        ex.compare("final_alpha_cumprod", to_f64(fac).reshape(()), np.float64(want), abs(want), bound,
                   dtype=tables)
    fn = getattr(sched, "get_scalings_for_boundary_condition_discrete", None)
    if fn is not None:
        seen = True
        probes = sorted({t for t in (0, 1, 19, 259, T // 2 - 1, 499, 513, T - 20, T - 2, T - 1)
                         + tuple((ex.case.extra or {}).get("probes", ())) if 0 <= t < T})
        for t in probes:
            for arg, how in ((torch.tensor(t, dtype=torch.long), "tensor"), (t, "int")):
                out, exc = call(lambda: fn(arg))
                if exc is not None:
                    if refusal(exc):
                        ex.unsupported(f"get_scalings_for_boundary_condition_discrete({how}) refused: "
                                       f"{exception_text(exc)}")
                    ex.fail(f"get_scalings_for_boundary_condition_discrete({t} as {how}) raises {exception_text(exc)}")
                if not (isinstance(out, (tuple, list)) and len(out) == 2):
                    ex.fail(f"get_scalings_for_boundary_condition_discrete({t}) returns {type(out).__name__}, "
                            "want (c_skip, c_out)")
                want = ref.boundary_scalings(cfg, t)
                bounds = scalings_bound(cfg, t, run.tables)
                for name, g, w, b in zip(("c_skip", "c_out"), out, want, bounds):
                    g64 = to_f64(g).reshape(())
                    ex.compare(f"{name}({t}, timestep as {how})", g64, np.float64(w), abs(w), b, dtype=run.tables,
                               cause=lambda c, name=name, g=g: _scaling_cause(cfg, t, name, g, run.tables))
    if not seen:
        ex.not_observable("no alphas_cumprod, final_alpha_cumprod or get_scalings_for_boundary_condition_discrete")


def _storage_dtype(v):
    d = getattr(v, "dtype", None)
    try:
        return dtype_name(d) if d is not None else "float64"
    except LCMRefError:
        return "float64"


def _table_cause(cfg, got, c, storage):
    i = c.index[0] if c.index else 0
    if cfg.rescale_betas_zero_snr:
        plain = np.asarray(ref.alphas_cumprod(cfg.replace(rescale_betas_zero_snr=False)))
        if abs(got[i] - plain[i]) <= 1e-5 * abs(plain[i]):
            return "rescale_betas_zero_snr accepted but not applied"
    want = np.asarray(ref.alphas_cumprod(cfg))
    if got[i] == round_to(round_to(want[i], "float32"), "float16") or (
            abs(got[i] - want[i]) <= 2.0 ** -11 * abs(want[i]) and got[i] == round_to(got[i], "float16")):
        return "ᾱ stored in float16"
    cum = np.cumprod(1.0 - np.asarray(ref.betas(cfg), dtype=np.float64))
    if not cfg.rescale_betas_zero_snr and abs(got[i] - cum[i]) <= 4 * 2.0 ** -52 * abs(cum[i]):
        return ("ᾱ from a float64 cumprod: not correctly rounded (docs/design.md §2, point 3); --tables float32 "
                "allows it")
    if got[i] == round_to(got[i], "float32") and storage != "float32":
        return "float32 values in a float64 table (float32 tables); --tables float32 allows them"
    return None


def _scaling_cause(cfg, t, name, g, tables):
    k = 0 if name == "c_skip" else 1
    v = float(to_f64(g).reshape(()))
    for text, s, sigma in (("timestep_scaling ignored (always 10)", 10.0, 0.5),
                           ("σ_data = 1 in the boundary scalings instead of 0.5", cfg.timestep_scaling, 1.0)):
        u = t * s
        alt = (sigma ** 2 / (u ** 2 + sigma ** 2), u / math.sqrt(u ** 2 + sigma ** 2))[k]
        if abs(v - alt) <= 1e-5 * abs(alt) and alt != ref.boundary_scalings(cfg, t)[k]:
            return text
    if tables == "float64" and v == float(np.float32(v)):
        return ("c_skip/c_out computed in float32 (an int64 timestep tensor times a Python float is float32): "
                "float32 tables; --tables float32 allows them")
    return None


def _check_denoised(ex: _Example):
    """denoised and clip_threshold: each step's denoised, or the last step's prev_sample where no denoised is
    returned."""
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
        den = rec.den if isinstance(rec.den, torch.Tensor) else None
        if den is None and not rec.last:
            ex.not_observable("step returns no denoised: judged through the last step's prev_sample only")
            continue
        z = rec.z if rec.z is not None else rec.z_expected
        r = ex.reference_step(rec, ts, n_eff, None if rec.last else z)
        bound_den, _ = step_bound(ex.cfg, rec.m, rec.t, rec.x, None if rec.last else z, schedule=ts,
                                  step_index=rec.idx, num_inference_steps=n_eff, dtype=ex.run.dtype,
                                  tables=ex.run.tables)
        terms = ref.step_terms(ex.cfg, rec.m, rec.t, rec.x, schedule=ts, step_index=rec.idx,
                               num_inference_steps=n_eff).denoised
        got, what = (den, "denoised") if den is not None else (rec.prev, "prev_sample (= denoised, last step)")
        ex.compare(what, got, r.denoised, terms, bound_den, where=f" at step {rec.idx} (t={rec.t})",
                   cause=_denoised_cause(ex, rec, ts, n_eff, r.denoised, terms, bound_den))


def _check_prev_sample(ex: _Example):
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
        if rec.last:
            continue
        if rec.z is None:
            ex.not_observable("the noise drawn could not be captured (not drawn through torch's samplers): "
                              "the re-noising level is not observable (see concern noise)")
            continue
        t_prev = int(ts[rec.idx + 1]) if rec.idx + 1 < len(ts) else rec.t
        where = f" at step {rec.idx} (t={rec.t} -> {t_prev})"
        want, bound, terms, base = _renoise_reference(ex, rec, ts, n_eff, t_prev, rec.z)
        ex.compare("prev_sample", rec.prev, want, terms, bound, where=where,
                   cause=lambda cmp: _renoise_cause(ex, rec, ts, n_eff, t_prev, base, want, terms, bound))


def _renoise_reference(ex, rec, ts, n_eff, t_prev, z, note=True):
    """(want, bound, terms, denoised used) for a step's prev_sample given the z it drew.

    Where the step returns its denoised D, want = c·D + d·z (c = √ᾱ_prev, d = √(1 − ᾱ_prev) correctly rounded) and
    the bound is derived from D itself (budget.renoise_bound), so that an error of denoised is judged once, in
    concern denoised, and prev_sample judges the re-noising alone. Added: c·B_den, the denoised budget at the
    reference's inputs, for a port that forms prev from the inputs (fused coefficients) rather than from its rounded
    denoised: its prev then differs from c·D + d·z by at most c·|D − den_fused| ≤ c·B_den. A wrong level moves
    √ᾱ_prev by ≈ β/2 relative (≥ 10⁻⁴ for the schedules drawn): far outside. Without a denoised, want is the
    reference's whole step with its prev_sample budget (an error of denoised then shows here too)."""
    cfg = ex.cfg
    bound_den, bound_prev = step_bound(cfg, rec.m, rec.t, rec.x, z, schedule=ts, step_index=rec.idx,
                                       num_inference_steps=n_eff, dtype=ex.run.dtype, tables=ex.run.tables)
    den = rec.den if isinstance(rec.den, torch.Tensor) and tuple(rec.den.shape) == tuple(rec.x.shape) else None
    if den is not None:
        c, d = ref.noise_coefficients(cfg, t_prev)
        D, Z = to_f64(den), to_f64(z)
        with np.errstate(invalid="ignore", over="ignore"):
            terms = c * np.abs(D) + d * np.abs(Z)
            bound = renoise_bound(cfg, D, Z, t_prev, dtype=ex.run.dtype, tables=ex.run.tables) + c * bound_den
            return c * D + d * Z, bound, terms, D
    if note:
        ex.not_observable("step returns no denoised: prev_sample judged against the reference's whole step "
                          "(an error of denoised shows here too)")
    terms = ref.step_terms(cfg, rec.m, rec.t, rec.x, schedule=ts, noise=z, step_index=rec.idx,
                           num_inference_steps=n_eff).prev_sample
    r = ex.reference_step(rec, ts, n_eff, z)
    return r.prev_sample, bound_prev, terms, r.denoised


def _renoise_cause(ex, rec, ts, n_eff, t_prev, den, want, terms, bound):
    """The confirmed cause of a prev_sample that is not c·denoised + d·z at the scheduled level (``_explains``)."""
    cfg, z = ex.cfg, to_f64(rec.z)
    den = to_f64(den)
    T = cfg.num_train_timesteps
    if ex.run.tables == "float64":
        b_den, _ = step_bound(cfg, rec.m, rec.t, rec.x, rec.z, schedule=ts, step_index=rec.idx,
                              num_inference_steps=n_eff, dtype=ex.run.dtype, tables="float32")
        c, _ = ref.noise_coefficients(cfg, t_prev)
        b32 = renoise_bound(cfg, den, z, t_prev, dtype=ex.run.dtype, tables="float32") + c * b_den
        if _float32_tables_explain(ex, rec.prev, want, terms, b32):
            return FLOAT32_TABLES
    alts = []
    if t_prev >= 1:
        c, d = ref.noise_coefficients(cfg, t_prev - 1)
        alts.append(("re-noises to the wrong timestep (off-by-one prev_timestep? ᾱ[t_prev − 1])", c * den + d * z))
    if t_prev == 0:
        a = ref.final_alpha_cumprod(cfg)
        alts.append(("a previous timestep of 0 is treated as 'no previous timestep' (prev > 0 instead of prev >= 0): "
                     "ᾱ = final_alpha_cumprod", math.sqrt(a) * den + math.sqrt(1 - a) * z))
    c, _ = ref.noise_coefficients(cfg, t_prev)
    alts.append(("the noise is drawn but not added (prev = √ᾱ_prev·denoised)", c * den))
    if 0 <= rec.t < T:
        c, d = ref.noise_coefficients(cfg, rec.t)
        alts.append(("re-noises to the current timestep's level instead of the next scheduled one",
                     c * den + d * z))
    fitted = fitted_renoise_level(cfg, rec.prev, den, z, t_prev)
    if fitted is not None:
        alts.append(fitted)
    return _best_explanation(rec.prev, alts, want, terms, bound, ex.run.dtype)


def _check_final_step(ex: _Example):
    cfg = ex.cfg
    ts, n_eff, recs = ex.own_run()
    for rec in recs:
        ex.require_step(rec)
    last = [r for r in recs if r.last]
    if not last:
        ex.skip("the run does not reach the step the schedule marks last")
    rec = last[0]
    bound_den, _ = step_bound(cfg, rec.m, rec.t, rec.x, None, schedule=ts, step_index=rec.idx,
                              num_inference_steps=n_eff, dtype=ex.run.dtype, tables=ex.run.tables)
    terms = ref.step_terms(cfg, rec.m, rec.t, rec.x, schedule=ts, step_index=rec.idx,
                           num_inference_steps=n_eff).denoised
    den = rec.den if isinstance(rec.den, torch.Tensor) and tuple(rec.den.shape) == tuple(rec.x.shape) else None
    cause = lambda c: "adds noise on the last step (diffusers 0.22 and the authors' pipeline did)"  # noqa: E731
    where = f" at the last step {rec.idx} (t={rec.t})"
    if den is not None:
        # prev_sample must be the denoised it returns, up to the rounding a fused evaluation may differ by
        ex.compare("prev_sample", rec.prev, to_f64(den), terms, bound_den, where=where + ", against its denoised",
                   cause=cause)
    else:
        ex.not_observable("step returns no denoised: the last prev_sample is judged against the reference's "
                          "denoised")
        r = ex.reference_step(rec, ts, n_eff, None)
        ex.compare("prev_sample", rec.prev, r.denoised, terms, bound_den, where=where, cause=cause)


def _check_noise(ex: _Example):
    cfg = ex.cfg
    sched = ex.build()
    ts, n_eff = ex.own_schedule(sched)
    kind = (ex.case.extra or {}).get("generator", "single")
    recs = ex.run_steps(sched, ts, n_eff, generator=kind)
    gen_text = "a list of generators (one per batch element)" if kind == "list" else "a torch.Generator"
    for rec in recs:
        if rec.exc is not None and kind == "list" and refusal(rec.exc, keys=("generator",)):
            ex.unsupported(f"step(..., generator=[...]) with a list of generators refused: {exception_text(rec.exc)}")
        ex.require_step(rec)
        if rec.last:
            continue
        where = f"step {rec.idx} (t={rec.t}), {gen_text}"
        want = rec.z_expected
        if rec.z is not None:
            if rec.z.dtype != want.dtype:
                ex.fail(f"{where}: the noise is drawn in {dtype_name(rec.z.dtype)}, want the sample dtype "
                        f"{dtype_name(want.dtype)} (diffusers' randn_tensor(..., dtype=denoised.dtype))",
                        cause=f"draws the noise in {dtype_name(rec.z.dtype)} whatever the sample dtype "
                              "(diffusers 0.22 drew float32 for float16 latents)",
                        worst={"where": where, "got": dtype_name(rec.z.dtype), "want": dtype_name(want.dtype)})
            got = to_f64(rec.z)
            same = (got == to_f64(want)) | (np.isnan(got) & np.isnan(to_f64(want)))
            if not same.all():
                i = tuple(int(k) for k in np.argwhere(~same)[0])
                ex.fail(f"{where}: the noise drawn is not diffusers' randn_tensor stream for that generator\n"
                        f"  element {i}: got {float(got[i])!r}, want {float(to_f64(want)[i])!r}; "
                        f"{int((~same).sum())} of {same.size} elements differ",
                        cause="does not draw from the generator passed (or draws another stream, shape or "
                              "device than randn_tensor)",
                        worst={"where": where + f" element {i}", "got": float(got[i]),
                               "want": float(to_f64(want)[i])})
            ex.count(same.size)
            continue
        # Nothing captured: infer z from prev = c·denoised + d·z (the port draws outside torch's samplers).
        t_prev = int(ts[rec.idx + 1]) if rec.idx + 1 < len(ts) else rec.t
        c, d = ref.noise_coefficients(cfg, t_prev)
        if d == 0:
            ex.not_observable("no noise captured and √(1 − ᾱ_prev) = 0: z is not observable")
            continue
        _, bound, _, base = _renoise_reference(ex, rec, ts, n_eff, t_prev, want, note=False)
        z_inf = (to_f64(rec.prev) - c * base) / d
        # prev = c·base + d·z + (an error ≤ bound, _renoise_reference) ⇒ |z_inf − z| ≤ bound/d
        ex.compare(f"z inferred from prev_sample (nothing captured) at {where}", z_inf, to_f64(want),
                   np.abs(to_f64(want)), np.asarray(bound) / d, dtype="float64",
                   cause=lambda cmp: "does not draw from the generator passed (the noise is not diffusers' "
                                     "randn_tensor stream)")


def _check_dtype(ex: _Example):
    sched = ex.build()
    ts, n_eff = ex.own_schedule(sched)
    recs = ex.run_steps(sched, ts, n_eff)
    want = torch_dtype(ex.run.dtype)
    for rec in recs:
        ex.require_step(rec)
        for name, v in (("prev_sample", rec.prev), ("denoised", rec.den)):
            if v is None and name == "denoised":
                continue
            _require_like(ex, f"{name} at step {rec.idx} (t={rec.t})", v, rec.x, want)
    fw = ex.case.forward
    if fw:
        x0, noise = fw["x0"].make(ex.run.device), fw["noise"].make(ex.run.device)
        tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=ex.run.device)
        for name in ("add_noise", "get_velocity"):
            fn = getattr(sched, name, None)
            if fn is None:
                continue
            out, exc = call(lambda: fn(x0, noise, tt))
            if exc is None:
                _require_like(ex, name, out, x0, want)


def _require_like(ex, what, v, like, want_dtype):
    if not isinstance(v, torch.Tensor):
        ex.fail(f"{what} is a {type(v).__name__}, want a torch.Tensor")
    problems = []
    if v.dtype != want_dtype:
        problems.append(f"dtype {dtype_name(v.dtype) if v.is_floating_point() else v.dtype} (want "
                        f"{dtype_name(want_dtype)})")
    if tuple(v.shape) != tuple(like.shape):
        problems.append(f"shape {tuple(v.shape)} (want {tuple(like.shape)})")
    if v.device != like.device:
        problems.append(f"device {v.device} (want {like.device})")
    if problems:
        ex.fail(f"{what} has " + ", ".join(problems),
                cause=(f"returns {dtype_name(v.dtype)} for {dtype_name(want_dtype)} samples (computes in a promoted "
                       "dtype and does not cast back?)") if v.dtype != want_dtype and v.is_floating_point() else None,
                worst={"where": what, "got": str(v.dtype), "want": str(want_dtype)})
    ex.count()


def _check_forward(ex: _Example):
    name = ex.run.concern
    cfg, fw = ex.cfg, ex.case.forward
    sched = ex.build()
    fn = getattr(sched, name, None)
    if fn is None:
        ex.unsupported(f"no method {name}")
    x0, noise = fw["x0"].make(ex.run.device), fw["noise"].make(ex.run.device)
    tt = torch.tensor(fw["timesteps"], dtype=torch.long, device=ex.run.device)
    if name == "add_noise":
        want = ref.add_noise(cfg, x0, noise, fw["timesteps"])
        a, b = x0, noise
    else:       # get_velocity(sample=x0, noise, t) = √ᾱ·noise − √(1−ᾱ)·x0
        want = ref.get_velocity(cfg, x0, noise, fw["timesteps"])
        a, b = noise, x0
    got, exc = call(lambda: fn(x0, noise, tt))
    if exc is not None:
        if refusal(exc):
            ex.unsupported(f"{name}(x, noise, timesteps) refused: {exception_text(exc)}")
        ex.fail(f"{name} raises {exception_text(exc, frames=3)} on valid input (timesteps {fw['timesteps']})\n"
                f"  config: {ex.config_text}", cause=f"the implementation crashes in {name}",
                worst={"where": name, "got": type(exc).__name__, "want": "returns normally"})
    problem = tensor_problem(got, x0)
    if problem is not None:
        ex.fail(f"{name} returns {problem}")
    terms, bound = forward_bound(cfg, a, b, fw["timesteps"], dtype=ex.run.dtype, tables=ex.run.tables)

    def cause(c):
        if ex.run.tables == "float64":
            _, bound32 = forward_bound(cfg, a, b, fw["timesteps"], dtype=ex.run.dtype, tables="float32")
            if _float32_tables_explain(ex, got, want, terms, bound32):
                return FLOAT32_TABLES
        ts = np.asarray(fw["timesteps"])
        shape = (-1,) + (1,) * (x0.ndim - 1)
        abar = np.asarray(ref.alphas_cumprod(cfg))[ts].reshape(shape)
        if name == "add_noise":
            alts = [("ᾱ and 1 − ᾱ where √ᾱ and √(1 − ᾱ) belong", abar * to_f64(x0) + (1 - abar) * to_f64(noise))]
        else:
            alts = [("the sign of get_velocity is flipped: √(1−ᾱ)·x − √ᾱ·ε", -want)]
        return _best_explanation(got, alts, want, terms, bound, ex.run.dtype)

    ex.compare(name, got, want, terms, bound, where=f" (timesteps {fw['timesteps']})", cause=cause)


def _check_previous_timestep(ex: _Example):
    sched = ex.build()
    fn = getattr(sched, "previous_timestep", None)
    if fn is None:
        ex.unsupported("no method previous_timestep")
    _, exc = call(lambda: sched.set_timesteps(device=ex.run.device, **ex.set_timesteps_kwargs()))
    if exc is not None:
        ex.skip(f"set_timesteps raises {exception_text(exc)} (see the schedule concerns)")
    ts, problem = read_timesteps(getattr(sched, "timesteps", None), integral_floats=True)
    if problem is not None:
        ex.skip(f"scheduler.timesteps is {problem} (see concern timesteps)")
    for i, t in enumerate(ts.tolist()):
        want = ts[i + 1] if i + 1 < len(ts) else -1
        for arg, how in ((sched.timesteps[i], "tensor"), (t, "int")):
            got, exc = call(lambda: fn(arg))
            if exc is not None:
                if refusal(exc):
                    ex.unsupported(f"previous_timestep({how}) refused: {exception_text(exc)}")
                ex.fail(f"previous_timestep({t} as {how}) raises {exception_text(exc)}; schedule {ts.tolist()}")
            g, exc = call(lambda: int(got.item() if hasattr(got, "item") else got))
            if exc is not None or g != want:
                shown = got if exc is not None else g
                n = len(ts)
                T = ex.cfg.num_train_timesteps
                cause = ("returns t − T//n, diffusers' formula before 0.32 (docs/design.md §6.Q6)"
                         if exc is None and g == t - T // n else None)
                ex.fail(f"previous_timestep({t} as {how}) = {shown}, want {want} (schedule {ts.tolist()})",
                        cause=cause, worst={"where": f"previous_timestep({t})", "got": str(shown),
                                            "want": str(want)})
            ex.count()


def _check_errors(ex: _Example):
    """Bad requests: set_timesteps must raise the reference's class; under the strict profile the quirk inputs
    too, at set_timesteps or at the step that uses them (earlier is allowed, never later)."""
    sched, req, kw, want, w_exc, g_exc = ex.schedule_both()
    what = _request_text(req)
    if w_exc is not None or g_exc is not None:
        if w_exc is None and ex.run.profile == "strict":
            later = _strict_error_later(ex, want)
            if later is not None and exceptions_match(later, g_exc):
                ex.count()                  # refused early: allowed
                return
        if (w_exc is not None and g_exc is not None and not exceptions_match(w_exc, g_exc)
                and refusal(g_exc, keys=tuple(kw))):
            ex.unsupported(f"set_timesteps refuses a keyword ({', '.join(kw)}): {exception_text(g_exc)}")
        _judge_exceptions(ex, what, w_exc, g_exc, sched)
        return
    # set_timesteps accepted on both sides: a step may still be refused (quirk inputs, strict profile)
    ts = want.timesteps
    extra = int(req.get("extra_steps") or 0)
    x = ex.case.sample.make(ex.run.device)
    gen = ex.generators()
    idx = None
    for k in range(len(ts) + extra):
        pos = min(k, len(ts) - 1)
        t = int(ts[pos])
        t_arg = sched.timesteps[pos] if req.get("timestep_as", "tensor") == "tensor" and pos < len(sched.timesteps) \
            else t
        m = ex.case.model_output.make(ex.run.device, seed_offset=k)
        out, g_exc = call(lambda: sched.step(m, t_arg, x, generator=gen))
        _, w_exc = call(lambda: ref.step(ex.cfg, m, t, x, schedule=ts, noise=torch.zeros_like(m), step_index=idx,
                                         num_inference_steps=want.num_inference_steps, profile=ex.run.profile))
        if w_exc is not None or g_exc is not None:
            if w_exc is None:           # the implementation refuses a step the reference runs: not this concern's
                ex.skip(f"step {k} raises {exception_text(g_exc)} where the reference runs it (see the step concerns)")
            silent = ""
            if g_exc is None:
                prev, _ = step_outputs(out)
                if isinstance(prev, torch.Tensor) and not torch.isfinite(prev).all():
                    silent = " and its output holds NaN or inf"
            if g_exc is None:
                ex.fail(f"{what}, step {k} (t={t}): the reference raises {exception_text(w_exc)}, the implementation "
                        f"returns normally{silent}\n  config: {ex.config_text}",
                        cause="accepts input diffusers (or the strict profile) refuses: nothing may pass silently",
                        worst={"where": f"step {k}", "got": "returns normally", "want": type(w_exc).__name__})
            _judge_exceptions(ex, f"{what}, step {k} (t={t})", w_exc, g_exc)
            return
        idx = (ref.index_for_timestep(ts, t) if idx is None else idx) + 1
        prev, _ = step_outputs(out)
        if not isinstance(prev, torch.Tensor):
            ex.skip(f"step {k} returns {type(prev).__name__} (see the step concerns)")
        x = prev
    ex.count()


def _strict_error_later(ex, want):
    """The StrictError the strict reference raises at some step of this schedule (zero noise), or None: a strict
    implementation may refuse such a schedule at set_timesteps already."""
    ts, x = want.timesteps, ex.case.sample.make()
    for i in range(len(ts) + int(ex.case.request.get("extra_steps") or 0)):
        t = int(ts[min(i, len(ts) - 1)])
        try:
            ref.step(ex.cfg, ex.case.model_output.make(seed_offset=i), t, x, schedule=ts,
                     noise=np.zeros(tuple(x.shape)), step_index=i, num_inference_steps=want.num_inference_steps,
                     profile="strict")
        except LCMRefError as e:
            return e
        except Exception:  # noqa: BLE001 - another error: not an early strict refusal
            return None
    return None


def _plain_run(ex, sched, req, *, start=0, begin=False):
    """One run on ``sched`` after set_timesteps(req), from ``start`` (by set_begin_index or by the first step's
    lookup): [(prev, denoised)] cloned, or raises _RunFailed with what went wrong."""
    _, exc = call(lambda: sched.set_timesteps(device=ex.run.device, **ex.set_timesteps_kwargs(req)))
    if exc is not None:
        raise _RunFailed(f"set_timesteps raises {exception_text(exc)}")
    ts, problem = read_timesteps(getattr(sched, "timesteps", None), integral_floats=True)
    if problem is not None or not len(ts):
        raise _RunFailed(f"scheduler.timesteps is {problem or 'empty'}")
    if begin:
        _, exc = call(lambda: sched.set_begin_index(start))
        if exc is not None:
            raise _RunFailed(f"set_begin_index({start}) raises {exception_text(exc)}")
    x = ex.case.sample.make(ex.run.device)
    gen = ex.generators()
    outs = []
    with _seeded_global_rngs(ex.case.generator_seed):
        for pos in range(start, len(ts)):
            _plain_step(ex, sched, ts, pos, gen, x, outs)
            x = outs[-1][0]
    return ts, outs


@contextlib.contextmanager
def _seeded_global_rngs(s):
    """torch's and NumPy's global generators seeded with ``s`` inside, restored after: a port that ignores the
    generator passed (concern noise) still repeats itself, so that its object state can be judged."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        np.random.seed(s % 2 ** 32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _plain_step(ex, sched, ts, pos, gen, x, outs):
    """One step of ``_plain_run``: appends (prev, denoised), cloned; raises _RunFailed."""
    m = ex.case.model_output.make(ex.run.device, seed_offset=pos)
    out, exc = call(lambda: sched.step(m, sched.timesteps[pos], x, generator=gen))
    if exc is not None:
        raise _RunFailed(f"step {pos} raises {exception_text(exc)}")
    prev, den = step_outputs(out)
    if tensor_problem(prev, x) is not None:
        raise _RunFailed(f"step {pos} returns {tensor_problem(prev, x)}")
    outs.append((prev.detach().clone(), den.detach().clone() if isinstance(den, torch.Tensor) else None))


class _RunFailed(Exception):
    pass


def _same_outputs(a, b) -> Optional[str]:
    """None if two runs' outputs are identical (bit for bit, NaN equal to NaN), else where they first differ."""
    if len(a) != len(b):
        return f"{len(a)} steps against {len(b)}"
    for k, ((p1, d1), (p2, d2)) in enumerate(zip(a, b)):
        for name, u, v in (("prev_sample", p1, p2), ("denoised", d1, d2)):
            if u is None or v is None:
                continue
            if u.shape != v.shape or not torch.equal(torch.nan_to_num(u, nan=0.5), torch.nan_to_num(v, nan=0.5)) \
                    or not torch.equal(torch.isnan(u), torch.isnan(v)):
                return f"step {k}: {name} differs"
    return None


def _check_state(ex: _Example):
    """Object reuse: two fresh objects must agree (else runs are not reproducible, and reuse cannot be judged); a
    second run of the same request on one object, and a run of another request after set_timesteps, must equal
    the fresh objects' runs bit for bit; set_begin_index(k) must start where a lookup of timesteps[k] starts."""
    req_a = ex.case.request
    extra = ex.case.extra or {}
    req_b = extra.get("request_b") or req_a
    k = int(extra.get("begin", 0))
    cause = "set_timesteps does not reset the step index (or other per-run state): a second run continues the first"
    try:
        fresh_ts, fresh_a = _plain_run(ex, ex.build(), req_a)
        _, fresh_b = _plain_run(ex, ex.build(), req_b)
        sched = ex.build()
        _, again = _plain_run(ex, sched, req_a)
    except _RunFailed as e:
        ex.skip(f"a run on a fresh object fails ({e}): see the step concerns")
    if _same_outputs(again, fresh_a) is not None:
        ex.skip("two fresh objects give different runs for the same inputs and generator seed (see concern noise)")
    for label, req, want in (("a second full run on the same object", req_a, fresh_a),
                             ("a run of another request after set_timesteps on the same object", req_b, fresh_b)):
        try:
            _, got = _plain_run(ex, sched, req)
        except _RunFailed as e:
            ex.fail(f"{label}: {e} (a fresh object runs it)\n  config: {ex.config_text}\n"
                    f"  requests: {_request_text(req_a)}, then {_request_text(req)}", cause=cause)
        diff = _same_outputs(got, want)
        if diff is not None:
            ex.fail(f"{label} differs from the same run on a fresh object: {diff}\n  config: {ex.config_text}\n"
                    f"  requests: {_request_text(req_a)}, then {_request_text(req)}", cause=cause)
        ex.count()
    if not hasattr(sched, "set_begin_index"):
        ex.unsupported("no method set_begin_index (diffusers < 0.27)")
    k = min(k, len(fresh_ts) - 1)
    try:
        _, got = _plain_run(ex, sched, req_a, start=k, begin=True)
    except _RunFailed as e:
        ex.fail(f"set_begin_index({k}), then stepping from timesteps[{k}]: {e}\n  config: {ex.config_text}",
                cause="set_begin_index is not honoured")
    try:
        _, want = _plain_run(ex, ex.build(), req_a, start=k, begin=False)
    except _RunFailed as e:
        ex.skip(f"stepping from timesteps[{k}] on a fresh object fails ({e})")
    diff = _same_outputs(got, want)
    if diff is not None:
        ex.fail(f"set_begin_index({k}): the run differs from one that starts at timesteps[{k}] by lookup: {diff}",
                cause="set_begin_index is not honoured")
    _, exc = call(lambda: sched.set_timesteps(device=ex.run.device, **ex.set_timesteps_kwargs(req_a)))
    if exc is None and getattr(sched, "begin_index", None) is not None:
        ex.fail("set_timesteps does not clear the begin index set by set_begin_index",
                cause="set_timesteps does not reset begin_index")
    ex.count()


_MISSING = object()


def _check_interface(ex: _Example):
    """What diffusers' pipelines rely on besides the numbers: they call ``scale_model_input`` before every model call
    and feed its result to the U-Net (LCM's is the identity: a k-diffusion-style c_in = 1/√(σ² + 1) here changes
    what every pipeline's model sees), scale the initial latents by ``init_noise_sigma`` (1 for a VP scheduler),
    read ``order`` to count warm-up steps, unpack ``step(..., return_dict=False)`` as ``(prev_sample, denoised)``
    (the LCM pipelines decode ``denoised``) or read the output's fields, set ``set_begin_index`` and read
    ``step_index`` / ``begin_index`` (img2img, callbacks), and take ``len(scheduler)`` as num_train_timesteps."""
    cfg, dev = ex.cfg, ex.run.device
    T = cfg.num_train_timesteps
    sched = ex.build()
    n, exc = call(lambda: len(sched))
    if exc is not None or n != T:
        ex.fail(f"len(scheduler) is {exception_text(exc) if exc else n}, want num_train_timesteps = {T}",
                cause="__len__ missing or not num_train_timesteps",
                worst={"where": "len(scheduler)", "got": str(n), "want": str(T)})
    ex.count()
    for name, want, why in (("init_noise_sigma", 1.0, "pipelines scale the initial latents by it"),
                            ("order", 1, "pipelines count warm-up steps by it")):
        v = getattr(sched, name, _MISSING)
        got, exc = call(lambda: float(v)) if v is not _MISSING else (None, None)
        if got != want:
            shown = "missing" if v is _MISSING else repr(v)
            ex.fail(f"scheduler.{name} is {shown}, want {want} ({why})", cause=f"{name} is not LCM's {want}",
                    worst={"where": name, "got": shown, "want": repr(want)})
        ex.count()
    if not hasattr(sched, "set_begin_index") or not hasattr(sched, "step_index"):
        ex.unsupported("no step_index / set_begin_index (diffusers < 0.27)")
    ts, n_eff = ex.own_schedule(sched)
    if getattr(sched, "begin_index", _MISSING) is not None or sched.step_index is not None:
        ex.fail(f"after set_timesteps: step_index = {sched.step_index!r}, begin_index = "
                f"{getattr(sched, 'begin_index', 'missing')!r}, want None and None",
                cause="set_timesteps does not reset step_index / begin_index")
    gen = ex.generators()
    x = ex.case.sample.make(dev)
    first = None
    for pos in range(len(ts)):
        t_arg = sched.timesteps[pos]
        scale = getattr(sched, "scale_model_input", None)
        if scale is None:
            ex.fail("no scale_model_input: diffusers' pipelines call it before every model call",
                    cause="scale_model_input missing")
        y, exc = call(lambda: scale(x, t_arg))
        if exc is not None:
            ex.fail(f"scale_model_input(sample, t={int(ts[pos])}) raises {exception_text(exc, frames=3)}",
                    cause="the implementation crashes in scale_model_input")
        if not (isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype and torch.equal(y, x)):
            ratio = ""
            if isinstance(y, torch.Tensor) and y.shape == x.shape:
                r = to_f64(y) / np.where(to_f64(x) == 0, np.nan, to_f64(x))
                ratio = f" (got/sample ≈ {np.nanmedian(r):.6g})"
            ex.fail(f"scale_model_input(sample, t={int(ts[pos])}) changes the sample{ratio}; LCM's is the identity "
                    "and every pipeline feeds its result to the model", cause="a c_in input scaling "
                    "(k-diffusion's 1/√(σ² + 1)?) in scale_model_input", worst={"where": "scale_model_input"})
        m = ex.case.model_output.make(dev, seed_offset=pos)
        out, exc = call(lambda: sched.step(m, t_arg, x, generator=gen, return_dict=False))
        if exc is not None:
            if refusal(exc, keys=("return_dict",)):
                ex.fail(f"step(..., return_dict=False) is refused: {exception_text(exc)}; pipelines pass it",
                        cause="step takes no return_dict")
            ex.skip(f"step raises {exception_text(exc)} (see the step concerns)")
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(v, torch.Tensor) for v in out)):
            shown = type(out).__name__ + (f" of {len(out)}" if isinstance(out, tuple) else "")
            ex.fail(f"step(..., return_dict=False) returns a {shown}, want the tuple (prev_sample, denoised) that "
                    "the LCM pipelines unpack", cause="return_dict=False does not return (prev_sample, denoised)",
                    worst={"where": "step(return_dict=False)", "got": shown, "want": "tuple of 2 tensors"})
        first = out if first is None else first
        if sched.step_index != pos + 1:
            ex.fail(f"after the step at position {pos}: step_index = {sched.step_index!r}, want {pos + 1}",
                    cause="step_index does not count the steps taken")
        x = out[0]
        ex.count()
    sched2 = ex.build()
    ex.own_schedule(sched2)
    _, exc = call(lambda: sched2.set_begin_index(0))
    if exc is not None or sched2.begin_index != 0:
        ex.fail(f"set_begin_index(0) leaves begin_index = {getattr(sched2, 'begin_index', 'missing')!r}",
                cause="begin_index does not report set_begin_index")
    out, exc = call(lambda: sched2.step(ex.case.model_output.make(dev, seed_offset=0), sched2.timesteps[0],
                                        ex.case.sample.make(dev), generator=ex.generators()))
    if exc is not None:
        ex.skip(f"step raises {exception_text(exc)} (see the step concerns)")
    fields = [getattr(out, f, None) for f in ("prev_sample", "denoised")]
    if not all(isinstance(v, torch.Tensor) for v in fields):
        ex.fail(f"step(...) returns a {type(out).__name__} without tensor fields prev_sample and denoised "
                "(LCMSchedulerOutput)", cause="the output object lacks LCMSchedulerOutput's fields")
    if not all(torch.equal(a, b) for a, b in zip(fields, first)):
        ex.fail("step(...).prev_sample / .denoised differ from step(..., return_dict=False) on the same inputs and "
                "generator seed", cause="return_dict changes the result")
    ex.count()


_CHECKS: dict[str, Callable] = {
    "config": _check_config, "timesteps": _check_schedule, "original_inference_steps": _check_schedule,
    "strength": _check_schedule, "custom_timesteps": _check_schedule, "tables": _check_tables,
    "denoised": _check_denoised, "prev_sample": _check_prev_sample, "final_step": _check_final_step,
    "noise": _check_noise, "dtype": _check_dtype, "clip_threshold": _check_denoised, "add_noise": _check_forward,
    "get_velocity": _check_forward, "previous_timestep": _check_previous_timestep, "errors": _check_errors,
    "state": _check_state, "interface": _check_interface,
}


# ---------------------------------------------------------------------------------------------------------------
# What each concern draws
# ---------------------------------------------------------------------------------------------------------------

def draw_concern_case(data, concern: str, *, dtype=torch.float32, profile="diffusers", support=None) -> Case:
    """One ``Case`` for ``concern`` from hypothesis ``st.data()`` (labelled draws), inside the region ``support``
    (a ``support.Support``; None: anywhere)."""
    dt = dtype_name(dtype)
    post = {"denoised": "none", "prev_sample": "none", "final_step": "none", "noise": "none",
            "clip_threshold": "clip_threshold"}.get(concern)
    spec = data.draw(lst.config_specs(profile=profile, quirks=False, post=post), label="config")
    allow = None
    if support is not None:
        spec = support.project(data, spec)
        allow = support.allowed_requests()
    cfg = lst.build_config(spec)
    if concern in ("timesteps", "original_inference_steps", "strength", "custom_timesteps", "errors"):
        req = data.draw(lst.concern_requests(cfg, concern, profile=profile, allow=allow), label="request")
    else:
        req = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=False, errors=False, allow=allow),
                        label="request")
    shape = data.draw(lst.shapes(min_dims=3 if cfg.thresholding else 1), label="shape")
    sample = data.draw(lst.tensor_recipes(shape, dt), label="sample")
    model_output = data.draw(lst.tensor_recipes(shape, dt), label="model_output")
    gen_seed = data.draw(st.integers(0, 2 ** 31 - 1), label="generator seed")
    fw, extra = None, None
    if concern in ("add_noise", "get_velocity", "dtype"):
        fw = dict(x0=data.draw(lst.tensor_recipes(shape, dt), label="x0"),
                  noise=data.draw(lst.tensor_recipes(shape, dt, scales=st.just(1.0)), label="noise"),
                  timesteps=data.draw(lst.timestep_batches(cfg, shape[0]), label="forward timesteps"))
    if concern == "tables":
        T = cfg.num_train_timesteps
        extra = {"probes": data.draw(st.lists(st.integers(0, T - 1), max_size=3), label="probe timesteps")}
    elif concern == "noise":
        extra = {"generator": data.draw(st.sampled_from(["single", "single", "single", "list"]), label="generator")}
    elif concern == "state":
        req_b = data.draw(lst.schedule_requests(cfg, profile=profile, quirks=False, errors=False), label="request b")
        n = len(req["timesteps"]) if req.get("timesteps") is not None else req["num_inference_steps"]
        extra = {"request_b": req_b, "begin": data.draw(st.integers(0, max(n - 1, 0)), label="begin index")}
    return Case(spec, req, sample, model_output, gen_seed, fw, extra)


def _canonical_for(concern, dtype):
    """The canonical cases (check.CANONICAL: real configs, one feature each) that exercise ``concern``."""
    out = []
    for k, (comment, case) in enumerate(canonical_cases(dtype)):
        cfg, req = case.config, case.request
        clipped = cfg.get("clip_sample") or cfg.get("thresholding")
        error = req.get("num_inference_steps") == 30 and req.get("strength") == 0.5
        keep = {
            "config": True, "tables": True, "dtype": not error, "state": not error, "interface": not error,
            "timesteps": not error and req.get("timesteps") is None and req.get("strength") is None,
            "original_inference_steps": "original_inference_steps" in cfg,
            "strength": req.get("strength") is not None,
            "custom_timesteps": req.get("timesteps") is not None,
            "errors": error,
            "denoised": not error and not clipped, "prev_sample": not error and not clipped,
            "final_step": not error, "noise": not error and not clipped, "clip_threshold": bool(clipped),
            "add_noise": True, "get_velocity": True, "previous_timestep": not error,
        }[concern]
        if not keep:
            continue
        case = dataclasses.replace(case)
        if concern == "errors":
            case.request = dict(case.request, kind="error:n_gt_L")
        if concern == "noise":
            case.extra = {"generator": "single"}
        if concern == "state":
            case.extra = {"request_b": dict(case.request, num_inference_steps=1, timesteps=None, strength=None,
                                            start=0, begin_index=False) if req.get("timesteps") is None
                          else dict(case.request), "begin": 1 if len(req.get("timesteps") or [0, 0]) > 1 else 0}
        if concern == "tables":
            case.extra = {"probes": []}
        out.append((f"canonical {k}: {comment}", case))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Running a concern
# ---------------------------------------------------------------------------------------------------------------

class _Failing(Exception):
    def __init__(self, example):
        super().__init__("failing example")
        self.example = example


def _case_key(case: Case) -> str:
    return repr(case.to_dict())


def _run_concern(run: _Run, n_examples: int, *, shrink=True) -> ConcernResult:
    t0 = time.perf_counter()
    concern = run.concern
    examples = []       # all _Example outcomes (canonical and drawn)
    passing = set()
    outside = run.support.concern_refused(concern) if run.support is not None else None
    if outside is not None:
        return ConcernResult(concern, "unsupported", f"not run: {outside}", description=DESCRIPTIONS[concern],
                             min_judged=run.min_judged, reason=abbreviate(outside, 200), refused=[abbreviate(outside)])
    if run.support is not None and run.support.default is not None:
        why = f"not run: the default config is refused ({abbreviate(run.support.default, 200)})"
        return ConcernResult(concern, "inconclusive", why, description=DESCRIPTIONS[concern],
                             min_judged=run.min_judged, reason=why)
    for label, case in _canonical_for(concern, run.dtype):
        if run.aborted:
            break
        if run.support is not None and not run.support.contains(case.config, case.request):
            continue                    # a canonical config outside the region: not the implementation's
        ex = run.execute(case, label)
        examples.append(ex)
    drawn_failures = []
    seen = set()

    if n_examples > 0 and not run.aborted:
        @seed(hypothesis_seed(concern))
        @settings(max_examples=n_examples, derandomize=False, database=None, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck), phases=(Phase.generate,), report_multiple_bugs=False,
                  verbosity=Verbosity.quiet)
        @given(st.data())
        def generate(data):
            case = draw_concern_case(data, concern, dtype=run.dtype, profile=run.profile, support=run.support)
            key = _case_key(case)
            if run.aborted or key in seen:      # a case drawn again (other choices, same case): judged once
                return
            seen.add(key)
            ex = run.execute(case, f"example {len(examples) + 1}")
            examples.append(ex)
            if ex.failed:
                drawn_failures.append(ex)
            else:
                passing.add(key)

        generate()

    failing = [e for e in examples if e.failed]
    smallest = failing[0] if failing else None       # a canonical case (named) when one fails: it runs first
    canonical_failed = smallest is not None and smallest not in drawn_failures
    if drawn_failures and shrink and not run.aborted and not canonical_failed:
        smallest = _shrink(run, n_examples, passing) or drawn_failures[0]
    return _result(run, examples, smallest, time.perf_counter() - t0)


def _shrink(run: _Run, n_examples: int, passing: set):
    """The smallest failing case hypothesis finds from the same seed (``SHRINK_SECONDS`` at most: after that every
    new candidate counts as passing, so hypothesis settles on the smallest failure found so far)."""
    store = {}
    clock = {"deadline": None}

    @seed(hypothesis_seed(run.concern))
    @settings(max_examples=n_examples, derandomize=False, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
              report_multiple_bugs=False, verbosity=Verbosity.quiet)
    @given(st.data())
    def minimise(data):
        case = draw_concern_case(data, run.concern, dtype=run.dtype, profile=run.profile, support=run.support)
        key = _case_key(case)
        if key in store:
            raise _Failing(store[key])
        if key in passing or run.aborted:
            return
        if clock["deadline"] is not None and time.monotonic() > clock["deadline"]:
            return
        ex = run.execute(case, "shrunk example")
        if ex.failed and not any(f.timeout for f in ex.findings):
            if clock["deadline"] is None:
                clock["deadline"] = time.monotonic() + SHRINK_SECONDS
            store[key] = ex
            raise _Failing(ex)
        passing.add(key)

    try:
        minimise()
    except _Failing as f:
        return f.example
    except Exception:  # noqa: BLE001 - hypothesis' Flaky and the like: fall back to the first failure
        return None
    return None


def _result(run: _Run, examples, smallest, seconds) -> ConcernResult:
    """The verdict on one concern from its examples (docs/design.md §9.1): fail if any example fails; pass if at
    least ``run.min_judged`` examples were judged; else unsupported (nothing judged, the implementation refused what
    the concern needs), not_observable (nothing judged, it does not expose the quantity) or inconclusive (too few
    judged), each with the reason."""
    concern = run.concern
    failing = [e for e in examples if e.failed]
    findings = [f for e in examples for f in e.findings]
    judged = sum(e.judged and not e.failed for e in examples)
    values = sum(e.values for e in examples)
    ratios = [e.max_ratio for e in examples if e.max_ratio is not None]
    max_ratio = max(ratios) if ratios else None
    unsupported = _tally(f.message for f in findings if f.kind == "unsupported")
    unobservable = _tally(f.message for f in findings if f.kind == "not_observable")
    skipped = _tally(f.message for f in findings if f.kind == "skip")
    n = len(examples)
    canonical = sum(isinstance(e.label, str) and e.label.startswith("canonical") for e in examples)
    stats = f"{judged} of {n} examples judged ({canonical} canonical), {values} values compared"
    if max_ratio is not None and values:
        stats += f", max error/budget {max_ratio:.3g}"
    unbounded = sum(e.unbounded for e in examples)
    if unbounded:
        stats += (f"; {unbounded} values not bounded (an intermediate of diffusers' formula overflows the dtype, "
                  "docs/design.md §8.4): admitted")
    res = ConcernResult(concern, "pass", "", len(failing), description=DESCRIPTIONS[concern], examples=n,
                        judged=judged, min_judged=run.min_judged, values=values, max_ratio=max_ratio,
                        seconds=seconds, skipped={abbreviate(k): v for k, v in skipped.items()})
    if failing:
        ex = smallest or failing[0]
        f = next(f for f in ex.findings if f.kind == "fail")
        res.verdict = "fail"
        res.reason = f"{len(failing)} of {n} examples fail"
        res.detail = f"{f.message}\n[{len(failing)} of {n} examples fail; smallest failing case: {ex.label}]"
        res.likely_cause = f.cause or NO_KNOWN_PATTERN
        res.worst = f.worst
        res.case = ex.case.to_dict()
        res.reproduce = _reproduce(run, ex.case)
        return res
    not_judged = n - judged
    notes = []
    if unsupported:
        res.refused = [abbreviate(m) for m in unsupported]
        notes.append("refused: " + "; ".join(f"{abbreviate(m)} [{c}x]" for m, c in unsupported.items()))
    if unobservable:
        notes.append("not observable: " + "; ".join(f"{m} [{c}x]" for m, c in unobservable.items()))
    if skipped:
        notes.append("not judged: " + "; ".join(f"{abbreviate(m)} [{c}x]" for m, c in skipped.items()))
    if judged < run.min_judged:
        top = max([*unsupported.items(), *unobservable.items(), *skipped.items()], key=lambda kv: kv[1],
                  default=None)
        why = f"{judged} of {n} judged, {run.min_judged} needed"
        if top is not None:
            why += f"; {not_judged} not judged, most often: {abbreviate(top[0], 160)}"
        if judged == 0 and unsupported and not skipped:
            res.verdict = "unsupported"
        elif judged == 0 and unobservable and not skipped and not unsupported:
            res.verdict = "not_observable"
        else:
            res.verdict = "inconclusive"
        res.reason = why
    elif unobservable:
        res.reason = ""
    res.detail = "\n".join([stats] + notes)
    return res


def _tally(messages) -> dict:
    out = {}
    for m in messages:
        out[m] = out.get(m, 0) + 1
    return out


def _reproduce(run: _Run, case: Case) -> str:
    """A ``replay(...)`` call that pastes into a file and runs as it is."""
    literal = pprint.pformat(case.to_dict(), width=100, sort_dicts=False)
    literal = "\n".join("    " + line for line in literal.splitlines())
    head = "from lcm_ref.oracle.conform import replay\n\n"
    impl = repr(run.impl)
    if not run.impl:
        head += "factory = ...  # your scheduler class or factory: it has no importable module:attr name\n\n"
        impl = "factory"
    return (f"{head}replay(\n    {impl},\n    {run.concern!r},\n{literal},\n"
            f"    dtype={run.dt!r}, device={str(run.device)!r}, tables={run.tables!r}, profile={run.profile!r})")


# ---------------------------------------------------------------------------------------------------------------
# conform / replay
# ---------------------------------------------------------------------------------------------------------------

def _per_concern(value, names, default, what, allowed):
    """``value`` (None: ``default[c]``; an int for every concern; a dict per concern) as {concern: int}."""
    def ok(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if value is None:
        return {c: default[c] for c in names}
    if ok(value):
        return {c: value for c in names}
    if isinstance(value, dict) and all(k in CONCERNS and ok(v) for k, v in value.items()):
        return {c: value.get(c, default[c]) for c in names}
    raise LCMRefError(what, value, allowed)


def _validate(factory, dtype, tables, profile, concerns, examples, timeout_s, device="cpu"):
    if not callable(factory):
        raise LCMRefError("factory", factory, "a callable that builds a scheduler: factory(**config), e.g. "
                          "diffusers.LCMScheduler")
    torch_dtype(dtype)
    if tables not in TABLES:
        raise LCMRefError("tables", tables, f"one of {TABLES}")
    if profile not in ref.PROFILES:
        raise LCMRefError("profile", profile, f"one of {ref.PROFILES}")
    try:
        torch.empty(0, device=device)
    except Exception as e:  # noqa: BLE001 - torch's own message says why (no CUDA, a bad name, ...)
        raise LCMRefError("device", device, "an available torch device, e.g. cpu or cuda", detail=str(e)) from None
    concerns = list(CONCERNS) if concerns is None else ([c.strip() for c in concerns.split(",") if c.strip()]
                                                        if isinstance(concerns, str) else list(concerns))
    bad = [c for c in concerns if c not in CONCERNS]
    if bad or not concerns:
        raise LCMRefError("concerns", bad or concerns, f"a non-empty subset of {', '.join(CONCERNS)}")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise LCMRefError("timeout_s", timeout_s, "a number of seconds > 0, or None (no limit)")
    return [c for c in CONCERNS if c in concerns]


def _preflight(factory, name, timeout_s):
    """Does the factory build a scheduler at all? Usage errors (LCMRefError) say what is wrong."""
    what = name or getattr(factory, "__name__", repr(factory))
    try:
        with quiet(), _time_limit(timeout_s):
            obj, exc = call(lambda: factory(**LCMConfig().to_dict()))
            if exc is not None:
                obj, exc2 = call(lambda: factory())
                if exc2 is not None:
                    raise LCMRefError("factory", what, "a callable that builds a scheduler: factory(**config)",
                                      detail=f"factory(**default config) raises {exception_text(exc)}; factory() raises "
                                      f"{exception_text(exc2)}")
    except CaseTimeout:
        raise LCMRefError("factory", what, "a factory that returns", detail=f"building the scheduler timed out "
                          f"after {timeout_s} s") from None
    missing = [m for m in ("set_timesteps", "step") if not callable(getattr(obj, m, None))]
    if missing:
        raise LCMRefError("factory", what, "a factory that returns a scheduler with set_timesteps and step",
                          detail=f"it returns {type(obj).__name__}, which has no {' or '.join(missing)}")


def conform(factory: Callable, *, dtype="float32", device="cpu", examples=None, tables="float32",
            profile="diffusers", concerns=None, timeout_s: Optional[float] = DEFAULT_TIMEOUT_S,
            impl: Optional[str] = None, shrink: bool = True, min_judged=None) -> ConformanceReport:
    """Judge ``factory`` (``factory(**LCMConfig.to_dict())`` -> a scheduler with diffusers' ``LCMScheduler``
    interface, or a ``"module:attr"`` string) on each concern of ``CONCERNS`` (or the subset ``concerns``), each on
    its own; returns a ``ConformanceReport`` (``.ok``: no concern fails).

    ``dtype``: of the samples and model outputs; ``device``: torch device; ``examples``: hypothesis examples per
    concern (None: ``DEFAULT_EXAMPLES``; an int for every concern; a dict per concern), canonical cases run in
    addition; ``tables``: the table precision the budget allows (``budget.TABLES``, docs/design.md §8.5);
    ``profile``: "diffusers" or "strict" (docs/design.md §3); ``timeout_s``: per case (module docstring for its
    limits); ``impl``: the name reports and reproductions use (default: the factory's module:qualname);
    ``shrink``: let hypothesis shrink each failure (at most ``SHRINK_SECONDS``); ``min_judged``: judged examples a
    concern needs to pass (None: ``MIN_JUDGED``; an int for every concern; a dict per concern).

    Raises ``LCMRefError`` for bad arguments and for a factory that does not build a scheduler; anything the
    implementation does wrong is a verdict, never an exception."""
    if isinstance(factory, str):
        impl = factory if impl is None else impl
        factory = load_factory(factory)
    names = _validate(factory, dtype, tables, profile, concerns, examples, timeout_s, device)
    dtype = torch_dtype(dtype)
    name = impl if impl is not None else impl_path(factory)
    _preflight(factory, name, timeout_s)
    per = _per_concern(examples, names, DEFAULT_EXAMPLES, "examples",
                       "None (per-concern defaults), an integer >= 0 or a dict {concern: integer >= 0}")
    need = _per_concern(min_judged, names, MIN_JUDGED, "min_judged",
                        "None (per-concern defaults, MIN_JUDGED), an integer >= 0 or a dict {concern: integer >= 0}")
    report = ConformanceReport(name or "", dtype_name(dtype), str(device), tables, profile, per, timeout_s)
    t0 = time.perf_counter()
    report.region = probe(factory, refusal, device=device, dtype=dtype)
    for c in names:
        run = _Run(factory, c, dtype=dtype, device=device, tables=tables, profile=profile, timeout_s=timeout_s,
                   impl=name, min_judged=need[c], support=report.region)
        with source_independent_draws():
            report.concerns.append(_run_concern(run, per[c], shrink=shrink))
    report.seconds = time.perf_counter() - t0
    return report


def replay(factory, concern: str, case, *, dtype="float32", device="cpu", tables="float32", profile="diffusers",
           timeout_s: Optional[float] = DEFAULT_TIMEOUT_S) -> ConcernResult:
    """Rerun one case of one concern (as a fail's ``reproduce`` prints it): raises ``OracleMismatch`` if it fails,
    else returns the ``ConcernResult`` of that one case. ``factory`` may be a ``"module:attr"`` string."""
    impl = factory if isinstance(factory, str) else impl_path(factory)
    if isinstance(factory, str):
        factory = load_factory(factory)
    _validate(factory, dtype, tables, profile, [concern], None, timeout_s, device)
    case = case if isinstance(case, Case) else Case.from_dict(case)
    run = _Run(factory, concern, dtype=torch_dtype(dtype), device=device, tables=tables, profile=profile,
               timeout_s=timeout_s, impl=impl, min_judged=0)
    ex = run.execute(case, "replayed case")
    res = _result(run, [ex], ex if ex.failed else None, ex.seconds)
    if res.verdict == "fail":
        msg = f"{concern}: {res.detail}" + (f"\nlikely cause: {res.likely_cause}" if res.likely_cause else "")
        raise OracleMismatch(msg, quantity=concern, case=case, repro=res.reproduce)
    return res
