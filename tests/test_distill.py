"""Tests of latent consistency distillation on the testbed (lcm_ref.testbed.distill)."""

import numpy as np
import pytest
import torch

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefError
from lcm_ref.testbed import distill as ds
from lcm_ref import testbed as tb
from lcm_ref import numerics

EPS = numerics.eps("float64")
CFG = LCMConfig(prediction_type="v_prediction")


@pytest.fixture(scope="module")
def mix():
    return tb.make_mixture()


def test_ddim_grid_and_skipping_step():
    """The distillation grid is (1..N)·k − 1 with k = T // N, as the LCM scripts build it (integers, exact)."""
    np.testing.assert_array_equal(ds.ddim_grid(CFG, 50), np.arange(1, 51) * 20 - 1)
    g30 = ds.ddim_grid(CFG, 30)
    assert g30[0] == 32 and g30[-1] == 989 and len(g30) == 30       # k = 33: never reaches 999
    np.testing.assert_array_equal(ds.ddim_grid(CFG, 1000), np.arange(1000))
    with pytest.raises(LCMRefError, match="num_ddim_timesteps=0"):
        ds.ddim_grid(CFG, 0)


def test_teacher_step_is_ddim(mix):
    """teacher_step (Euler in s in y-space) is the DDIM update x̂ = √ᾱ'·x0 + √(1−ᾱ')·ε̃ with
    x0 = (x − √(1−ᾱ)·ε̃)/√ᾱ, to rounding; a zero-length step is the identity."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    start = ds.ddim_grid(CFG, 50)[rng.integers(0, 50, size=200)]
    target = np.maximum(start - 20, 0)
    labels, omega = mix.sample_labels(200, rng), rng.uniform(0, 3, size=200)
    got = ds.teacher_step(mix, CFG, x, start, target, labels=labels, omega=omega)
    sa, sb = ref.sqrt_alphas_cumprod(CFG), ref.sqrt_one_minus_alphas_cumprod(CFG)
    a, b, a2, b2 = (v[:, None] for v in (sa[start], sb[start], sa[target], sb[target]))
    eps = mix.guided_eps(x / a, b[:, 0] / a[:, 0], labels, omega)
    want = a2 * (x - b * eps) / a + b2 * eps
    # both forms: ≤ 6 roundings each of terms bounded by a2·(|x| + b·|ε|)/a + b2·|ε|
    terms = a2 * (np.abs(x) + b * np.abs(eps)) / a + b2 * np.abs(eps)
    assert np.all(np.abs(got - want) <= 12 * EPS * terms)
    same = ds.teacher_step(mix, CFG, x, start, start, labels=labels, omega=omega)
    np.testing.assert_allclose(same, x, rtol=2 * EPS, atol=0)   # x/√ᾱ·√ᾱ: two roundings


def test_student_satisfies_the_boundary_condition(mix):
    """f_θ(x, 0) = x exactly (c_skip(0) = 1, c_out(0) = 0) for any weights, and f_θ uses LCM's c_skip/c_out with
    timestep_scaling: f_θ − a[t]·x = b[t]·F_θ with (a, b) from ref.denoised_coefficients."""
    res = ds.distill(mix, CFG, iterations=0, progress=False)
    tables = ds.fused_tables(CFG)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    om, lab = torch.full((16,), 2.0), torch.zeros(16, dtype=torch.int64)
    f0 = ds.student_consistency(res.student, tables, x, torch.zeros(16, dtype=torch.int64), om, lab)
    assert torch.equal(f0, x)
    a, b = ref.denoised_coefficients(CFG, 499)
    c_skip, c_out = ref.boundary_scalings(CFG, 499)
    p, q = ref.x0_coefficients(CFG, 499)
    # v-prediction at t = 499: c_skip, c_out, p > 0, so the sum does not cancel; each side is ≤ 4 roundings (a
    # product and a sum here; the reference's own) of u = eps/2 on correctly rounded inputs: 8u = 4·eps
    assert (a, b) == pytest.approx((c_skip + c_out * p, c_out * q), rel=4 * EPS)
    assert tables[0][499].item() == np.float32(a) and tables[1][499].item() == np.float32(b)


def _four_step_metrics(mix, student, n=1024):
    rng = np.random.default_rng(123)
    reference = mix.sample(4096, rng)[0]
    x_T, labels = rng.standard_normal((n, 2)), mix.sample_labels(n, rng)
    sched = ref.timesteps(CFG, 4)
    x = ref.sample(CFG, ds.student_model(student, labels=labels), x_T, sched, tb.draw_noises(rng, 4, x_T.shape))
    return tb.frechet_distance(x, (mix.mean(), mix.cov())), tb.sliced_w2(x, reference)


def test_short_distillation_lowers_loss_and_beats_its_untrained_self(mix):
    """300 iterations of Algorithm 1 lower the consistency loss (running, and on a fixed held-out batch) and improve
    the 4-step LCM samples (FD and sliced W2) over the untrained student with the same seed."""
    untrained = ds.distill(mix, CFG, iterations=0, progress=False)
    res = ds.distill(mix, CFG, iterations=300, batch_size=256, progress=False)
    assert res.losses[-30:].mean() < res.losses[:30].mean()
    tables = ds.fused_tables(CFG)
    held_out = ds.draw_batch(mix, CFG, 50, 8192, np.random.default_rng(99))
    with torch.no_grad():
        before = ds.consistency_loss(untrained.student, untrained.target, tables, held_out).item()
        after = ds.consistency_loss(res.student, res.target, tables, held_out).item()
    assert after < before
    fd0, w0 = _four_step_metrics(mix, untrained.student)
    fd1, w1 = _four_step_metrics(mix, res.student)
    assert fd1 < fd0 and w1 < w0, (fd0, fd1, w0, w1)


def test_distillation_is_reproducible(mix):
    """Same seed → identical losses and weights; another seed → different ones (global torch RNG untouched)."""
    before = torch.random.get_rng_state()
    r1, r2 = (ds.distill(mix, CFG, iterations=20, batch_size=64, progress=False) for _ in range(2))
    r3 = ds.distill(mix, CFG, iterations=20, batch_size=64, seed=1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(r1.losses, r2.losses)
    for p1, p2 in zip(r1.student.parameters(), r2.student.parameters()):
        assert torch.equal(p1, p2)
    assert not np.array_equal(r1.losses, r3.losses)


def test_evaluations_are_recorded(mix):
    """eval_fn runs at iteration 0, every eval_every iterations and at the end, its dicts recorded in order; the EMA
    target differs from the online student after training (μ = 0.95 < 1) but has moved from the initial weights
    towards it, and with μ = 0 it is the student exactly."""
    res = ds.distill(mix, CFG, iterations=20, batch_size=32, eval_every=8, progress=False,
                     eval_fn=lambda r: {"n": len(r.evals)})
    assert res.evals == [{"iteration": i, "n": n} for n, i in enumerate([0, 8, 16, 20])]
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])   # noqa: E731
    init = flat(ds.distill(mix, CFG, iterations=0, batch_size=32, progress=False).student)
    student, target = flat(res.student), flat(res.target)
    # θ⁻ is a convex combination of θ_0 (weight μ²⁰ = 0.36) and the student's trajectory, so it lies strictly
    # between θ_0 and a student that moved: not equal to either, and nearer the student than θ_0 is.
    assert not torch.equal(target, student) and not torch.equal(target, init)
    assert (target - student).norm() < (init - student).norm()
    # mutant control of the update: μ = 0 makes p_t = 0·p_t + 1·p, the student bit for bit
    res0 = ds.distill(mix, CFG, iterations=20, batch_size=32, ema_decay=0.0, progress=False)
    assert torch.equal(flat(res0.target), flat(res0.student))


def test_bad_arguments_name_the_parameter(mix):
    """Bad distillation arguments raise LCMRefError naming the parameter."""
    with pytest.raises(LCMRefError, match="ema_decay"):
        ds.distill(mix, CFG, iterations=1, ema_decay=1.0, progress=False)
    with pytest.raises(LCMRefError, match="iterations"):
        ds.distill(mix, CFG, iterations=-1, progress=False)
    with pytest.raises(LCMRefError, match="cfg"):
        ds.distill(mix, LCMConfig(rescale_betas_zero_snr=True), iterations=1, progress=False)
