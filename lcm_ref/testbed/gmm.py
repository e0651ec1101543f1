"""Analytic testbed: Gaussian mixtures under LCM's VP forward process, with exact ground truth (docs/design.md §11).

Coordinates. For a config's ᾱ_t the forward process is x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. In y = x/√ᾱ and
s = √((1−ᾱ)/ᾱ) it is y = x_0 + s·ε: the data convolved with N(0, s²I). For a Gaussian mixture
p = Σ_k w_k N(μ_k, Σ_k) everything is closed form:

    p_s(y)   = Σ_k w_k N(y; μ_k, Σ_k + s²I)
    D(y; s)  = E[x_0 | y] = Σ_k r_k(y)[μ_k + Σ_k(Σ_k + s²I)⁻¹(y − μ_k)]      (r_k: posterior component weights)
    ε(y; s)  = E[ε | y]   = (y − D)/s = s·Σ_k r_k(y)(Σ_k + s²I)⁻¹(y − μ_k)

The probability-flow ODE is dy/d log s = y − D(y; s), i.e. dy/ds = ε(y; s) (DDIM is Euler's method on it). We
integrate the second form with ``scipy.integrate.solve_ivp`` (DOP853): ε is written as s·(…) so the right-hand side
is regular at s = 0 and the clean-data end point is reached without truncating the interval.

End points of the consistency function (``end=``):

- ``"data"``: s → 0. The output is the clean-data point the PF-ODE trajectory ends at.
- ``"boundary"``: LCM's discrete boundary at timestep 0 (s_0 = √((1−ᾱ_0)/ᾱ_0) ≈ 0.029 for the SD schedule). The
  output is x at timestep 0, √ᾱ_0·y(s_0): LCM's boundary condition f(x, 0) = x (c_skip(0) = 1, c_out(0) = 0) and its
  distillation target t = max(start − k, 0) make this what a distilled student learns (docs/design.md §11).
The two differ by s_0² ≈ 8.5e-4 in variance and per point by about (√(λ + s_0²) − √λ)/√λ standard deviations of a
component with variance λ (≈ 3e-3 on average for the analogs' data); ``lcm_ref.studies.analogs.endpoint`` measures it.

Guidance: with class labels c, ε̃ = (1 + ω)·ε(y; s | c) − ω·ε(y; s) (ω = 0: the class-conditional model; labels None:
the unconditional one), and the guided PF-ODE is dy/ds = ε̃.

Metrics: Fréchet distance (the FID formula on raw coordinates), sliced W2, exact W2 between Gaussians.
Baselines: diffusers' ``DDIMScheduler`` and ``DPMSolverMultistepScheduler`` (dpmsolver++, 2M) driven by the exact
denoiser. LCM sampling is ``lcm_ref.reference.sample`` with ``consistency_model`` (or a student) as the model.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.integrate

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError
from ..numerics import frechet_distance

__all__ = [
    "ENDS", "GaussianMixture", "make_mixture", "vp_coordinates", "end_noise_level",
    "denoiser", "denoiser_model", "to_model_output", "ode_map", "consistency_function", "consistency_model",
    "gaussian_ode_map", "gaussian_consistency_function",
    "frechet_distance", "gaussian_w2", "sliced_w2", "gaussian_sliced_w2", "projections",
    "ddim_sample", "dpmsolver_sample", "draw_noises",
]

ENDS = ("data", "boundary")


# ---------------------------------------------------------------------------------------------------------------
# The mixture
# ---------------------------------------------------------------------------------------------------------------

class GaussianMixture:
    """p(x) = Σ_k w_k N(μ_k, Σ_k) in d dims; component k belongs to class ``labels[k]`` (default: one class).

    All methods work in y-space (y = x_0 + s·ε) and take ``s`` as a scalar or one value per sample; ``labels`` (one
    class per sample, or None for the unconditional mixture) restricts the posterior to that class's components."""

    def __init__(self, weights, means, covs, labels=None):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        cov = np.asarray(covs, dtype=np.float64)
        if mu.ndim != 2 or len(mu) == 0:
            raise LCMRefError("means", mu.shape, "a (K, d) array with K >= 1")
        K, d = mu.shape
        if w.shape != (K,) or not (np.isfinite(w).all() and (w > 0).all()):
            raise LCMRefError("weights", w.tolist(), f"{K} positive finite weights")
        if cov.shape != (K, d, d) or not np.isfinite(cov).all() or not np.allclose(cov, cov.transpose(0, 2, 1)):
            raise LCMRefError("covs", cov.shape, f"{K} symmetric finite ({d}, {d}) matrices")
        lab = np.zeros(K, dtype=np.int64) if labels is None else np.asarray(labels)
        if lab.shape != (K,) or lab.dtype.kind not in "iu" or lab.min() < 0:
            raise LCMRefError("labels", np.asarray(labels).tolist(), f"{K} class indices >= 0")
        lam, U = np.linalg.eigh(cov)
        if (lam <= 0).any():
            raise LCMRefError("covs", f"eigenvalue {lam.min():.3g}", "positive definite matrices")
        self.weights, self.means, self.covs, self.labels = w / w.sum(), mu, cov, lab.astype(np.int64)
        self.eigvals, self.eigvecs = lam, U        # Σ_k = U_k diag(λ_k) U_kᵀ
        self.n_classes = int(lab.max()) + 1
        for arr in (self.weights, self.means, self.covs, self.labels, self.eigvals, self.eigvecs):
            arr.setflags(write=False)

    @property
    def d(self) -> int:
        return self.means.shape[1]

    def __repr__(self):
        return f"GaussianMixture(d={self.d}, components={len(self.weights)}, classes={self.n_classes})"

    # -- exact moments and sampling ------------------------------------------------------------------------------
    def class_weights(self) -> np.ndarray:
        """p(c) for c = 0..n_classes−1."""
        return np.bincount(self.labels, weights=self.weights, minlength=self.n_classes)

    def conditional(self, c: int) -> "GaussianMixture":
        """p(x | c): the components of class c, renormalised (labels kept, so the result has one class, c)."""
        keep = self.labels == c
        if not keep.any():
            raise LCMRefError("c", c, f"a class index in [0, {self.n_classes})")
        return GaussianMixture(self.weights[keep], self.means[keep], self.covs[keep], self.labels[keep])

    def mean(self) -> np.ndarray:
        """Exact mean Σ w_k μ_k."""
        return self.weights @ self.means

    def cov(self) -> np.ndarray:
        """Exact covariance Σ w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ."""
        m = self.mean()
        dev = self.means - m
        return np.einsum("k,kij->ij", self.weights, self.covs + dev[:, :, None] * dev[:, None, :])

    def standardized(self) -> "GaussianMixture":
        """The affine image x → C^(−1/2)(x − m) with exact mean 0 and covariance I (as latent diffusion scales its
        latents to unit variance), so that LCM's N(0, I) prior matches the forward marginal at t = T−1 in the first
        two moments."""
        lam, U = np.linalg.eigh(self.cov())
        A = (U / np.sqrt(lam)) @ U.T
        return GaussianMixture(self.weights, (self.means - self.mean()) @ A.T,
                               np.einsum("ij,kjl,ml->kim", A, self.covs, A), self.labels)

    def sample(self, n: int, rng: np.random.Generator, labels=None):
        """n draws from p (labels None) or from p(x | labels[i]); returns (x, component class labels)."""
        K = len(self.weights)
        if labels is None:
            comp = rng.choice(K, size=n, p=self.weights)
        else:
            labels = np.asarray(labels)
            comp = np.empty(n, dtype=np.int64)
            u = rng.random(n)
            for c in np.unique(labels):
                idx = np.flatnonzero(self.labels == c)
                cw = np.cumsum(self.weights[idx]) / self.weights[idx].sum()
                sel = labels == c
                comp[sel] = idx[np.minimum(np.searchsorted(cw, u[sel], side="right"), len(idx) - 1)]
        z = rng.standard_normal((n, self.d))
        # x = μ_k + U_k √λ_k z
        x = self.means[comp] + np.einsum("nij,nj->ni", self.eigvecs[comp], np.sqrt(self.eigvals[comp]) * z)
        return x, self.labels[comp]

    def sample_labels(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n class labels drawn from p(c)."""
        return rng.choice(self.n_classes, size=n, p=self.class_weights())

    # -- the exact denoiser in y-space --------------------------------------------------------------------------
    def _posterior(self, y, s, labels):
        """(r, z, var): posterior component weights r (N, K), eigen-coordinates z = U_kᵀ(y − μ_k) (N, K, d), and
        the variances λ_k + s² (N, K, d) of p_s's components along them."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.d:
            raise LCMRefError("y.shape", y.shape, f"(N, {self.d})")
        s2 = np.square(np.asarray(s, dtype=np.float64)).reshape(-1, 1, 1)
        z = np.einsum("nkd,kde->nke", y[:, None, :] - self.means[None], self.eigvecs)
        var = self.eigvals[None] + s2
        logp = np.log(self.weights)[None] - 0.5 * np.sum(z * z / var + np.log(var), axis=2)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1, 1)
            logp = np.where(self.labels[None] == labels, logp, -np.inf)
        logp -= logp.max(axis=1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=1, keepdims=True)
        return r, z, var

    def x0(self, y, s, labels=None) -> np.ndarray:
        """D(y; s) = E[x_0 | y] = Σ_k r_k [μ_k + Σ_k(Σ_k + s²I)⁻¹(y − μ_k)] (no cancellation at large s)."""
        r, z, var = self._posterior(y, s, labels)
        shrunk = np.einsum("kde,nke->nkd", self.eigvecs, self.eigvals[None] * z / var)
        return np.einsum("nk,nkd->nd", r, self.means[None] + shrunk)

    def eps(self, y, s, labels=None) -> np.ndarray:
        """ε(y; s) = E[ε | y] = s·Σ_k r_k (Σ_k + s²I)⁻¹(y − μ_k) = −s·∇ log p_s(y) (regular at s = 0)."""
        r, z, var = self._posterior(y, s, labels)
        g = np.einsum("nk,kde,nke->nd", r, self.eigvecs, z / var)
        return np.asarray(s, dtype=np.float64).reshape(-1, 1) * g

    def guided_eps(self, y, s, labels=None, omega=0.0) -> np.ndarray:
        """ε̃ = (1 + ω)·ε(y; s | c) − ω·ε(y; s): classifier-free guidance with scale ω (ω = 0: conditional)."""
        om = np.asarray(omega, dtype=np.float64)
        if labels is None or not om.any():
            return self.eps(y, s, labels)
        om = om.reshape(-1, 1)      # a scalar or one ω per sample
        return (1 + om) * self.eps(y, s, labels) - om * self.eps(y, s)

    def class_posterior(self, x) -> np.ndarray:
        """p(c | x) under the clean data distribution (N, n_classes): the Bayes classifier of the accuracy metric."""
        r, _, _ = self._posterior(x, 0.0, None)
        return np.stack([r[:, self.labels == c].sum(axis=1) for c in range(self.n_classes)], axis=1)


