"""The learned testbed's pieces (lcm_ref.testbed.digits, docs/design.md §11.1), at tiny sizes: the LCD target against a
hand-computed DDIM step, the guidance embedding, checkpoints, the Fréchet distance, resuming, LCM sampling through
the drop-in scheduler, and errors that name the parameter."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lcm_ref import reference as ref
from lcm_ref.errors import LCMRefError
from lcm_ref.testbed import distill as ds
from lcm_ref.testbed.digits import checkpoint as ck
from lcm_ref.testbed.digits import classifier as clf
from lcm_ref.testbed.digits import data, lcd, sampling
from lcm_ref.testbed.digits import teacher as tch

EPS32 = float(np.finfo(np.float32).eps)
TINY = dict(block_out_channels=(8, 16), norm_num_groups=4)     # a U-Net of ~40k parameters


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ToyEps(torch.nn.Module):
    """A stand-in U-Net with the call signature the testbed uses: ε(x, t, c) = g_c·x + h_c, per class c (row 10:
    the null label); ``timestep_cond`` (when given) adds its row sum times 0.01. Known in closed form."""

    def __init__(self, cond_dim=None):
        super().__init__()
        self.g = torch.linspace(0.1, 0.6, 11)
        self.h = torch.linspace(-0.5, 0.5, 11)
        self.config = SimpleNamespace(time_cond_proj_dim=cond_dim)

    def forward(self, x, t, ehs=None, class_labels=None, timestep_cond=None, return_dict=True):
        shape = (-1, 1, 1, 1)
        out = self.g[class_labels].reshape(shape) * x + self.h[class_labels].reshape(shape)
        if timestep_cond is not None:
            out = out + 0.01 * timestep_cond.sum(1).reshape(shape)
        return (out,)


def _hand_eps(x, c, cond_sum=None):
    g, h = np.linspace(0.1, 0.6, 11), np.linspace(-0.5, 0.5, 11)
    out = g[c][:, None, None, None] * x + h[c][:, None, None, None]
    return out if cond_sum is None else out + 0.01 * cond_sum[:, None, None, None]


def test_lcd_target_equals_a_hand_computed_ddim_step():
    """Algorithm 1's target f_θ⁻(x̂, target) with x̂ the guided DDIM step, against the formulas evaluated by hand in
    float64 (ᾱ from the reference tables, c_skip/c_out from their definition with σ_data = 0.5, s = 10)."""
    cfg = lcd.lcm_config(10.0)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn((3, 1, 8, 8), generator=g) * 1.5).float()
    start, target = torch.tensor([999, 519, 19]), torch.tensor([979, 499, 0])
    labels, omega = torch.tensor([3, 7, 0]), torch.tensor([2.0, 8.0, 14.0])
    teacher, target_net = ToyEps(), ToyEps(cond_dim=lcd.GUIDANCE_DIM)
    got = lcd.lcd_target(teacher, target_net, ds.fused_tables(cfg), x, start, target, labels, omega).double().numpy()

    abar = ref.alphas_cumprod(cfg)
    xs, lab, w = x.double().numpy(), labels.numpy(), omega.numpy()[:, None, None, None]
    a_s, s_s = np.sqrt(abar[start])[:, None, None, None], np.sqrt(1 - abar[start])[:, None, None, None]
    a_t, s_t = np.sqrt(abar[target])[:, None, None, None], np.sqrt(1 - abar[target])[:, None, None, None]
    eps = (1 + w) * _hand_eps(xs, lab) - w * _hand_eps(xs, np.full(3, 10))
    x0 = (xs - s_s * eps) / a_s
    x_hat = a_t * x0 + s_t * eps                                          # the DDIM step start → target
    cond = lcd.guidance_embedding(omega).double().numpy().sum(1)
    eps_t = _hand_eps(x_hat, lab, cond)
    u = 10.0 * target.numpy().astype(np.float64)[:, None, None, None]
    c_skip, c_out = 0.25 / (u ** 2 + 0.25), u / np.sqrt(u ** 2 + 0.25)
    want = c_skip * x_hat + c_out * (x_hat - s_t * eps_t) / a_t
    # Tolerance: the float32 computation rounds each product and sum once (relative u = eps/2) and each float64
    # coefficient once on conversion; along the chain (guidance: 3 terms, x0: 2, DDIM: 2, target: 3) there are
    # fewer than 16 roundings, each on a quantity bounded by the sum of the absolute values of the terms, `scale`
    # (which includes the 1/√ᾱ ≈ 14.6 magnification at t = 999). So |got − want| ≤ 16·(eps/2)·scale ≤ 8·eps·scale.
    scale = (np.abs(c_skip * x_hat) + np.abs(c_out * x_hat / a_t) + np.abs(c_out * s_t * eps_t / a_t)
             + (np.abs(a_t / a_s * xs) + np.abs(a_t * s_s / a_s * eps) + np.abs(s_t * eps)) * (c_skip + c_out / a_t))
    assert np.all(np.abs(got - want) <= 8 * EPS32 * scale)
    # at t = 0 the target is x̂ itself (c_skip(0) = 1, c_out(0) = 0: the boundary condition)
    assert np.array_equal(want[2], x_hat[2])


def test_solvers_agree_when_the_guided_eps_is_constant():
    """With ε̃ independent of x and t the PF-ODE dy/ds = ε̃ (y = x/α, s = σ/α) is solved exactly by one DDIM step,
    and the second-order solvers must give the same point (their correction terms vanish)."""
    class ConstEps(ToyEps):
        def forward(self, x, t, ehs=None, class_labels=None, timestep_cond=None, return_dict=True):
            return (torch.full_like(x, 0.3) + 0.2 * (class_labels != 10).float().reshape(-1, 1, 1, 1),)
    x = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    start, target = torch.tensor([999, 759, 259, 19]), torch.tensor([979, 739, 239, 0])
    labels, omega = torch.tensor([1, 2, 3, 4]), torch.tensor([2.0, 4.0, 8.0, 14.0])
    out = {s: lcd.solver_step(ConstEps(), x.double(), start, target, labels, omega.double(), s) for s in lcd.SOLVERS}
    # In float64 the three formulas differ only by rounding: terms are O(|x|/α_s) ≤ 15·4 = 60, a few tens of
    # roundings each ≤ 2⁻⁵³·60 ≈ 7e-15: 1e-12 bounds them with a wide margin.
    for s in ("dpmsolver", "dpmsolver++"):
        assert torch.allclose(out[s], out["ddim"], rtol=0, atol=1e-12), s


def _tiny_teacher(seed=0):
    return tch.make_teacher(seed, **TINY).eval()


def test_student_starts_as_the_teacher_and_the_guidance_embedding_changes_its_output():
    """Protects make_student: every teacher weight carried over; cond_proj zero (the teacher exactly) or torch's
    default draw from the seed (the LCD script's strict=False load), and then ω changes the output."""
    teacher = _tiny_teacher()
    x = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    t, c = torch.tensor([999, 500, 100, 0]), torch.tensor([0, 3, 5, 9])
    emb = lambda w: lcd.guidance_embedding(torch.full((4,), w))  # noqa: E731
    zero = lcd.make_student(teacher, cond_init="zero").eval()
    default = lcd.make_student(teacher).eval()
    again = lcd.make_student(teacher).eval()
    with torch.no_grad():
        base = tch.unet_eps(teacher, x, t, c)
        # cond_proj zero: the student is the teacher exactly, whatever ω
        assert torch.equal(tch.unet_eps(zero, x, t, c, emb(2.0)), base)
        assert torch.equal(tch.unet_eps(zero, x, t, c, emb(14.0)), base)
        a, b = tch.unet_eps(default, x, t, c, emb(2.0)), tch.unet_eps(default, x, t, c, emb(8.0))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in default.state_dict().items()
               if k != "time_embedding.cond_proj.weight")
    # the default draw comes from the seed: two students made alike are equal
    assert torch.equal(default.time_embedding.cond_proj.weight, again.time_embedding.cond_proj.weight)
    # A float32 forward pass of this net rounds a few hundred times, each ≤ 2⁻²⁴ ≈ 6e-8 relative on O(1) values, so
    # rounding alone moves an output by well under 1e-4; a larger difference is the guidance embedding's doing.
    assert (a - b).abs().max() > 1e-4
    # the embeddings themselves: sin/cos of 1000·ω·f_j differ by O(1) between ω = 2 and 2.5 for the high f_j
    assert (emb(2.0) - emb(2.5)).abs().max() > 0.5


