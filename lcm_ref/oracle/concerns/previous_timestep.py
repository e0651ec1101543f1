"""Concern ``previous_timestep``: the next scheduled timestep, -1 after the last (diffusers >= 0.32)."""

from __future__ import annotations

from ..compare import call
from ..example import Example, exception_text, read_timesteps, refusal


def check_previous_timestep(ex: Example):
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
