"""Tests of the analytic testbed (lcm_ref.testbed): exact denoiser, exact consistency function, metrics, baselines.

Every tolerance is derived beside it: statistical ones from a standard error (5 SE: two-sided normal tail 5.7e-7
per comparison), numerical ones from a forward error bound γ_n·Σ|terms| (γ_n = n·eps/(1 − n·eps)) or from the ODE
solver's error control.
"""

import numpy as np
import pytest
import scipy.stats

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError
from lcm_ref import testbed as tb
from lcm_ref import numerics

EPS = numerics.eps("float64")
CFG = LCMConfig()


def gamma(n):
    return n * EPS / (1 - n * EPS)


@pytest.fixture(scope="module")
def mix():
    return tb.make_mixture(d=2)


# ---------------------------------------------------------------------------------------------------------------
# The mixture and its exact denoiser
# ---------------------------------------------------------------------------------------------------------------

def test_make_mixture_is_standardized(mix):
    """The analogs' data has mean 0 and covariance I exactly (up to rounding), so N(0, I) is LCM's right prior."""
    # mean/cov are sums of K = 6 terms of size ≤ ~3 (means) and ≤ ~10 (second moments): γ_16·10 is generous
    assert np.abs(mix.mean()).max() <= gamma(16) * 10
    assert np.abs(mix.cov() - np.eye(2)).max() <= gamma(16) * 10


def test_sample_matches_exact_moments(mix):
    """mixture.sample draws from p: sample mean within 5 SE (SE = √(Σ_ii/N)) of the exact mean, per coordinate."""
    x, labels = mix.sample(100_000, np.random.default_rng(0))
    se = np.sqrt(np.diag(mix.cov()) / len(x))
    assert np.all(np.abs(x.mean(axis=0) - mix.mean()) <= 5 * se)
    # class frequencies: binomial SE √(p(1−p)/N)
    p = mix.class_weights()
    freq = np.bincount(labels, minlength=mix.n_classes) / len(x)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(x)))


@pytest.mark.parametrize("s", [0.3, 1.0, 3.0])
def test_denoiser_matches_monte_carlo_posterior_mean(mix, s):
    """The exact D(y; s) and ε(y; s) equal the posterior means E[x0 | y], E[ε | y] estimated by self-normalised
    importance sampling from p (weights N(y; x_i, s²I)), within 5 standard errors (delta-method SE)."""
    rng = np.random.default_rng(1)
    x0, _ = mix.sample(400_000, rng)
    y_pts = mix.sample(6, rng)[0] + s * rng.standard_normal((6, 2))
    D, eps = mix.x0(y_pts, s), mix.eps(y_pts, s)
    for y, d_exact, e_exact in zip(y_pts, D, eps):
        logw = -np.sum((x0 - y) ** 2, axis=1) / (2 * s * s)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        assert 1 / np.sum(w ** 2) > 1000          # effective sample size: the normal approximation of the SE holds
        d_hat = w @ x0
        se = np.sqrt(w ** 2 @ (x0 - d_hat) ** 2)  # Var(Σ w_i x_i / Σ w_i) ≈ Σ w̄_i² (x_i − D̂)²
        assert np.all(np.abs(d_exact - d_hat) <= 5 * se), (y, d_exact, d_hat, se)
        # ε = (y − x0)/s, so its estimate and SE are those of D divided by s
        assert np.all(np.abs(e_exact - (y - d_hat) / s) <= 5 * se / s)


def test_prediction_types_are_consistent(mix):
    """The denoiser's x0, ε and v outputs are one posterior mean: √ᾱ·x0 + √(1−ᾱ)·ε = x (rounding only) and
    v = ref.get_velocity(x0, ε) (the reference's formula)."""
    rng = np.random.default_rng(2)
    for t in (0, 259, 759, 999):
        x = ref.add_noise(CFG, mix.sample(200, rng)[0], rng.standard_normal((200, 2)), t)
        x0 = tb.denoiser(mix, CFG, x, t, prediction_type="sample")
        eps = tb.denoiser(mix, CFG, x, t, prediction_type="epsilon")
        v = tb.denoiser(mix, CFG, x, t, prediction_type="v_prediction")
        np.testing.assert_array_equal(v, ref.get_velocity(CFG, x0, eps, t))
        # x0 + s·ε = Σ_k r_k (μ_k + U_k z_k) = y exactly; computed, x0 and s·ε each carry ≤ γ_n·Σ|terms| with
        # n = 2d + K + 10 operations in the longest chain, and Σ|terms| ≤ 2·max|μ_k| + |y| (x0) resp.
        # max|μ_k| + |y| (s·ε) per row in the 2-norm (|λ/(λ+s²)|, |s²/(λ+s²)| ≤ 1, U_k orthogonal). add_noise
        # scales by √ᾱ and adds 3 roundings of |x|.
        a, s = tb.vp_coordinates(CFG, t)
        y = np.linalg.norm(x / a, axis=1)
        mu = np.linalg.norm(mix.means, axis=1).max()
        bound = a * gamma(2 * 2 + len(mix.weights) + 10) * (3 * mu + 2 * y) + 3 * EPS * np.linalg.norm(x, axis=1)
        err = np.linalg.norm(ref.add_noise(CFG, x0, eps, t) - x, axis=1)
        assert np.all(err <= bound), (t, (err / bound).max())