def test_distill_trains_on_lcd_target(monkeypatch):
    """Protects the training loop's wiring: every iteration's loss is consistency_loss(f_θ(x, start), lcd_target(x,
    start → max(start − k, 0))) with start on the DDIM grid and ω in the training range, so the hand-checked
    lcd_target above is the target training uses (an inline copy, or a target at another timestep, fails here)."""
    calls, losses = [], []
    real_target, real_loss = lcd.lcd_target, lcd.consistency_loss

    def spy_target(teacher, target_net, tables, x, start, target, labels, omega, solver="ddim"):
        out = real_target(teacher, target_net, tables, x, start, target, labels, omega, solver)
        calls.append((torch.as_tensor(start).clone(), torch.as_tensor(target).clone(), omega.clone(), out))
        return out

    def spy_loss(pred, target, loss="l2", scale=None):
        losses.append((target, real_loss(pred, target, loss, scale)))
        return losses[-1][1]
    monkeypatch.setattr(lcd, "lcd_target", spy_target)
    monkeypatch.setattr(lcd, "consistency_loss", spy_loss)
    st = lcd.distill(_tiny_teacher(), data.load("train"), iterations=3, batch_size=6, progress=False,
                     omega_min=2.0, omega_max=14.0)
    assert len(calls) == len(losses) == 3
    grid = set(lcd.solver_grid(50).tolist())
    for (start, target, omega, out), (used, value), recorded in zip(calls, losses, st.losses):
        assert used is out                                   # the loss is taken against lcd_target's output
        assert set(start.tolist()) <= grid
        assert torch.equal(target, torch.clamp(start - 20, min=0))
        assert bool(((omega >= 2.0) & (omega <= 14.0)).all())
        assert recorded == value.item()


