"""Exception and warning classes of lcm_ref.

Every error lcm_ref raises for bad input names the parameter, the value it got and what is allowed, so that the
message alone says what to change.
"""


class LCMRefError(ValueError):
    """Bad input: ``parameter`` got ``value``; ``allowed`` says what would be accepted."""

    def __init__(self, parameter, value, allowed, detail=""):
        self.parameter, self.value, self.allowed = parameter, value, allowed
        msg = f"{parameter}={value!r} is not allowed: {allowed}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ConfigError(LCMRefError):
    """An ``LCMConfig`` field has the wrong type or is out of range."""


class StrictError(LCMRefError):
    """Input that diffusers accepts but mishandles, refused by ``profile="strict"`` (DESIGN §2, §3)."""


class LCMRefWarning(UserWarning):
    """Input that diffusers accepts with a warning (off-grid custom timesteps and the like)."""