def test_guidance_is_the_cfg_combination(mix):
    """guided_eps = (1 + ω)·ε_c − ω·ε_u: ω = 0 gives the class-conditional ε (that of mixture.conditional(c)),
    ω = −1 the unconditional one, and it is affine in ω."""
    rng = np.random.default_rng(3)
    y, s = rng.standard_normal((50, 2)) * 2, 0.7
    labels = np.arange(50) % mix.n_classes
    eps_c = np.stack([mix.conditional(int(c)).eps(y[i:i + 1], s)[0] for i, c in enumerate(labels)])
    # mix.eps restricted to class c and conditional(c).eps are the same sum over the same components with
    # renormalised weights: γ_n·(max|μ| + |y|) per row as in test_prediction_types_are_consistent
    mu = np.linalg.norm(mix.means, axis=1).max()
    bound = gamma(20) * (mu + np.linalg.norm(y, axis=1, keepdims=True))
    assert np.all(np.abs(mix.guided_eps(y, s, labels, 0.0) - eps_c) <= bound)
    np.testing.assert_array_equal(mix.guided_eps(y, s, labels, -1.0), mix.eps(y, s))
    g0, g1, g2 = (mix.guided_eps(y, s, labels, w) for w in (0.0, 1.0, 2.0))
    # second difference of an affine function is 0; each value carries ≤ 3 roundings of (1+ω)|ε_c| + ω|ε_u|
    scale = 3 * np.abs(mix.eps(y, s, labels)) + 2 * np.abs(mix.eps(y, s))
    assert np.all(np.abs(g2 - 2 * g1 + g0) <= 4 * 3 * EPS * scale)


def test_class_posterior_is_a_distribution(mix):
    """p(c | x) rows sum to 1 and the Bayes classifier labels the class means' neighbourhoods correctly."""
    rng = np.random.default_rng(4)
    x, labels = mix.sample(5000, rng)
    post = mix.class_posterior(x)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=0, atol=gamma(10))
    # the Bayes accuracy is E[max_c p(c|x)]: the empirical accuracy is within 5 SE of it (SE ≤ √(1/(4N)))
    acc = np.mean(np.argmax(post, axis=1) == labels)
    assert abs(acc - post.max(axis=1).mean()) <= 5 * np.sqrt(0.25 / len(x)) * np.sqrt(2)