def test_checkpoint_round_trips(tmp_path):
    """Weights, config and record come back identical; outputs match bit for bit; a changed file is refused."""
    student = lcd.make_student(_tiny_teacher())
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.normal_(generator=torch.Generator().manual_seed(4))
    path = ck.save(tmp_path / "s.safetensors", student, {"command": "lcm-ref paper train", "seed": 7})
    back, rec = ck.load(path)
    assert rec["command"] == "lcm-ref paper train" and rec["seed"] == 7 and rec["kind"] == "unet"
    assert back.config.time_cond_proj_dim == lcd.GUIDANCE_DIM
    sd, bd = student.state_dict(), back.state_dict()
    assert sd.keys() == bd.keys() and all(torch.equal(sd[k], bd[k]) for k in sd)
    x, t, c = torch.randn((2, 1, 8, 8)), torch.tensor([999, 10]), torch.tensor([1, 2])
    cond = lcd.guidance_embedding(torch.tensor([3.0, 9.0]))
    with torch.no_grad():
        assert torch.equal(tch.unet_eps(back, x, t, c, cond), tch.unet_eps(student.eval(), x, t, c, cond))
    model = clf.DigitClassifier().eval()
    cpath = ck.save(tmp_path / "c.safetensors", model, {"seed": 0})
    cback, crec = ck.load(cpath)
    assert crec["kind"] == "classifier" and torch.equal(cback(x), model(x))
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(LCMRefError, match="path"):
        ck.load(path)


def test_frechet_distance_is_zero_for_identical_features_and_a_mean_shift_for_shifted_ones():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    c = np.cov(f, rowvar=False)
    # Tolerance: FD = tr Σ + tr Σ − 2 Σᵢ √μᵢ with μᵢ the eigenvalues of Σ^½ Σ Σ^½ = Σ² (λᵢ² in exact arithmetic).
    # The symmetric eigensolvers are backward stable: each μᵢ is off by ≤ p(d)·eps64·λ_max², so √μᵢ by
    # ≤ p(d)·eps64·λ_max²/(2λᵢ) = p(d)·eps64·κ·λ_max/2 (κ = λ_max/λ_min), and the sum over d of them by
    # d·p(d)·eps64·κ·λ_max/2. With p(d) ≤ d² (a loose LAPACK bound) and the κ of this draw, that is the bound used.
    lam = np.linalg.eigvalsh(c)
    kappa, d = lam[-1] / lam[0], c.shape[0]
    tol = d * d ** 2 * np.finfo(np.float64).eps * kappa * lam[-1]
    assert abs(clf.frechet_distance(f, f)) <= tol
    # a mean shift leaves both covariances equal: FD = ‖shift‖² (same bound on the trace part)
    shift = rng.standard_normal(16)
    assert abs(clf.frechet_distance(f + shift, f) - float(shift @ shift)) <= tol + 16 * np.finfo(float).eps * \
        float(shift @ shift)