def make_mixture(d: int = 2, n_classes: int = 3, per_class: int = 2, seed: int = 0,
                 spread: float = 3.0, scale: float = 0.35) -> GaussianMixture:
    """A standardized class-conditional mixture: ``n_classes × per_class`` components, means drawn N(0, spread²I)
    (in d = 2: on a circle of radius ``spread``, jittered), random covariances with standard deviations in
    [scale/3, scale] along random axes, weights in [0.5, 1.5]. Deterministic in ``seed``."""
    if not (isinstance(d, numbers.Integral) and d >= 1):
        raise LCMRefError("d", d, "an integer >= 1")
    rng = np.random.default_rng(seed)
    K = n_classes * per_class
    if d == 2:
        ang = 2 * np.pi * (np.arange(K) + 0.25 * rng.random(K)) / K
        means = spread * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    else:
        means = spread * rng.standard_normal((K, d))
    covs = []
    for _ in range(K):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        sd = scale * rng.uniform(1 / 3, 1, size=d)
        covs.append((q * sd ** 2) @ q.T)
    labels = np.arange(K) % n_classes
    mix = GaussianMixture(rng.uniform(0.5, 1.5, size=K), means, np.array(covs), labels)
    return mix.standardized()


# ---------------------------------------------------------------------------------------------------------------
# VP process of an LCMConfig
# ---------------------------------------------------------------------------------------------------------------