# ---------------------------------------------------------------------------------------------------------------
# The exact consistency function
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("end", tb.ENDS)
@pytest.mark.parametrize("t", [999, 499, 19])
def test_ode_map_matches_gaussian_closed_form(end, t):
    """solve_ivp's consistency function for one Gaussian equals the closed form, for both end points, within the
    error the solver's step control allows."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 3))
    cov, mean = A @ A.T / 3 + 0.05 * np.eye(3), rng.standard_normal(3)
    g = tb.GaussianMixture([1.0], [mean], [cov])
    x = rng.standard_normal((64, 3))
    a, s = tb.vp_coordinates(CFG, t)
    rtol, atol = 1e-9, 1e-12
    y_end, sol = tb.ode_map(g, x / a, s, tb.end_noise_level(CFG, end), rtol=rtol, atol=atol, full_output=True)
    got = tb.consistency_function(g, CFG, x, t, end=end, rtol=rtol, atol=atol)
    want = tb.gaussian_consistency_function(mean, cov, CFG, x, t, end=end)
    # DOP853 keeps the RMS over n = N·d components of (local error)/(atol + rtol·|y|) below 1 per accepted step, so
    # one component's local error ≤ √n·(atol + rtol·max|y|). For one Gaussian the flow contracts (factors
    # √((λ+s_end²)/(λ+s²)) ≤ 1), so the global error ≤ steps·√n·(atol + rtol·max|y|); √ᾱ_0 ≤ 1 at the boundary.
    steps = len(sol.t) - 1
    bound = steps * np.sqrt(x.size) * (atol + rtol * np.abs(sol.y).max())
    assert np.abs(got - want).max() <= bound, (np.abs(got - want).max(), bound)
    assert np.abs(y_end - tb.gaussian_ode_map(mean, cov, x / a, s, tb.end_noise_level(CFG, end))).max() <= bound
    # the bound has power: it is far below the distance between the two end points
    other = tb.gaussian_consistency_function(mean, cov, CFG, x, t, end=tb.ENDS[1 - tb.ENDS.index(end)])
    assert bound < 1e-2 * np.abs(other - want).max()


def test_boundary_condition_and_end_levels():
    """At timestep 0 the boundary consistency function is the identity (LCM's f(x, 0) = x); s_end is 0 for data
    and √((1−ᾱ_0)/ᾱ_0) for boundary."""
    mix = tb.make_mixture()
    x = np.random.default_rng(6).standard_normal((10, 2))
    # x/√ᾱ_0 then ·√ᾱ_0: two roundings
    np.testing.assert_allclose(tb.consistency_function(mix, CFG, x, 0, end="boundary"), x, rtol=2 * EPS, atol=0)
    ab0 = ref.alphas_cumprod(CFG)[0]
    assert tb.end_noise_level(CFG, "data") == 0.0
    assert tb.end_noise_level(CFG, "boundary") == pytest.approx(np.sqrt((1 - ab0) / ab0), rel=4 * EPS)


def test_lcm_one_step_reaches_the_noise_floor():
    """LCM's sampler with the exact consistency function at one step is indistinguishable from data: its FD and
    sliced W2 to a reference sample lie within the spread of the same metric between two independent data samples
    of the same size (while DDIM at one step and the identity map are far outside it)."""
    mix, n = tb.make_mixture(), 2048
    rng = np.random.default_rng(7)
    reference = mix.sample(n, rng)[0]
    # the floor: the metric between two independent data samples of size n, over R = 40 replicates
    floor_fd, floor_w2 = np.array([[tb.frechet_distance(mix.sample(n, rng)[0], reference),
                                    tb.sliced_w2(mix.sample(n, rng)[0], reference)] for _ in range(40)]).T
    # Cantelli: P(X ≥ mean + 5·sd) ≤ 1/26 for any distribution; for these near-χ² statistics the tail is ~1e-4
    fd_max, w2_max = floor_fd.mean() + 5 * floor_fd.std(), floor_w2.mean() + 5 * floor_w2.std()
    x_T = rng.standard_normal((n, 2))
    sched = ref.timesteps(CFG, 1)
    lcm = ref.sample(CFG, tb.consistency_model(mix, CFG, rtol=1e-8, atol=1e-11), x_T, sched, [])
    assert tb.frechet_distance(lcm, reference) <= fd_max
    assert tb.sliced_w2(lcm, reference) <= w2_max
    ddim = tb.ddim_sample(CFG, tb.denoiser_model(mix, CFG), x_T, 1, timesteps=sched)
    assert tb.frechet_distance(ddim, reference) > 10 * fd_max
    # the identity (x_T itself) matches the first two moments, so only the sliced W2 sees it
    assert tb.sliced_w2(x_T, reference) > w2_max


def test_consistency_model_output_round_trips_through_step():
    """consistency_model converts Φ to each prediction type so that ref.step's x0_pred recovers Φ."""
    mix = tb.make_mixture()
    x = np.random.default_rng(8).standard_normal((32, 2))
    phi = tb.consistency_function(mix, CFG, x, 759)
    for pt in ("epsilon", "sample", "v_prediction"):
        cfg = CFG.replace(prediction_type=pt)
        m = tb.consistency_model(mix, cfg)(x, 759)
        p, q = ref.x0_coefficients(cfg, 759)
        # x0 = p·x + q·m with m = (x − √ᾱΦ)/√(1−ᾱ) etc.: |p·x| + |q·m| ≤ 2·(|x|/√ᾱ + |Φ|); 6 roundings
        bound = 6 * EPS * 2 * (np.abs(x) / np.sqrt(ref.alphas_cumprod(cfg)[759]) + np.abs(phi))
        assert np.all(np.abs(p * x + q * m - phi) <= bound), pt


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------

def _random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.geomspace(1, cond, d)) @ q.T