def test_bootstrap_intervals_contain_their_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8)) + 0.3
    r = clf.bootstrap_fd(a, b, n_boot=50)
    assert r["lo"] <= r["fd"] <= r["hi"]
    m = clf.bootstrap_mean(rng.random(100), n_boot=50)
    assert m["lo"] <= m["mean"] <= m["hi"]
    d = clf.bootstrap_fd_difference(b, a[:150], a[150:], n_boot=50)
    assert d["lo"] <= d["diff"] <= d["hi"]


def test_distillation_resumes_to_the_same_weights():
    """Two iterations, a saved state, two more: the same weights as four iterations in one go."""
    teacher, train = _tiny_teacher(), data.load("train")
    kw = dict(iterations=4, batch_size=4, progress=False)
    whole = lcd.distill(teacher, train, **kw).model.state_dict()
    saved = {}

    def keep(st):
        saved[st.iteration] = copy.deepcopy(st.state_dict())
    lcd.distill(teacher, train, checkpoint_every=2, checkpoint_fn=keep, **kw)
    resumed = lcd.distill(teacher, train, resume=saved[2], **kw).model.state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_linear_lr_schedule_ends_at_zero_and_init_starts_from_the_given_student():
    """Protects ``distill``'s ``lr_schedule="linear"`` (after the warm-up the rate falls linearly and the last step
    is taken at lr·1/(iterations − warmup)) and ``init`` (iteration 0 is the given student, not a fresh copy of the
    teacher): the recipe study's decayed fine-tune (docs/design.md §11.1) depends on both."""
    teacher, train = _tiny_teacher(), data.load("train")
    start = lcd.make_student(teacher, 8, "default", seed=5)
    seen = []
    st = lcd.distill(teacher, train, iterations=4, batch_size=2, progress=False, lr=1e-3, warmup=2,
                     lr_schedule="linear", guidance_dim=8, init=start, eval_every=4,
                     eval_fn=lambda s: seen.append({k: v.clone() for k, v in s.state_dict().items()}) or {})
    # rates used at iterations 0..3: warm-up (1/2, 1), then (4 − 2)/2 = 1, (4 − 3)/2 = ½; after the last step 0
    assert st.sched.get_last_lr() == [0.0]
    assert all(torch.equal(seen[0][k], v) for k, v in start.state_dict().items())
    assert not torch.equal(st.model.state_dict()["conv_in.weight"], start.state_dict()["conv_in.weight"])


def test_eps_space_loss_is_finite_on_k1_grid_that_starts_at_t0():
    """Protects the ε-space loss at start = 0 (k = 1's grid includes it): there b[0] = 0 and f = x whatever ε, so the
    loss must not divide by it (it did: NaN on the first batch that drew t = 0)."""
    st = lcd.distill(_tiny_teacher(), data.load("train"), num_ddim_timesteps=1000, iterations=20, batch_size=64,
                     progress=False, loss_space="eps")
    # 20 batches of 64 starts from 1,000: P(no t = 0 drawn) = (999/1000)^1280 ≈ 0.28, so the seed matters; seed 0
    # draws it (checked by the NaN this test caught before the fix)
    assert all(math.isfinite(v) for v in st.losses)


