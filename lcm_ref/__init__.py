"""lcm_ref: the numerical ground truth for the Latent Consistency Model multistep scheduler."""

from .config import LCMConfig
from .errors import ConfigError, LCMRefError, LCMRefWarning, StrictError

__version__ = "0.1.0"
__all__ = ["LCMConfig", "ConfigError", "LCMRefError", "LCMRefWarning", "StrictError", "__version__"]