def test_metrics_on_gaussian_moments_equal_closed_forms():
    """FD on exact moments = W2² between the Gaussians (FID's sqrtm(Σ1Σ2) vs the symmetric form), the diagonal
    closed form Σ(√a − √b)² + ‖Δμ‖², and the 1-D form (σ1 − σ2)² + Δμ²."""
    rng = np.random.default_rng(9)
    for d in (1, 2, 5):
        m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
        c1, c2 = _random_spd(rng, d), _random_spd(rng, d)
        fd = tb.frechet_distance((m1, c1), (m2, c2))
        # sqrtm (Schur) is backward stable: error ≲ κ·d·eps·‖Σ1Σ2‖ with κ ≤ 10²; tr scale ≤ 10·d
        tol = 100 * d * EPS * 10 * d * 10
        assert fd == pytest.approx(tb.gaussian_w2(m1, c1, m2, c2) ** 2, abs=tol)
        a, b = np.geomspace(0.5, 3, d), np.linspace(2, 0.2, d)
        want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
        assert tb.frechet_distance((m1, np.diag(a)), (m2, np.diag(b))) == pytest.approx(want, abs=tol)
        assert tb.gaussian_w2(m1, np.diag(a), m2, np.diag(b)) ** 2 == pytest.approx(want, abs=tol)
    assert tb.frechet_distance((np.array([1.0]), np.array([[4.0]])), (np.array([0.0]), np.array([[1.0]]))) \
        == pytest.approx(1 + 1, abs=8 * EPS)


def _w2sq_sample_to_gaussian(v, m, sd):
    """Exact W2² between the empirical distribution of v and N(m, sd²): Σ_i ∫_{i/n}^{(i+1)/n} (v_(i) − m − sd·z(u))²
    du with z = Φ⁻¹, using ∫ z du = φ(z_a) − φ(z_b) and ∫ z² du = (b − a) − [z φ(z)]_a^b."""
    v = np.sort(v) - m
    n = len(v)
    z = scipy.stats.norm.ppf(np.arange(n + 1) / n)
    phi = scipy.stats.norm.pdf(z)
    fin = np.isfinite(z)
    zphi = np.zeros_like(z)
    zphi[fin] = z[fin] * phi[fin]         # z·φ(z) → 0 at z = ±∞
    int_z = phi[:-1] - phi[1:]
    int_z2 = 1 / n - (zphi[1:] - zphi[:-1])
    return float(np.sum(v * v / n - 2 * sd * v * int_z + sd * sd * int_z2))


def _sw2_sample_to_gaussian(x, m, c, n_proj=128):
    th = tb.projections(x.shape[1], n_proj)
    vals = [_w2sq_sample_to_gaussian(x @ t, t @ m, np.sqrt(t @ c @ t)) for t in th]
    return np.sqrt(np.mean(vals))


@pytest.mark.parametrize("d", [2, 4])
def test_sample_metrics_converge_to_gaussian_closed_forms(d):
    """On Gaussian samples, √FD and the sliced W2 are within the triangle-inequality bound of their closed forms:
    |m(a, b) − m(A, B)| ≤ m(a, A) + m(b, B), each term computed exactly against the true Gaussian."""
    rng = np.random.default_rng(10)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d) + 1
    c1, c2 = _random_spd(rng, d, 4.0), _random_spd(rng, d, 4.0)
    a = rng.multivariate_normal(m1, c1, size=20_000)
    b = rng.multivariate_normal(m2, c2, size=15_000)
    # √FD is W2 between the Gaussians with the samples' moments: a metric, and √FD(a, (m1, c1)) is exact
    w2 = tb.gaussian_w2(m1, c1, m2, c2)
    slack = np.sqrt(tb.frechet_distance(a, (m1, c1))) + np.sqrt(tb.frechet_distance(b, (m2, c2)))
    assert abs(np.sqrt(tb.frechet_distance(a, b)) - w2) <= slack
    assert slack < 0.05 * w2   # the bound has power
    # the sliced W2 is an L2 norm over directions of 1-D W2 metrics: Minkowski + triangle give the same bound
    sw = tb.gaussian_sliced_w2(m1, c1, m2, c2)
    slack = _sw2_sample_to_gaussian(a, m1, c1) + _sw2_sample_to_gaussian(b, m2, c2)
    assert abs(tb.sliced_w2(a, b) - sw) <= slack
    assert slack < 0.05 * sw