def test_one_step_lcm_sample_is_lcms_boundary_formula():
    """One step through lcm_ref's drop-in LCMScheduler returns c_skip(999)·x_T + c_out(999)·x̂_0 (epsilon)."""
    student = lcd.make_student(_tiny_teacher()).eval()
    labels = torch.arange(5)
    got = sampling.lcm_sample(student, labels, 8.0, 1, seed=3).double()
    _, x_T = sampling.initial_noise(5, 3)
    with torch.no_grad():
        eps = tch.unet_eps(student, x_T, torch.tensor(999), labels,
                           lcd.guidance_embedding(torch.full((5,), 8.0))).double()
    cfg = lcd.lcm_config(10.0)
    abar = ref.alphas_cumprod(cfg)[999]
    c_skip, c_out = ref.boundary_scalings(cfg, 999)
    x = x_T.double()
    want = c_skip * x + c_out * (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    # TorchLCM's float32 step: |error| ≤ 1.5·eps·Σ|terms| (lcm_ref.torch_impl, docs/design.md §8); Σ|terms| below.
    terms = abs(c_skip) * x.abs() + abs(c_out / math.sqrt(abar)) * x.abs() + \
        abs(c_out * math.sqrt(1 - abar) / math.sqrt(abar)) * eps.abs()
    assert torch.all((got - want).abs() <= 1.5 * EPS32 * terms)


def test_teacher_baselines_start_from_the_same_noise():
    """Every method drawn with the same seed starts from the same x_T (the first draw of the seed)."""
    teacher = _tiny_teacher()
    g1, a = sampling.initial_noise(3, 5)
    _, b = sampling.initial_noise(3, 5)
    assert torch.equal(a, b)
    for solver in sampling.TEACHER_SOLVERS:
        out = sampling.teacher_sample(teacher, torch.tensor([0, 1, 2]), 2.0, 2, solver, seed=5)
        assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()


def test_ideal_lcm_sample_is_lcms_sampler_around_the_teachers_own_ddim_runs():
    """The perfect student: 1 step is the teacher's DDIM-50 sample bit for bit; 2 steps re-noise that sample to LCM's
    second timestep (499) with the generator's next draw, as ``lcm_sample`` would, and run the teacher's DDIM from
    there on the same grid, built here from diffusers' DDIMScheduler and the drop-in's ``add_noise`` (each checked
    on its own elsewhere), so equality is bitwise. A re-noise one grid step off (519) differs."""
    teacher, labels, omega = ToyEps(), torch.arange(4), 3.0
    one = sampling.ideal_lcm_sample(teacher, labels, omega, 1, seed=7)
    assert torch.equal(one, sampling.teacher_sample(teacher, labels, omega, 50, "ddim", seed=7))
    g, _ = sampling.initial_noise(4, 7)
    z = torch.randn((4, 1, 8, 8), generator=g)
    sched = sampling.lcm_scheduler()
    sched.set_timesteps(2)
    assert [int(t) for t in sched.timesteps] == [999, 499]

    def from_(t_start):
        x = sched.add_noise(one, z, torch.tensor([t_start]))
        ddim = sampling.teacher_scheduler("ddim", 50)
        for t in ddim.timesteps[ddim.timesteps <= t_start]:
            x = ddim.step(tch.guided_eps(teacher, x, t, labels, omega), t, x, return_dict=False)[0]
        return x
    two = sampling.ideal_lcm_sample(teacher, labels, omega, 2, seed=7)
    assert torch.equal(two, from_(499))
    assert not torch.allclose(two, from_(519), atol=1e-3)
    with pytest.raises(LCMRefError) as e:
        sampling.ideal_lcm_sample(teacher, labels, omega, 4, original_inference_steps=30)
    assert e.value.parameter == "original_inference_steps"


def test_data_split_is_fixed_stratified_and_scaled():
    tr, te = data.load("train"), data.load("test")
    assert len(tr.y) + len(te.y) == 1797
    assert float(tr.x.min()) == -1.0 and float(tr.x.max()) == 1.0
    counts_tr, counts_te = torch.bincount(tr.y), torch.bincount(te.y)
    assert torch.all((counts_te - counts_tr).abs() <= 1)            # each class halved
    assert torch.equal(data.load("train").x, tr.x)                    # fixed


@pytest.mark.parametrize("call, parameter", [
    (lambda: data.load("validation"), "split"),
    (lambda: lcd.guidance_embedding(1.0, dim=3), "dim"),
    (lambda: lcd.solver_step(ToyEps(), torch.zeros(1, 1, 8, 8), [999], [979], torch.tensor([0]), 1.0, "euler"),
     "solver"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), solver="heun", iterations=1), "solver"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), num_ddim_timesteps=0, iterations=1),
     "num_ddim_timesteps"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), omega_min=3.0, omega_max=2.0, iterations=1),
     "omega_max"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), timestep_scaling=0.0, iterations=1),
     "timestep_scaling"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), lr_schedule="cosine", iterations=1), "lr_schedule"),
    (lambda: lcd.distill(_tiny_teacher(), data.load("train"), init=_tiny_teacher(), iterations=1), "init"),
    (lambda: tch.train_teacher(data.load("train"), iterations=1, p_uncond=1.5), "p_uncond"),
    (lambda: tch.train_teacher(data.load("train"), iterations=-1), "iterations"),
    (lambda: sampling.lcm_sample(None, torch.arange(2), 8.0, 0), "steps"),
    (lambda: sampling.lcm_sample(None, torch.zeros(2, 2, dtype=torch.long), 8.0, 1), "labels"),
    (lambda: sampling.teacher_sample(None, torch.arange(2), -1.0, 1), "omega"),
    (lambda: sampling.teacher_scheduler("euler", 4), "solver"),
    (lambda: clf.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4))), "b"),
    (lambda: clf.frechet_distance(np.zeros(5), np.zeros(5)), "a.shape"),
    (lambda: clf.bootstrap_fd(np.zeros((5, 2)), np.zeros((5, 2)), n_boot=1), "n_boot"),
    (lambda: clf.class_probability(clf.DigitClassifier(), torch.zeros(2, 1, 8, 8), [1]), "labels"),
    (lambda: clf.features(clf.DigitClassifier(), torch.zeros(2, 8, 8)), "images"),
    (lambda: ck.save("/tmp/x.pt", clf.DigitClassifier()), "path"),
    (lambda: ck.load("/nonexistent/x.safetensors"), "path"),
    (lambda: __import__("lcm_ref.studies.paper_train", fromlist=["train"]).train(["bogus"]), "--only"),
    (lambda: __import__("lcm_ref.studies.paper_train", fromlist=["train"]).train(["teacher"], grid="huge"), "--grid"),
])
def test_bad_input_names_the_parameter(call, parameter):
    with pytest.raises(LCMRefError) as e:
        call()
    assert e.value.parameter == parameter


