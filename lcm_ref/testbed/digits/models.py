"""The committed networks by name, for anyone who wants to sample them: ``load(name)`` returns the diffusers
``UNet2DConditionModel`` (or the classifier) and its record.

Every U-Net record carries what a sampler needs besides the weights (``usage``): the noise schedule (the keys of
any diffusers scheduler), the guidance convention ε̃ = ε_u + (1 + ω)(ε_c − ε_u) (the paper's ω; diffusers'
``guidance_scale`` is 1 + ω), the null class of classifier-free guidance, and for a student ``time_cond_proj_dim``
and the guidance-embedding recipe (``LatentConsistencyModelPipeline.get_guidance_scale_embedding(ω,
embedding_dim=time_cond_proj_dim)`` gives the same features as ``lcd.guidance_embedding``), plus its role ("main"
for the main student of Table 1).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import LCMRefError
from . import checkpoint as ck
from .data import N_CLASSES, NULL_LABEL
from .teacher import SCHEDULE

__all__ = ["WEIGHTS", "WEIGHTS_ENV", "WEIGHT_FILES", "ROLES", "usage", "weights_folder", "load"]

WEIGHTS = Path(__file__).resolve().parent / "weights"       #: the committed safetensors + JSON records
#: the environment variable naming another weights folder (``lcm-ref report --weights`` sets it for the notebooks)
WEIGHTS_ENV = "LCM_REF_WEIGHTS"
#: name → file in ``WEIGHTS``
WEIGHT_FILES = {"classifier": "classifier.safetensors", "teacher": "teacher.safetensors",
                "student": "student_k20_ddim_s10.safetensors",
                "student_seed1": "student_k20_ddim_s10_seed1.safetensors",
                "student_s1": "student_k20_ddim_s1.safetensors",
                "student_s100": "student_k20_ddim_s100.safetensors"}
#: name → role written into the record
ROLES = {"classifier": "metric", "teacher": "teacher", "student": "main", "student_seed1": "main, training seed 1",
         "student_s1": "timestep_scaling",
         "student_s100": "timestep_scaling"}


def usage(role: str, time_cond_proj_dim: int | None = None) -> dict:
    """The sampling facts of a U-Net of ``role`` (module docstring), as stored in its record under ``usage``."""
    out = {"role": role, "schedule": dict(SCHEDULE), "classes": N_CLASSES, "null_class": NULL_LABEL,
           "guidance": {"convention": "eps = eps_u + (1 + omega) * (eps_c - eps_u)",
                        "omega": "the paper's omega; diffusers' guidance_scale = 1 + omega",
                        "class_labels": "UNet2DConditionModel(class_labels=...): 0-9 digits, "
                                        f"{NULL_LABEL} the null class"}}
    if time_cond_proj_dim is not None:
        out["time_cond_proj_dim"] = int(time_cond_proj_dim)
        out["embedding"] = {
            "recipe": "[sin(1000*omega*f_j), cos(1000*omega*f_j)], f_j = 10000**(-j/(dim/2 - 1)), j < dim/2",
            "input": "omega (= guidance_scale - 1), one value per sample",
            "diffusers": "LatentConsistencyModelPipeline.get_guidance_scale_embedding(omega, "
                         "embedding_dim=time_cond_proj_dim), passed as timestep_cond",
            "sampler": "LCMScheduler with the record's lcd.timestep_scaling and original_inference_steps = "
                       "lcd.num_ddim_timesteps"}
    return out


def weights_folder(weights=None) -> Path:
    """The weights folder to read: ``weights`` when given, else the folder in ``$LCM_REF_WEIGHTS`` when set (weights
    a user trained with ``lcm-ref paper train``), else the committed ``WEIGHTS``."""
    return Path(weights or os.environ.get(WEIGHTS_ENV) or WEIGHTS)


def load(name: str, device="cpu", weights=None):
    """(module in eval mode, record) of the committed network ``name`` (a key of ``WEIGHT_FILES``); the record
    with ``usage`` (module docstring) and the weights' ``sha256``. ``weights``: another folder (default
    ``weights_folder()``: ``$LCM_REF_WEIGHTS``, else ``WEIGHTS``)."""
    if name not in WEIGHT_FILES:
        raise LCMRefError("name", name, f"one of {tuple(WEIGHT_FILES)}")
    path = weights_folder(weights) / WEIGHT_FILES[name]
    if not path.is_file():
        raise LCMRefError("weights", str(path), "committed weights: run `lcm-ref paper train` to make them")
    model, rec = ck.load(path, device)
    if rec.get("kind") == "unet" and "usage" not in rec:        # records written before ``usage`` existed
        rec = {**rec, "usage": usage(ROLES[name], model.config.get("time_cond_proj_dim"))}
    return model, rec
