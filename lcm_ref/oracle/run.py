"""The conformance driver (docs/design.md §9.1): for each concern, the canonical cases inside the implementation's
region, then a hypothesis run from a seed fixed by the concern's name; each example judged on its own; the smallest
failure shrunk; the verdict from the tally (``judged`` against ``MIN_JUDGED``). ``conform`` runs every concern;
with ``fail_fast`` it stops at the first that fails (``check``)."""

from __future__ import annotations

import pprint
import time
from typing import Callable, Optional

import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError, quiet
from ..numerics import dtype_name, torch_dtype
from .budget import TABLES
from .cases import Case, canonical_for, draw_concern_case
from .compare import (abbreviate, call, hypothesis_seed, impl_path, implementation_info, load_factory,
                      source_independent_draws)
from .concerns import CHECKS, CONCERNS, DEFAULT_EXAMPLES, DEFAULT_TIMEOUT_S, DESCRIPTIONS, MIN_JUDGED, SHRINK_SECONDS
from .concerns.causes import NO_KNOWN_PATTERN
from .example import CaseTimeout, Example, Finding, Run, Stop, exception_text, refusal, time_limit
from .report import ConcernResult, ConformanceReport, OracleMismatch, error_text
from .support import probe

def execute(run: Run, case: Case, label) -> Example:
    """Run one case of ``run.concern``: the Example with its findings (a timeout aborts the rest of the concern)."""
    ex = Example(run, case, label)
    t0 = time.perf_counter()
    try:
        with quiet(), time_limit(run.timeout_s):
            CHECKS[run.concern](ex)
    except Stop:
        pass
    except CaseTimeout as e:
        ex.findings.append(Finding("fail", f"the implementation {e} on this case ({label})",
                                    cause="a call into the implementation hangs (or is slower than timeout_s)",
                                    timeout=True))
        run.aborted = True
    ex.seconds = time.perf_counter() - t0
    return ex


class _Failing(Exception):
    def __init__(self, example):
        super().__init__("failing example")
        self.example = example


def _case_key(case: Case) -> str:
    return repr(case.to_dict())


def _run_concern(run: Run, n_examples: int, *, shrink=True) -> ConcernResult:
    t0 = time.perf_counter()
    concern = run.concern
    examples = []       # all Example outcomes (canonical and drawn)
    passing = set()
    outside = run.support.concern_refused(concern) if run.support is not None else None
    if outside is not None:
        return ConcernResult(concern, "unsupported", f"not run: {outside}", description=DESCRIPTIONS[concern],
                             min_judged=run.min_judged, reason=abbreviate(outside, 200), refused=[abbreviate(outside)])
    if run.support is not None and run.support.default is not None:
        why = f"not run: the default config is refused ({abbreviate(run.support.default, 200)})"
        return ConcernResult(concern, "inconclusive", why, description=DESCRIPTIONS[concern],
                             min_judged=run.min_judged, reason=why)
    for label, case in canonical_for(concern, run.dtype):
        if run.aborted:
            break
        if run.support is not None and not run.support.contains(case.config, case.request):
            continue                    # a canonical config outside the region: not the implementation's
        ex = execute(run, case, label)
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
            ex = execute(run, case, f"example {len(examples) + 1}")
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


def _shrink(run: Run, n_examples: int, passing: set):
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
        ex = execute(run, case, "shrunk example")
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


def _result(run: Run, examples, smallest, seconds) -> ConcernResult:
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
    top = max((e for e in examples if e.max_error is not None), key=lambda e: e.max_ratio, default=None)
    unsupported = _tally(f.message for f in findings if f.kind == "unsupported")
    unobservable = _tally(f.message for f in findings if f.kind == "not_observable")
    skipped = _tally(f.message for f in findings if f.kind == "skip")
    n = len(examples)
    canonical = sum(isinstance(e.label, str) and e.label.startswith("canonical") for e in examples)
    stats = f"{judged} of {n} examples judged ({canonical} canonical), {values} values compared"
    if top is not None and values:
        stats += f", largest error {error_text(top.max_error, within=True)}"
    unbounded = sum(e.unbounded for e in examples)
    if unbounded:
        stats += (f"; {unbounded} values not bounded (an intermediate of diffusers' formula overflows the dtype, "
                  "docs/design.md §8.4): admitted")
    res = ConcernResult(concern, "pass", "", len(failing), description=DESCRIPTIONS[concern], examples=n,
                        canonical=canonical, drawn=n - canonical, judged=judged, min_judged=run.min_judged,
                        values=values, max_ratio=max_ratio, max_error=top.max_error if top is not None else None,
                        seconds=seconds, skipped={abbreviate(k): v for k, v in skipped.items()})
    if failing:
        ex = smallest or failing[0]
        f = next(f for f in ex.findings if f.kind == "fail")
        res.verdict = "fail"
        res.reason = f"{len(failing)} of {n} examples fail"
        res.detail = f"{f.message}\n[{len(failing)} of {n} examples fail; smallest failing case: {ex.description}]"
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
    res.detail = "\n".join([stats] + notes)
    return res