def test_verdict_rule_and_grid_preference():
    from lcm_ref.studies import paper
    assert paper._decide(-3.0, -1.0) == "reproduced"
    assert paper._decide(1.0, 3.0) == "not reproduced"
    assert paper._decide(-1.0, 1.0) == "inconclusive"
    assert paper._decide(0.5, 0.9, 1.0) == "reproduced"          # worse by less than δ = 1: level
    rows = [{"study": "skipping", "grid": g, "k": 1} for g in ("cpu", "full", "cpu")] + \
        [{"study": "main", "grid": "cpu", "k": 20}]
    assert [r["grid"] for r in paper.skipping_rows(rows)] == ["full"]
    assert len(paper.skipping_rows([r for r in rows if r["grid"] == "cpu"])) == 2


def test_design_quotes_the_committed_results():
    """docs/design.md §12.1 quotes the learned testbed's results; each number must be the value in reports/data
    rounded to the places shown (the CSVs are regenerated by `make report` from the committed weights)."""
    import csv
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    data = root / "reports" / "data"
    if not (data / "digits_table1.csv").is_file():
        pytest.skip("reports/data has no learned-testbed results yet")
    text = re.sub(r"\s*\n\s*", " ", (root / "docs" / "design.md").read_text())

    def agrees(value, shown):
        s = shown.replace("−", "-")
        places = len(s.split(".")[1]) if "." in s else 0
        return abs(value - float(s)) <= 0.5 * 10 ** -places + 1e-12

    def load(name):
        with open(data / name, newline="") as f:
            return list(csv.DictReader(f))
    clf_rows = {r["quantity"]: r for r in load("digits_classifier.csv")}
    t1 = {(r["method"], r["steps"]): r for r in load("digits_table1.csv")}
    num = r"(−?[0-9.]+)"
    m = re.search(rf"held-out accuracy {num} \(901 test digits\); real-vs-real FD floor {num} \[{num}, {num}\]", text)
    assert m, "the results sentence of docs/design.md §12.1 changed: update this test with it"
    floor = clf_rows["FD real-vs-real (train vs test)"]
    for shown, value in zip(m.groups(), (clf_rows["held-out accuracy"]["value"], floor["value"], floor["lo"],
                                         floor["hi"])):
        assert agrees(float(value), shown), (shown, value)
    m = re.search(rf"at 4 steps: LCM {num} \[{num}, {num}\], DPM-Solver\+\+ {num} \[{num}, {num}\], DDIM {num} "
                  rf"\[{num}, {num}\]; the teacher's DDIM-50 ceiling {num} \[{num}, {num}\]", text)
    assert m
    want = [float(t1[(meth, n)][k]) for meth, n in (("lcm", "4"), ("dpmsolver++", "4"), ("ddim", "4"),
                                                     ("teacher_ddim_50", "50")) for k in ("fd", "fd_lo", "fd_hi")]
    assert all(agrees(v, s) for s, v in zip(m.groups(), want)), list(zip(m.groups(), want))
    m = re.search(rf"\(`fd_ceiling` {num}\) than the teacher's DPM-Solver\+\+ \({num}\)", text)
    assert m and agrees(float(t1[("lcm", "4")]["fd_ceiling"]), m.group(1)) and \
        agrees(float(t1[("dpmsolver++", "4")]["fd_ceiling"]), m.group(2))
    m = re.search(rf"its FD to the teacher's DDIM-50 samples is {num} / {num} / {num} / {num} \(CNN\) and {num} / {num} / "
                  rf"{num} / {num} \(pixels\) at 1 / 2 / 4 / 8 steps", text)
    assert m, "the perfect student's sentence of docs/design.md §11.1 changed: update this test with it"
    want = [max(float(t1[("lcm_ideal", str(n))][k]), 0.0) for k in ("fd_ceiling", "fd_ceiling_pix") for n in (1, 2, 4, 8)]
    assert all(agrees(v, s) for s, v in zip(m.groups(), want)), list(zip(m.groups(), want))
    ctl = {(r["steps"], r["space"]): float(r["fd"]) for r in load("digits_ideal_control.csv")}
    m = re.search(rf"it stays at {num} / {num} / {num} \(CNN\) and {num} / {num} / {num} \(pixels\) at 2 / 4 / 8 steps",
                  text)
    assert m, "the perfect student's control sentence of docs/design.md §11.1 changed: update this test with it"
    want = [ctl[(str(n), sp)] for sp in ("cnn", "pixels") for n in (2, 4, 8)]
    assert all(agrees(v, s) for s, v in zip(m.groups(), want)), list(zip(m.groups(), want))
    # the verdict summary of the same paragraph
    verdicts = {r["claim"]: r["verdict"] for r in load("digits_verdicts.csv")}
    expect = {"Table 1: at 1 step": "reproduced", "Table 1: at 2 steps": "reproduced",
              "Table 1: at 4 steps": "inconclusive", "Table 1: at 8 steps": "inconclusive",
              "converges more slowly": "reproduced", "(k = 50) is worse": "inconclusive",
              "1 step lags": "inconclusive", "raises the CLIP score": "not reproduced", "worsens FID": "reproduced",
              "give close results": "inconclusive", "Guided-Distill": "not tested",
              "guidance reaches the student": "reproduced", "follows the teacher's sample by sample": "not reproduced",
              "as close to its guided teacher": "inconclusive", "Attainable: a perfect student": "inconclusive"}
    for key, verdict in expect.items():
        hits = [v for c, v in verdicts.items() if key in c]
        assert hits and all(v == verdict for v in hits), (key, hits)
    assert "Table 1 at 1 and 2 steps reproduced, at 4 and 8 steps inconclusive" in text


