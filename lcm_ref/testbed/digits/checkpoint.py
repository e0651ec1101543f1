"""Checkpoints: weights as ``safetensors`` with a JSON record beside them, and the resumable state of a run.

``save(path, model, record)`` writes ``path`` (``.safetensors``: the float32 state dict) and ``path`` with suffix
``.json``: ``record`` (the command and seed that made it, sizes, wall time, …) plus ``kind`` and ``config`` (what
rebuilds the module: the U-Net's diffusers config, or the classifier's arguments) and the SHA-256 of the weights.
``load(path)`` rebuilds the module, loads the weights (checking the hash) and returns (module in eval mode,
record). Both files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ...errors import LCMRefError
from ...numerics import write_atomic

__all__ = ["save", "load", "save_state", "load_state", "record_path"]


def record_path(path) -> Path:
    return Path(path).with_suffix(".json")


def _kind_and_config(model):
    from .classifier import DigitClassifier
    if isinstance(model, DigitClassifier):
        return "classifier", {"feature_dim": model.head.in_features, "n_classes": model.head.out_features}
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise LCMRefError("model", type(model).__name__, "a DigitClassifier or a diffusers UNet2DConditionModel")
    return "unet", {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if not k.startswith("_")}


def save(path, model, record: dict | None = None) -> Path:
    """Write ``model``'s weights to ``path`` (.safetensors) and its record to ``path.with_suffix('.json')``."""
    from safetensors.torch import save as st_save
    path = Path(path)
    if path.suffix != ".safetensors":
        raise LCMRefError("path", str(path), "a file name ending in .safetensors")
    kind, config = _kind_and_config(model)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    blob = st_save(tensors)
    write_atomic(path, blob)
    rec = {"kind": kind, "config": config, **(record or {}), "sha256": hashlib.sha256(blob).hexdigest(),
           "parameters": int(sum(t.numel() for t in tensors.values()))}
    write_atomic(record_path(path), (json.dumps(rec, indent=1, sort_keys=False) + "\n").encode())
    return path


def load(path, device="cpu"):
    """(module in eval mode, record) from ``path`` (.safetensors) and its JSON record."""
    from safetensors.torch import load as st_load
    path = Path(path)
    if not path.is_file() or not record_path(path).is_file():
        raise LCMRefError("path", str(path), "an existing .safetensors file with its .json record beside it")
    blob = path.read_bytes()
    rec = json.loads(record_path(path).read_text())
    if rec.get("sha256") and hashlib.sha256(blob).hexdigest() != rec["sha256"]:
        raise LCMRefError("path", str(path), "weights whose SHA-256 matches their record (the file changed)")
    if rec.get("kind") == "classifier":
        from .classifier import DigitClassifier
        model = DigitClassifier(**rec["config"])
    elif rec.get("kind") == "unet":
        from diffusers import UNet2DConditionModel
        model = UNet2DConditionModel.from_config(rec["config"])
    else:
        raise LCMRefError("kind", rec.get("kind"), "'classifier' or 'unet' in the record")
    model.load_state_dict(st_load(blob))
    return model.to(device).eval().requires_grad_(False), rec


def save_state(path, state: dict) -> Path:
    """``torch.save`` of a run's state, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_state(path):
    """The state saved by ``save_state``, or None when there is none."""
    path = Path(path)
    return torch.load(path, weights_only=False) if path.is_file() else None