def _timestep(cfg, timestep):
    T = cfg.num_train_timesteps
    if not (isinstance(timestep, numbers.Integral) and 0 <= timestep < T):
        raise LCMRefError("timestep", timestep, f"an integer in [0, num_train_timesteps={T})")
    return int(timestep)


def vp_coordinates(cfg: LCMConfig, timestep: int):
    """(√ᾱ_t, s_t) with s_t = √(1−ᾱ_t)/√ᾱ_t: x_t = √ᾱ_t·y, y = x_0 + s_t·ε."""
    t = _timestep(cfg, timestep)
    a, b = ref.sqrt_alphas_cumprod(cfg)[t], ref.sqrt_one_minus_alphas_cumprod(cfg)[t]
    if a == 0:
        raise LCMRefError("timestep", t, "a timestep with ᾱ > 0 (zero-SNR makes ᾱ[T-1] = 0: s is infinite)")
    return float(a), float(b / a)


def end_noise_level(cfg: LCMConfig, end: str) -> float:
    """s at the end point: 0 for ``"data"``, s_0 = √((1−ᾱ_0)/ᾱ_0) for ``"boundary"`` (timestep 0)."""
    if end not in ENDS:
        raise LCMRefError("end", end, f"one of {ENDS}")
    return 0.0 if end == "data" else vp_coordinates(cfg, 0)[1]


