"""Testbeds with known ground truth: a Gaussian mixture whose denoiser and consistency function are exact
(``gmm``, re-exported here), a tiny latent consistency distillation on it (``distill``), and a tiny random diffusers
pipeline (``tiny_pipeline``)."""

from .gmm import *  # noqa: F401,F403
from .gmm import __all__  # noqa: F401
