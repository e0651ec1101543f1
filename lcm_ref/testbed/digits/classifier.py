"""The metric: a small CNN trained on the ``train`` split, its features and the statistics built on them.

- ``DigitClassifier``: conv(1→32) → conv(32→32) → 2×2 max-pool → flatten (512) → dropout → linear(512→64) → ReLU
  (the **features**, 64-d) → linear(64→10) (the logits). About 43k parameters.
- ``features`` / ``class_probability`` clip images to [−1, 1] first: a generated sample is judged as the picture
  a pipeline would save, not as the raw array (guided samplers overshoot the data range).
- ``frechet_distance(fa, fb)``: ``lcm_ref.numerics.frechet_distance`` (the project's one FID formula) on two feature
  sets.
- ``bootstrap_fd`` / ``bootstrap_mean``: 95 % bootstrap intervals (both feature sets resampled with replacement,
  fixed seed; the percentile interval shifted by the bootstrap bias estimate, see ``_interval``);
  ``bootstrap_fd_difference``: the interval of FD(a) − FD(b) against the same real set, the real set resampled
  once per replicate for both (so its own noise cancels in the difference).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import LCMRefError
from ...numerics import frechet_distance
from .data import N_CLASSES, Split

__all__ = ["DigitClassifier", "train_classifier", "features", "logits", "accuracy", "class_probability",
           "frechet_distance", "bootstrap_fd", "bootstrap_fd_difference", "bootstrap_mean", "one_thread",
           "FEATURE_DIM", "CLASSIFIER_SEED"]

FEATURE_DIM = 64
CLASSIFIER_SEED = 0
N_BOOT = 200            #: bootstrap replicates of every interval (percentile method, 95 %)


class DigitClassifier(torch.nn.Module):
    """The feature extractor and classifier (module docstring)."""

    def __init__(self, feature_dim: int = FEATURE_DIM, n_classes: int = N_CLASSES):
        super().__init__()
        c = torch.nn
        self.body = c.Sequential(
            c.Conv2d(1, 32, 3, padding=1), c.ReLU(), c.Conv2d(32, 32, 3, padding=1), c.ReLU(), c.MaxPool2d(2),
            c.Flatten(), c.Dropout(0.3), c.Linear(32 * 4 * 4, feature_dim), c.ReLU())
        self.head = c.Linear(feature_dim, n_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def _check_images(x, name="images"):
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise LCMRefError(name, getattr(x, "shape", type(x).__name__), "a torch tensor of shape (N, 1, 8, 8)")


def train_classifier(train: Split, *, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = CLASSIFIER_SEED, progress: bool = True, device="cpu") -> tuple:
    """Adam with cosine decay on cross-entropy, with ±1-pixel random shifts as augmentation. Deterministic for a
    seed on one machine. Returns (model in eval mode, per-epoch mean losses)."""
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not (isinstance(v, numbers.Integral) and v >= 1):
            raise LCMRefError(name, v, "an integer >= 1")
    _check_images(train.x, "train.x")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train.y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i / steps, 1.0))))
    losses = []
    model.train()
    for _ in tqdm(range(epochs), desc="classifier", disable=not progress, mininterval=1.0):
        perm = torch.randperm(len(train.y), generator=g)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x = train.x[idx]
            # random shift by up to one pixel (zero padding = background −1)
            dx, dy = (torch.randint(-1, 2, (2,), generator=g)).tolist()
            x = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)[:, :, 1 + dy:9 + dy, 1 + dx:9 + dx]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=g)))
                loss = torch.nn.functional.cross_entropy(model(x.to(device)), train.y[idx].to(device))
                opt.zero_grad()
                loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(perm))
    return model.eval(), losses


@torch.no_grad()
def _apply(fn, model, x, batch=2048):
    _check_images(x)
    dev = next(model.parameters()).device
    x = x.clamp(-1.0, 1.0)
    return torch.cat([fn(x[i:i + batch].to(dev, torch.float32)).cpu() for i in range(0, len(x), batch)])


def features(model: DigitClassifier, x) -> np.ndarray:
    """Penultimate-layer features (N, 64) as float64, of images clipped to [−1, 1]."""
    return _apply(model.eval().features, model, x).double().numpy()


def logits(model: DigitClassifier, x) -> torch.Tensor:
    return _apply(model.eval(), model, x)


def accuracy(model: DigitClassifier, split: Split) -> float:
    """Fraction of ``split`` classified correctly."""
    return float((logits(model, split.x).argmax(1) == split.y).double().mean())


def class_probability(model: DigitClassifier, x, labels) -> np.ndarray:
    """The classifier's probability of the requested class, per image (float64): the class score."""
    labels = torch.as_tensor(labels)
    if labels.shape != (len(x),):
        raise LCMRefError("labels", tuple(labels.shape), f"one label per image, shape ({len(x)},)")
    p = torch.softmax(logits(model, x).double(), dim=1)
    return p[torch.arange(len(x)), labels.long()].numpy()