def test_main_student_samples_with_diffusers_own_lcm_scheduler_and_guidance_embedding():
    """Protects ``digits.load`` for outside users: from the record alone, diffusers' ``LCMScheduler`` and
    ``LatentConsistencyModelPipeline.get_guidance_scale_embedding`` sample the committed main student as the
    page's sampler does (the embedding within its float32 rounding of ours, every step within rounding of
    ``lcm_ref.torch_impl.LCMScheduler``'s, which ``sampling.lcm_sample`` uses, on the same input and noise)."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    import lcm_ref.testbed.digits as digits
    unet, rec = digits.load("student")
    use, lcd_rec = rec["usage"], rec["lcd"]
    assert use["role"] == "main" and use["null_class"] == data.NULL_LABEL
    dim = use["time_cond_proj_dim"]
    assert dim == unet.config.time_cond_proj_dim
    n, omega, steps = 20, 8.0, 4
    labels = torch.arange(n) % 10
    w = torch.full((n,), omega)
    cond = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
    # diffusers' float32 embedding against the float64 recipe: the phase 1000·ω·f_j carries the float32 roundings
    # of log(10⁴) and of the exponent j·log(10⁴)/(h − 1) ≤ 9.21 (≤ 2u relative, so ≤ 18.4u absolute, which exp
    # turns into 18.4u relative), of exp and of the two products (3u): ≤ 21.4u < 11·eps32 relative, so
    # |Δ phase| ≤ 1000·ω·11·eps32, and sin/cos move by at most that plus their own rounding (2·eps32).
    ref_cond = lcd.guidance_embedding(w.double(), dim).double()
    assert (cond.double() - ref_cond).abs().max() <= 1000 * omega * 11 * EPS32 + 2 * EPS32
    theirs = LCMScheduler(**use["schedule"], timestep_scaling=lcd_rec["timestep_scaling"],
                          original_inference_steps=lcd_rec["num_ddim_timesteps"])
    ours = sampling.lcm_scheduler(lcd_rec["timestep_scaling"], lcd_rec["num_ddim_timesteps"])
    theirs.set_timesteps(steps)
    ours.set_timesteps(steps)
    assert torch.equal(theirs.timesteps, ours.timesteps)
    g, x = sampling.initial_noise(n, 7)
    abar = tch.alphas_cumprod()
    with torch.no_grad():
        for t in theirs.timesteps:
            eps = unet(x, t, None, class_labels=labels, timestep_cond=cond, return_dict=False)[0]
            state = g.get_state()
            x_theirs, d_theirs = theirs.step(eps, t, x, generator=g, return_dict=False)
            g2 = torch.Generator().set_state(state)
            x_ours, d_ours = ours.step(eps, t, x, generator=g2, return_dict=False)
            # Tolerance: denoised = c_skip·x + c_out·(x − σ·ε)/α, each product and sum rounded once in float32 in
            # each implementation (< 8 roundings of u = eps32/2 on a term bounded by `scale`), and the re-noised
            # x_prev = √ᾱ_prev·denoised + σ_prev·z adds the same again on its terms: ≤ 8·eps32·scale.
            a = float(abar[int(t)].sqrt())
            scale = x.abs() + x.abs() / a + (1 - a * a) ** 0.5 * eps.abs() / a
            assert torch.all((d_theirs - d_ours).abs() <= 8 * EPS32 * scale)
            assert torch.all((x_theirs - x_ours).abs() <= 8 * EPS32 * (scale + x_ours.abs()))
            x = x_theirs
    assert torch.isfinite(d_theirs).all() and d_theirs.shape == (n, 1, 8, 8)


def test_committed_weights_are_complete_and_small():
    """Protects the learned testbed's budget (docs/design.md §11.1, "Files"): every network the page evaluates is
    committed, with its JSON record, and all of them together stay under 20 MB (the repository carries them)."""
    from lcm_ref.testbed.digits.models import WEIGHT_FILES, WEIGHTS
    files = [WEIGHTS / name for name in WEIGHT_FILES.values()]
    files += [f.with_suffix(".json") for f in files]
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, missing
    assert sum(f.stat().st_size for f in files) < 20 * 2 ** 20


def _control_rows(ctl_fd, floor_hi):
    rows = [{"method": "floor", "steps": 50, "omega": 0.0, "space": sp, "fd": floor_hi / 2, "lo": 0.0,
             "hi": floor_hi} for sp in ("cnn", "pixels")]
    return rows + [{"method": "lcm_ideal", "steps": n, "omega": 0.0, "space": sp, "fd": ctl_fd, "lo": ctl_fd - 0.5,
                    "hi": ctl_fd + 0.5} for n in (2, 4, 8) for sp in ("cnn", "pixels")]


@pytest.mark.parametrize("ctl_fd, guided_lo, says", [
    (1.0, 5.0, "guidance compounds"),               # at the floor without guidance, above it with: guidance
    (4.0, 5.0, "not shown to come with guidance"),  # drifts without guidance too
    (1.0, 1.5, "not shown to come with guidance"),  # the guided run does not leave the floor either
])
def test_ideal_control_note_names_guidance_only_when_the_control_stays_at_the_floor(ctl_fd, guided_lo, says):
    from lcm_ref.studies import paper, paper_recipe
    t1 = [{"method": paper.IDEAL, "steps": n, "fd_ceiling": guided_lo + 1, "fd_ceiling_lo": guided_lo,
           "fd_ceiling_pix": guided_lo + 1, "fd_ceiling_pix_lo": guided_lo} for n in (1, 2, 4, 8)]
    note = paper_recipe.ideal_control_note(_control_rows(ctl_fd, floor_hi=2.0), t1)
    assert note.count(says) == 2 and "(cnn)" in note and "(pixels)" in note