def _tally(messages) -> dict:
    out = {}
    for m in messages:
        out[m] = out.get(m, 0) + 1
    return out


def _reproduce(run: Run, case: Case) -> str:
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
        with quiet(), time_limit(timeout_s):
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
            impl: Optional[str] = None, shrink: bool = True, min_judged=None,
            fail_fast: bool = False) -> ConformanceReport:
    """Judge ``factory`` (``factory(**LCMConfig.to_dict())`` -> a scheduler with diffusers' ``LCMScheduler``
    interface, or a ``"module:attr"`` string) on each concern of ``CONCERNS`` (or the subset ``concerns``), each on
    its own; returns a ``ConformanceReport`` (``.ok``: no concern fails).

    ``dtype``: of the samples and model outputs; ``device``: torch device; ``examples``: hypothesis examples per
    concern (None: ``DEFAULT_EXAMPLES``; an int for every concern; a dict per concern), canonical cases run in
    addition; ``tables``: the table precision the budget allows (``budget.TABLES``, docs/design.md §8.5);
    ``profile``: "diffusers" or "strict" (docs/design.md §3); ``timeout_s``: per case (module docstring for its
    limits); ``impl``: the name reports and reproductions use (default: the factory's module:qualname);
    ``shrink``: let hypothesis shrink each failure (at most ``SHRINK_SECONDS``); ``min_judged``: judged examples a
    concern needs to pass (None: ``MIN_JUDGED``; an int for every concern; a dict per concern); ``fail_fast``: stop
    after the first concern that fails (``check``).

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
    report.implementation_info = implementation_info(factory)
    t0 = time.perf_counter()
    report.region = probe(factory, refusal, device=device, dtype=dtype, timeout_s=timeout_s)
    for c in names:
        run = Run(factory, c, dtype=dtype, device=device, tables=tables, profile=profile, timeout_s=timeout_s,
                   impl=name, min_judged=need[c], support=report.region)
        with source_independent_draws():
            report.concerns.append(_run_concern(run, per[c], shrink=shrink))
        if fail_fast and report.concerns[-1].verdict == "fail":
            break
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
    run = Run(factory, concern, dtype=torch_dtype(dtype), device=device, tables=tables, profile=profile,
               timeout_s=timeout_s, impl=impl, min_judged=0)
    ex = execute(run, case, "replayed case")
    res = _result(run, [ex], ex if ex.failed else None, ex.seconds)
    if res.verdict == "fail":
        msg = f"{concern}: {res.detail}" + (f"\nlikely cause: {res.likely_cause}" if res.likely_cause else "")
        raise OracleMismatch(msg, quantity=concern, case=case, repro=res.reproduce)
    return res


def check(factory: Callable, *, dtype="float32", device="cpu", examples=None, tables="float32", profile="diffusers",
          concerns=None, timeout_s: Optional[float] = DEFAULT_TIMEOUT_S, impl: Optional[str] = None,
          shrink: bool = True, min_judged=None) -> ConformanceReport:
    """conform's fail-fast mode, over the same concern code: the concerns in ``CONCERNS`` order, stopping at the first
    that fails, which raises ``OracleMismatch`` (its detail, likely cause and ``replay(...)`` reproduction). Returns
    the ``ConformanceReport`` when none fails: check ``report.ok`` (PASS) or ``report.status`` — INCOMPLETE when
    something could not be judged on enough examples. Arguments as ``conform``."""
    report = conform(factory, dtype=dtype, device=device, examples=examples, tables=tables, profile=profile,
                     concerns=concerns, timeout_s=timeout_s, impl=impl, shrink=shrink, min_judged=min_judged,
                     fail_fast=True)
    failed = next((c for c in report.concerns if c.verdict == "fail"), None)
    if failed is not None:
        cause = f"\nlikely cause: {failed.likely_cause}" if failed.likely_cause else ""
        raise OracleMismatch(f"{failed.concern} ({failed.description}): FAIL\n{failed.detail}{cause}\nreproduce:\n"
                             f"{failed.reproduce}", quantity=failed.concern, case=failed.case,
                             repro=failed.reproduce, result=failed)
    return report