def _interval(reps, estimate, level=0.95):
    """Percentile interval of the bootstrap replicates, shifted by the bootstrap estimate of the bias
    (mean(reps) − estimate). Resampling with replacement duplicates points, which by itself raises an FD (the
    Gaussians fitted to a resample are narrower in effective sample size): unshifted, the interval of a real-vs-real
    FD would not even contain its own estimate."""
    reps = np.asarray(reps, dtype=np.float64)
    a, bias = (1 - level) / 2, float(np.mean(reps) - estimate)
    return float(np.quantile(reps, a) - bias), float(np.quantile(reps, 1 - a) - bias)


def one_thread():
    """BLAS limited to one thread: 64×64 eigendecompositions are faster single-threaded, and the machine is shared."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:         # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib
        return contextlib.nullcontext()


def _check_boot(n_boot):
    if not (isinstance(n_boot, numbers.Integral) and n_boot >= 10):
        raise LCMRefError("n_boot", n_boot, "an integer >= 10")


def bootstrap_fd(fa, fb, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """FD(fa, fb) with a 95 % percentile bootstrap interval (both sets resampled): {fd, lo, hi}."""
    _check_boot(n_boot)
    fa, fb = np.asarray(fa), np.asarray(fb)
    rng = np.random.default_rng(seed)
    with one_thread():
        fd = frechet_distance(fa, fb)
        reps = [frechet_distance(fa[rng.integers(0, len(fa), len(fa))], fb[rng.integers(0, len(fb), len(fb))])
                for _ in range(n_boot)]
    lo, hi = _interval(reps, fd)
    return {"fd": fd, "lo": lo, "hi": hi}


def bootstrap_fd_difference(fa, fb, freal, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """FD(fa, real) − FD(fb, real) with a 95 % percentile bootstrap interval; each replicate resamples fa, fb and
    the real set, the same real resample serving both terms. {diff, lo, hi}."""
    _check_boot(n_boot)
    fa, fb, freal = np.asarray(fa), np.asarray(fb), np.asarray(freal)
    rng = np.random.default_rng(seed)
    reps = []
    with one_thread():
        diff = frechet_distance(fa, freal) - frechet_distance(fb, freal)
        for _ in range(n_boot):
            r = freal[rng.integers(0, len(freal), len(freal))]
            reps.append(frechet_distance(fa[rng.integers(0, len(fa), len(fa))], r)
                        - frechet_distance(fb[rng.integers(0, len(fb), len(fb))], r))
    lo, hi = _interval(reps, diff)
    return {"diff": diff, "lo": lo, "hi": hi}


def bootstrap_mean(v, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean of ``v`` with a 95 % percentile bootstrap interval: {mean, lo, hi}."""
    _check_boot(n_boot)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or len(v) < 1:
        raise LCMRefError("v", getattr(v, "shape", None), "a non-empty 1-d array")
    rng = np.random.default_rng(seed)
    reps = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(n_boot)]
    lo, hi = _interval(reps, float(v.mean()))
    return {"mean": float(v.mean()), "lo": lo, "hi": hi}