def test_sliced_w2_of_one_dimensional_samples_is_exact():
    """In 1-D the sliced W2 is the exact W2 between empirical distributions: shifting a sample by δ gives δ, and
    unequal sizes use the merged quantile function ({0, 1} vs {0, 0, 1, 1}: identical distributions → 0)."""
    x = np.random.default_rng(11).standard_normal((100, 1))
    assert tb.sliced_w2(x, x + 0.25, n_projections=4) == pytest.approx(0.25, abs=8 * EPS)
    assert tb.sliced_w2(np.array([[0.0], [1.0]]), np.array([[0.0], [0.0], [1.0], [1.0]])) == 0.0
    # {0} vs {0, 1}: W2² = ∫ (0 − F⁻¹)² = 1/2
    # (a handful of roundings: quantile weights, a weighted sum, the mean over projections, a √)
    assert tb.sliced_w2(np.array([[0.0], [0.0]]), np.array([[0.0], [1.0]])) == pytest.approx(np.sqrt(0.5),
                                                                                          rel=4 * EPS)


# ---------------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------------

def test_ddim_on_custom_timesteps_reproduces_its_own_grid():
    """ddim_sample's custom-timestep path (final_alpha_cumprod set to the next ᾱ) gives DDIMScheduler's own
    trailing result bit for bit when handed that grid; so does dpmsolver_sample. (DDIMScheduler steps to
    t − T//n, which is the next trailing timestep only when n divides T: for n = 3 it goes 666 → 333, not 332.)"""
    mix = tb.make_mixture()
    den = tb.denoiser_model(mix, CFG)
    x_T = np.random.default_rng(12).standard_normal((64, 2))
    for n in (1, 3, 4):
        grid = ref.spaced_timesteps(CFG.num_train_timesteps, n, "trailing")
        own, custom = (tb.ddim_sample(CFG, den, x_T, n, spacing="trailing"),
                       tb.ddim_sample(CFG, den, x_T, n, timesteps=grid))
        if CFG.num_train_timesteps % n == 0:
            np.testing.assert_array_equal(own, custom)
        else:
            assert not np.array_equal(own, custom)
        np.testing.assert_array_equal(tb.dpmsolver_sample(CFG, den, x_T, n, spacing="trailing"),
                                      tb.dpmsolver_sample(CFG, den, x_T, n, timesteps=grid))


def test_baselines_converge_to_the_exact_consistency_function():
    """With the exact denoiser, DDIM and DPM-Solver++ 2M on many steps approach the exact ODE map (same x_T): the
    error falls as steps grow, DPM-Solver++ faster than DDIM (second vs first order)."""
    mix = tb.make_mixture()
    den = tb.denoiser_model(mix, CFG)
    x_T = np.random.default_rng(13).standard_normal((128, 2))
    phi = tb.consistency_function(mix, CFG, x_T, 999, end="data")
    err = {(name, n): np.sqrt(np.mean((f(CFG, den, x_T, n, spacing="trailing") - phi) ** 2))
           for name, f in (("ddim", tb.ddim_sample), ("dpm", tb.dpmsolver_sample)) for n in (10, 40)}
    assert err["ddim", 40] < err["ddim", 10] and err["dpm", 40] < err["dpm", 10]
    assert err["dpm", 40] < err["ddim", 40]


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

def test_bad_input_names_the_parameter():
    """Bad input raises LCMRefError naming the parameter and value."""
    mix = tb.make_mixture()
    x = np.zeros((2, 2))
    with pytest.raises(LCMRefError, match="end='clean'"):
        tb.consistency_function(mix, CFG, x, 10, end="clean")
    with pytest.raises(LCMRefError, match="timestep=1000"):
        tb.denoiser(mix, CFG, x, 1000)
    with pytest.raises(LCMRefError, match="covs"):
        tb.GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
    with pytest.raises(LCMRefError, match="weights"):
        tb.GaussianMixture([0.0], [[0.0, 0.0]], [np.eye(2)])
    with pytest.raises(LCMRefError, match="b.shape|a.shape"):
        tb.frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(LCMRefError, match="prediction_type"):
        tb.denoiser(mix, CFG, x, 10, prediction_type="x0")