def to_model_output(cfg: LCMConfig, x0_pred, x, timestep, prediction_type=None) -> np.ndarray:
    """Convert an x_0 prediction at (x, timestep) to ``prediction_type`` (default ``cfg.prediction_type``):
    sample: x0; epsilon: (x − √ᾱ·x0)/√(1−ᾱ); v_prediction: (√ᾱ·x − x0)/√(1−ᾱ)."""
    t = _timestep(cfg, timestep)
    pt = cfg.prediction_type if prediction_type is None else prediction_type
    a, b = ref.sqrt_alphas_cumprod(cfg)[t], ref.sqrt_one_minus_alphas_cumprod(cfg)[t]
    if pt == "sample":
        return np.asarray(x0_pred, dtype=np.float64)
    if pt == "epsilon":
        return (x - a * x0_pred) / b
    if pt == "v_prediction":
        return (a * x - x0_pred) / b
    raise LCMRefError("prediction_type", pt, "one of 'epsilon', 'sample', 'v_prediction'")


def denoiser(mix: GaussianMixture, cfg: LCMConfig, x, timestep, *, prediction_type=None, labels=None,
             omega=0.0) -> np.ndarray:
    """The exact (Bayes-optimal) model output at (x, timestep) for ``prediction_type`` (default the config's):
    x0 = D(x/√ᾱ; s), ε = ε(x/√ᾱ; s), v = √ᾱ·ε − √(1−ᾱ)·x0. With ``labels`` and ``omega``: the guided ε̃ and the
    x0 consistent with it, x0 = (x − √(1−ᾱ)·ε̃)/√ᾱ."""
    a, s = vp_coordinates(cfg, timestep)
    b = float(ref.sqrt_one_minus_alphas_cumprod(cfg)[timestep])
    y = np.asarray(x, dtype=np.float64) / a
    pt = cfg.prediction_type if prediction_type is None else prediction_type
    if pt not in ("epsilon", "sample", "v_prediction"):
        raise LCMRefError("prediction_type", pt, "one of 'epsilon', 'sample', 'v_prediction'")
    if labels is not None and np.any(omega):
        eps = mix.guided_eps(y, s, labels, omega)
        x0 = y - s * eps
    else:
        eps = mix.eps(y, s, labels) if pt != "sample" else None
        x0 = mix.x0(y, s, labels) if pt != "epsilon" else None
    if pt == "epsilon":
        return eps
    if pt == "sample":
        return x0
    return a * eps - b * x0


