"""Concern ``config``: the constructor accepts every drawn config key and value, and exposes the values given."""

from __future__ import annotations

from ...config import LCMConfig
from ..compare import abbreviate, call
from ..example import Example, exception_text, refusal


def check_config(ex: Example):
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
