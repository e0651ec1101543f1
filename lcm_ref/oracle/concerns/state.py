"""Concern ``state``: object reuse — set_timesteps again replaces the schedule, a second run repeats the first,
set_begin_index is honoured."""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch

from ..compare import call, step_outputs
from ..example import Example, exception_text, read_timesteps, request_text, tensor_problem


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
    with seeded_global_rngs(ex.case.generator_seed):
        for pos in range(start, len(ts)):
            _plain_step(ex, sched, ts, pos, gen, x, outs)
            x = outs[-1][0]
    return ts, outs


@contextlib.contextmanager
def seeded_global_rngs(s):
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


def check_state(ex: Example):
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
                    f"  requests: {request_text(req_a)}, then {request_text(req)}", cause=cause)
        diff = _same_outputs(got, want)
        if diff is not None:
            ex.fail(f"{label} differs from the same run on a fresh object: {diff}\n  config: {ex.config_text}\n"
                    f"  requests: {request_text(req_a)}, then {request_text(req)}", cause=cause)
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