def denoiser_model(mix: GaussianMixture, cfg: LCMConfig, *, labels=None, omega=0.0):
    """``model_fn(x, t)`` returning the exact denoiser's output for ``cfg.prediction_type``."""
    return lambda x, t: denoiser(mix, cfg, x, int(t), labels=labels, omega=omega)


# ---------------------------------------------------------------------------------------------------------------
# The exact consistency function
# ---------------------------------------------------------------------------------------------------------------

def ode_map(mix: GaussianMixture, y, s_from: float, s_to: float, *, labels=None, omega=0.0, rtol=1e-9,
            atol=1e-12, full_output=False):
    """Integrate the PF-ODE dy/ds = ε̃(y; s) (≡ dy/d log s = y − D) from s_from to s_to for all points at once
    (one stacked system, DOP853). solve_ivp controls the RMS over all N·d components of the local error relative
    to atol + rtol·|y|, so one point's local error is at most √(N·d) times that. ``full_output=True`` returns
    (y, the solve_ivp result) so that callers can bound the error by the number of steps taken."""
    y = np.asarray(y, dtype=np.float64)
    for name, v in (("s_from", s_from), ("s_to", s_to)):
        if not (isinstance(v, numbers.Real) and np.isfinite(v) and v >= 0):
            raise LCMRefError(name, v, "a finite float >= 0")
    if s_from == s_to:
        return (y.copy(), None) if full_output else y.copy()
    shape = y.shape

    def rhs(s, flat):
        return mix.guided_eps(flat.reshape(shape), s, labels, omega).ravel()

    sol = scipy.integrate.solve_ivp(rhs, (float(s_from), float(s_to)), y.ravel(), method="DOP853", rtol=rtol,
                                    atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed from s={s_from} to s={s_to}: {sol.message}")
    out = sol.y[:, -1].reshape(shape)
    return (out, sol) if full_output else out


def consistency_function(mix: GaussianMixture, cfg: LCMConfig, x, timestep, *, end="boundary", labels=None,
                         omega=0.0, rtol=1e-9, atol=1e-12) -> np.ndarray:
    """The exact consistency function: the end of the PF-ODE trajectory through x at ``timestep``, in x-space.

    ``end="data"``: the clean sample (s → 0). ``end="boundary"``: x at timestep 0, √ᾱ_0·y(s_0), the fixed point of
    LCM's boundary condition and what LCM distillation learns (module docstring)."""
    a, s = vp_coordinates(cfg, timestep)
    s_end = end_noise_level(cfg, end)
    y_end = ode_map(mix, np.asarray(x, dtype=np.float64) / a, s, s_end, labels=labels, omega=omega, rtol=rtol,
                    atol=atol)
    return y_end if end == "data" else float(ref.sqrt_alphas_cumprod(cfg)[0]) * y_end


def consistency_model(mix: GaussianMixture, cfg: LCMConfig, *, end="boundary", labels=None, omega=0.0, rtol=1e-9,
                      atol=1e-12):
    """``model_fn(x, t)`` for ``ref.sample``/``ref.step``: the exact consistency function, converted from x_0 to
    ``cfg.prediction_type`` (so that the step's x0_pred is the consistency function up to rounding)."""
    def model_fn(x, t):
        x0 = consistency_function(mix, cfg, x, int(t), end=end, labels=labels, omega=omega, rtol=rtol, atol=atol)
        return to_model_output(cfg, x0, x, int(t))
    return model_fn


def gaussian_ode_map(mean, cov, y, s_from: float, s_to: float) -> np.ndarray:
    """Closed-form PF-ODE map for one Gaussian N(mean, cov): y(s_to) = μ + (Σ + s_to²I)^½ (Σ + s_from²I)^(−½) (y − μ)
    (along each eigenvector of Σ the ODE dy/d log s = s²(y − μ)/(λ + s²) scales y − μ by √((λ + s²)/(λ + s_from²)))."""
    lam, U = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    factor = np.sqrt((lam + s_to ** 2) / (lam + s_from ** 2))
    return mean + ((np.asarray(y, dtype=np.float64) - mean) @ U) * factor @ U.T


def gaussian_consistency_function(mean, cov, cfg: LCMConfig, x, timestep, *, end="boundary") -> np.ndarray:
    """Closed form of ``consistency_function`` for a single Gaussian N(mean, cov) (same end points)."""
    a, s = vp_coordinates(cfg, timestep)
    y_end = gaussian_ode_map(mean, cov, np.asarray(x, dtype=np.float64) / a, s, end_noise_level(cfg, end))
    return y_end if end == "data" else float(ref.sqrt_alphas_cumprod(cfg)[0]) * y_end


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------

def gaussian_w2(mean1, cov1, mean2, cov2) -> float:
    """Exact 2-Wasserstein distance between N(mean1, cov1) and N(mean2, cov2) (not squared): the square root of
    ``frechet_distance`` on the two (mean, cov) pairs (the symmetric form with eigendecomposition square roots)."""
    return float(np.sqrt(max(frechet_distance((mean1, cov1), (mean2, cov2)), 0.0)))


def projections(d: int, n_projections: int = 128, seed: int = 0) -> np.ndarray:
    """Unit directions (n_projections, d) of the sliced W2: equally spaced half-circle angles in d = 2 (exact
    quadrature of the circle average for smooth integrands), uniform random ones (fixed seed) otherwise."""
    if d == 2:
        ang = np.pi * (np.arange(n_projections) + 0.5) / n_projections
        return np.stack([np.cos(ang), np.sin(ang)], axis=1)
    th = np.random.default_rng(seed).standard_normal((n_projections, d))
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def _w2sq_1d(a, b):
    """Exact W2² between the empirical distributions of the columns: ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du, per column."""
    a, b = np.sort(a, axis=0), np.sort(b, axis=0)
    n, m = len(a), len(b)
    u = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    w = np.diff(np.concatenate([[0.0], u]))
    mid = u - w / 2
    ia, ib = np.minimum((mid * n).astype(np.int64), n - 1), np.minimum((mid * m).astype(np.int64), m - 1)
    return w @ (a[ia] - b[ib]) ** 2


def sliced_w2(a, b, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (not squared): √(mean over directions θ of the exact
    1-D W2² between θ·a and θ·b); directions from ``projections``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise LCMRefError("a, b shapes", (a.shape, b.shape), "(N, d) and (M, d) arrays")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise LCMRefError("a, b", "non-finite values", "finite samples")
    th = projections(a.shape[1], n_projections, seed)
    return float(np.sqrt(np.mean(_w2sq_1d(a @ th.T, b @ th.T))))


def gaussian_sliced_w2(mean1, cov1, mean2, cov2, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced W2 between two Gaussians over the same directions: per direction θ the projections are 1-D Gaussians,
    W2² = (θ·Δμ)² + (√(θᵀΣ1θ) − √(θᵀΣ2θ))²."""
    m1, m2 = np.asarray(mean1, dtype=np.float64), np.asarray(mean2, dtype=np.float64)
    th = projections(len(m1), n_projections, seed)
    sd1 = np.sqrt(np.einsum("pi,ij,pj->p", th, np.atleast_2d(cov1), th))
    sd2 = np.sqrt(np.einsum("pi,ij,pj->p", th, np.atleast_2d(cov2), th))
    return float(np.sqrt(np.mean((th @ (m1 - m2)) ** 2 + (sd1 - sd2) ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# Baselines: diffusers' own DDIM and DPM-Solver++ (2M), driven by a model_fn (e.g. the exact denoiser)
# ---------------------------------------------------------------------------------------------------------------

def draw_noises(rng: np.random.Generator, n_steps: int, shape) -> list:
    """The ``n_steps − 1`` standard normal arrays that ``ref.sample`` injects between steps."""
    return [rng.standard_normal(shape) for _ in range(n_steps - 1)]


def _baseline_kwargs(cfg, spacing):
    """A DDIM/DPM config with the LCM config's ᾱ (as trained_betas: any beta schedule, zero-SNR included), its
    prediction type and steps_offset; the baselines end at clean data (set_alpha_to_one / final sigma 0)."""
    return dict(num_train_timesteps=cfg.num_train_timesteps, trained_betas=ref.betas(cfg).tolist(),
                prediction_type=cfg.prediction_type, steps_offset=cfg.steps_offset,
                timestep_spacing=spacing or cfg.timestep_spacing)


def _run(scheduler, model_fn, x_T, step):
    import torch
    x = torch.as_tensor(np.asarray(x_T, dtype=np.float64))
    for i, t in enumerate(scheduler.timesteps):
        m = torch.as_tensor(model_fn(x.numpy(), int(t)))
        x = step(i, int(t), m, x)
    return x.numpy()


def ddim_sample(cfg: LCMConfig, model_fn, x_T, num_inference_steps: int, *, timesteps=None,
                spacing=None) -> np.ndarray:
    """Deterministic DDIM (eta = 0) with diffusers' ``DDIMScheduler``.

    ``timesteps=None``: its own grid for ``spacing`` (default the config's ``timestep_spacing``, with
    ``steps_offset``); note that DDIMScheduler steps from t to t − T//n, which is the next grid point only when n
    divides T (trailing, n = 3: 999 → 666 → 333, though the grid's last point is 332).

    ``timesteps`` given (e.g. LCM's): DDIMScheduler cannot take a custom grid, so each step runs its own arithmetic
    with ``final_alpha_cumprod`` set to ᾱ of the next timestep (1.0 after the last): ``set_timesteps(1)`` makes
    every previous timestep negative, so the step reads it there."""
    import torch
    from diffusers import DDIMScheduler
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **_baseline_kwargs(cfg, spacing))
    if timesteps is None:
        sch.set_timesteps(num_inference_steps)
        return _run(sch, model_fn, x_T, lambda i, t, m, x: sch.step(m, t, x, eta=0.0).prev_sample)
    ts = [int(t) for t in timesteps]
    sch.set_timesteps(1)
    sch.timesteps = torch.tensor(ts, dtype=torch.int64)
    one = torch.tensor(1.0)

    def step(i, t, m, x):
        sch.final_alpha_cumprod = sch.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else one
        return sch.step(m, t, x, eta=0.0).prev_sample
    return _run(sch, model_fn, x_T, step)


def dpmsolver_sample(cfg: LCMConfig, model_fn, x_T, num_inference_steps: int, *, timesteps=None,
                     spacing=None) -> np.ndarray:
    """DPM-Solver++ 2M (``DPMSolverMultistepScheduler``, algorithm_type="dpmsolver++", solver_order=2, final sigma 0)
    on its own grid for ``spacing`` (default the config's) or on the given ``timesteps`` (e.g. LCM's)."""
    from diffusers import DPMSolverMultistepScheduler
    sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
                                      **_baseline_kwargs(cfg, spacing))
    if timesteps is None:
        sch.set_timesteps(num_inference_steps)
    else:
        sch.set_timesteps(timesteps=[int(t) for t in timesteps])
    return _run(sch, model_fn, x_T, lambda i, t, m, x: sch.step(m, t, x).prev_sample)
