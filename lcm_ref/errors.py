"""Exception and warning classes of lcm_ref.

Every error lcm_ref raises for bad input names the parameter, the value it got and what is allowed, so that the
message alone says what to change.
"""

import contextlib
import logging
import warnings


class LCMRefError(ValueError):
    """Bad input: ``parameter`` got ``value``; ``allowed`` says what would be accepted."""

    def __init__(self, parameter, value, allowed, detail=""):
        self.parameter, self.value, self.allowed = parameter, value, allowed
        msg = f"{parameter}={value!r} is not allowed: {allowed}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ConfigError(LCMRefError):
    """An ``LCMConfig`` field has the wrong type or is out of range."""


class StrictError(LCMRefError):
    """Input that diffusers accepts but mishandles, refused by ``profile="strict"`` (docs/design.md §3, §6)."""


class LCMRefWarning(UserWarning):
    """Input that diffusers accepts with a warning (off-grid custom timesteps and the like)."""


@contextlib.contextmanager
def quiet():
    """Silence the off-grid notices of both sides: diffusers logs them (not warns), the reference warns
    (LCMRefWarning). For comparisons that feed such schedules on purpose."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LCMRefWarning)
            yield
    finally:
        logger.setLevel(level)
