"""The data: scikit-learn's bundled 8×8 handwritten digits (``sklearn.datasets.load_digits``: 1,797 images with
integer intensities 0…16, 10 classes; shipped with scikit-learn, nothing is downloaded), scaled to [−1, 1] by
x = v/8 − 1.

The split is fixed and stratified: within each class the images are permuted with ``numpy.random.default_rng(
SPLIT_SEED)`` and the first half (rounded down) goes to ``train``, the rest to ``test``. ``train`` (896 images)
trains the classifier, the teacher and the students; ``test`` (901 images) is never trained on and is the real
reference of every metric; ``train`` against ``test`` is the real-vs-real floor.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from ...errors import LCMRefError

__all__ = ["N_CLASSES", "NULL_LABEL", "SIZE", "SPLIT_SEED", "SPLITS", "Split", "load", "to_unit"]

N_CLASSES = 10          #: digits 0…9
NULL_LABEL = 10         #: the "no class" label of classifier-free guidance (the class embedding has 11 rows)
SIZE = 8                #: images are 1×8×8
SPLIT_SEED = 0
SPLITS = ("train", "test", "all")


class Split(NamedTuple):
    x: torch.Tensor         #: (N, 1, 8, 8) float32 in [−1, 1]
    y: torch.Tensor         #: (N,) int64 class labels 0…9


@lru_cache(maxsize=None)
def _arrays():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:     # pragma: no cover - scikit-learn is a dependency
        raise ImportError("lcm_ref.testbed.digits needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    x = (d.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    train = np.zeros(len(y), dtype=bool)
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        train[idx[: len(idx) // 2]] = True
    return x, y, train


def load(split: str = "train") -> Split:
    """The images and labels of ``split`` ("train", "test" or "all"), in the dataset's order (copies)."""
    if split not in SPLITS:
        raise LCMRefError("split", split, f"one of {SPLITS}")
    x, y, train = _arrays()
    keep = {"train": train, "test": ~train, "all": np.ones_like(train)}[split]
    return Split(torch.from_numpy(x[keep].copy()), torch.from_numpy(y[keep].copy()))


def to_unit(images) -> np.ndarray:
    """Images in [−1, 1] (any float array or tensor, (…, 1, 8, 8) or (…, 8, 8)) as float64 in [0, 1], clipped:
    what a pipeline does when it turns a sample into a picture."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip((a.astype(np.float64) + 1.0) / 2.0, 0.0, 1.0)
