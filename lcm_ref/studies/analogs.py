"""The paper's figures as analogs on the analytic testbed. One function per CSV under ``reports/data/``.

Every function takes ``out_dir`` (where the CSV goes; written to a temporary file, then renamed) and ``fast``
(seconds, for tests and CI; the default full mode is what ``make report`` shows), returns its rows as a list of
dicts in column order, and writes them. ``run_all(out_dir, fast)`` runs them all and returns {csv name: rows}.

Common set-up (all seeds fixed):

- data: ``testbed.make_mixture()``, a standardized 2-D mixture of 6 Gaussians in 3 classes (mean 0, covariance I);
- config: ``ANALOG_CFG`` = diffusers' LCMScheduler defaults (SD's scaled_linear 0.00085/0.012, T = 1000,
  original_inference_steps = 50, timestep_scaling = 10, epsilon prediction);
- the student: ``distill.distill`` with k = 20 (num_ddim_timesteps = 50), on ``STUDENT_CFG`` (the same config with
  v-prediction: with epsilon prediction a small MLP's ε error is amplified by √((1−ᾱ)/ᾱ) ≈ 14.6 at t = 999 and the
  student stays poor at every step count; v-prediction avoids the amplification, as Marigold-LCM does);
- metrics: ``fd`` = Fréchet distance (squared, like FID) to the exact mean and covariance of the target
  distribution; ``w2`` = sliced W2 (not squared) to an independent reference sample of the target; both have a
  sampling-noise floor that the ``data`` rows of ``table1_analog.csv`` (``FLOOR_DRAWS`` independent data samples:
  the floor and its spread) and the ``floor`` row of ``endpoint.csv`` (one sample) measure. The data are
  standardized, so distances are in units of the data's standard deviation ("data units").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..testbed import distill as ds
from .. import reference as ref
from .. import testbed as tb
from ..config import LCMConfig
from ..errors import LCMRefError
from ..numerics import write_csv

__all__ = ["ANALOG_CFG", "STUDENT_CFG", "STEPS", "FLOOR_DRAWS", "AXIS_LABELS", "Sizes", "FULL", "FAST", "mixture",
           "table1", "skipping_step", "guidance", "spacing", "timestep_scaling_samples", "endpoint", "run_all",
           "plot_lines", "count_ticks", "noise_floor", "floor_note", "plot_skipping_step", "plot_table1",
           "plot_guidance", "plot_spacing",
           "plot_timestep_scaling_samples"]

ANALOG_CFG = LCMConfig()
STUDENT_CFG = ANALOG_CFG.replace(prediction_type="v_prediction")
STEPS = (1, 2, 4, 8)
#: independent data samples behind Table 1's noise floor (its mean and spread)
FLOOR_DRAWS = 16
DEFAULT_OUT = "reports/data"


@dataclass(frozen=True)
class Sizes:
    """Sample sizes, solver tolerance and distillation length of one mode."""
    n: int                  # generated samples per (method, steps)
    n_ref: int              # reference data sample for the sliced W2
    rtol: float             # solve_ivp rtol of the exact consistency function (atol = rtol·1e-3)
    iterations: int         # distillation iterations per run
    batch_size: int
    n_evals: int            # evaluations along a run (skipping_step)
    n_scaling: int          # samples of the timestep_scaling sweep


FULL = Sizes(n=2048, n_ref=8192, rtol=1e-8, iterations=3000, batch_size=256, n_evals=10, n_scaling=256)
FAST = Sizes(n=256, n_ref=1024, rtol=1e-6, iterations=150, batch_size=128, n_evals=3, n_scaling=64)


def _sizes(fast):
    return FAST if fast else FULL


def mixture() -> tb.GaussianMixture:
    """The analogs' data: ``testbed.make_mixture()`` (2-D, 3 classes × 2 components, standardized)."""
    return tb.make_mixture()


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------

def _metrics(x, target_moments, ref_sample):
    return {"fd": tb.frechet_distance(x, target_moments), "w2": tb.sliced_w2(x, ref_sample)}


def _lcm(cfg, model_fn, x_T, n_steps, rng, **timestep_kwargs):
    """LCM's multistep sampler (``ref.sample``) on ``ref.timesteps(cfg, n_steps, ...)`` with noises from rng."""
    sched = ref.timesteps(cfg, n_steps, **timestep_kwargs)
    return ref.sample(cfg, model_fn, x_T, sched, tb.draw_noises(rng, len(sched), x_T.shape))


_STUDENTS = {}


def _student(mix, sizes, num_ddim_timesteps=50, eval_fn=None, progress=True):
    """The distilled student for (sizes, N), trained once per process (same seed → the same network)."""
    key = (sizes, num_ddim_timesteps)
    if key not in _STUDENTS or eval_fn is not None:
        _STUDENTS[key] = ds.distill(mix, STUDENT_CFG, num_ddim_timesteps=num_ddim_timesteps,
                                    iterations=sizes.iterations, batch_size=sizes.batch_size, seed=0,
                                    eval_every=max(sizes.iterations // sizes.n_evals, 1) if eval_fn else 0,
                                    eval_fn=eval_fn, progress=progress)
    return _STUDENTS[key]


# ---------------------------------------------------------------------------------------------------------------
# The analogs
# ---------------------------------------------------------------------------------------------------------------

def table1(out_dir=DEFAULT_OUT, fast=False, baseline_spacing="trailing", progress=True):
    """Table 1 analog → ``table1_analog.csv``, columns ``method,steps,fd,w2``.

    Methods (1, 2, 4, 8 steps, each from the same x_T): ``lcm_exact`` (LCM's sampler with the exact consistency
    function, boundary end), ``lcm_student`` (the distilled student, ω = 0, classes drawn from p(c)),
    ``ddim_lcm_timesteps`` / ``dpmsolver++_lcm_timesteps`` (diffusers' DDIM and DPM-Solver++ 2M with the exact
    denoiser on LCM's timesteps) and ``ddim_<spacing>`` / ``dpmsolver++_<spacing>`` (on their own grid with
    ``baseline_spacing``, default trailing: the config's "leading" starts DDIM's 1-step run at t = 0, a no-op).
    ``FLOOR_DRAWS`` rows ``data`` with steps = 0: independent data samples of the same size, measured the same way
    (the metrics' noise floor; their spread is how far one sample's fd and w2 move by chance)."""
    sz, mix, cfg = _sizes(fast), mixture(), ANALOG_CFG
    rng = np.random.default_rng(1)
    moments, ref_sample = (mix.mean(), mix.cov()), mix.sample(sz.n_ref, rng)[0]
    floor_rng = np.random.default_rng(11)   # the first draw from rng as before, so the rows below are unchanged
    rows = [{"method": "data", "steps": 0, **_metrics(mix.sample(sz.n, r)[0], moments, ref_sample)}
            for r in [rng] + [floor_rng] * (FLOOR_DRAWS - 1)]
    student = _student(mix, sz, progress=progress).student
    exact = tb.consistency_model(mix, cfg, end="boundary", rtol=sz.rtol, atol=sz.rtol * 1e-3)
    den = tb.denoiser_model(mix, cfg)
    for n in tqdm(STEPS, desc="table1", disable=not progress):
        x_T = rng.standard_normal((sz.n, mix.d))
        labels = mix.sample_labels(sz.n, rng)
        noise_seed = int(rng.integers(2 ** 32))
        lcm_ts = ref.timesteps(cfg, n)
        outs = {
            "lcm_exact": _lcm(cfg, exact, x_T, n, np.random.default_rng(noise_seed)),
            "lcm_student": _lcm(STUDENT_CFG, ds.student_model(student, labels=labels), x_T, n,
                                np.random.default_rng(noise_seed)),
            "ddim_lcm_timesteps": tb.ddim_sample(cfg, den, x_T, n, timesteps=lcm_ts),
            f"ddim_{baseline_spacing}": tb.ddim_sample(cfg, den, x_T, n, spacing=baseline_spacing),
            "dpmsolver++_lcm_timesteps": tb.dpmsolver_sample(cfg, den, x_T, n, timesteps=lcm_ts),
            f"dpmsolver++_{baseline_spacing}": tb.dpmsolver_sample(cfg, den, x_T, n, spacing=baseline_spacing),
        }
        rows += [{"method": m, "steps": n, **_metrics(x, moments, ref_sample)} for m, x in outs.items()]
    rows.sort(key=lambda r: (r["method"] != "data", r["method"], r["steps"]))      # stable: draws keep their order
    write_csv(rows, Path(out_dir) / "table1_analog.csv")
    return rows


def skipping_step(out_dir=DEFAULT_OUT, fast=False, ks=(1, 5, 10, 20, 50), progress=True):
    """Fig. 3 analog → ``skipping_step.csv``, columns ``skipping_step,iteration,fd,w2,paired_rms,paired_median``.

    One distillation per skipping step k (num_ddim_timesteps = T // k), all from the same seed; every
    iterations/n_evals iterations the student draws 4-step LCM samples from a fixed x_T and fixed noises (ω = 0).
    ``paired_rms`` is the RMS distance to the exact consistency function's 4-step samples from the same x_T and
    noises and the same class labels (the class-conditional map), ``paired_median`` the median of that distance
    (the RMS is dominated by the few samples sent to another mixture component; the median is the typical map
    error). Paired measures have no sampling-noise floor: they keep falling after fd and w2 reach theirs."""
    sz, mix = _sizes(fast), mixture()
    T = STUDENT_CFG.num_train_timesteps
    rng = np.random.default_rng(2)
    moments, ref_sample = (mix.mean(), mix.cov()), mix.sample(sz.n_ref, rng)[0]
    x_T = rng.standard_normal((sz.n, mix.d))
    labels = mix.sample_labels(sz.n, rng)
    noises = tb.draw_noises(rng, 4, x_T.shape)
    sched = ref.timesteps(STUDENT_CFG, 4)
    # the student is class-conditional (labels from p(c), ω = 0): pair it with the exact class-conditional map
    exact = ref.sample(STUDENT_CFG, tb.consistency_model(mix, STUDENT_CFG, labels=labels, rtol=sz.rtol,
                                                         atol=sz.rtol * 1e-3), x_T, sched, noises)

    def evaluate(result):
        x = ref.sample(STUDENT_CFG, ds.student_model(result.student, labels=labels), x_T, sched, noises)
        dist = np.linalg.norm(x - exact, axis=1)
        return {**_metrics(x, moments, ref_sample), "paired_rms": float(np.sqrt(np.mean(dist ** 2))),
                "paired_median": float(np.median(dist))}

    rows = []
    for k in ks:
        if not (isinstance(k, int) and 1 <= k <= T and k == T // (T // k)):
            raise LCMRefError("ks", k, f"skipping steps k with k = T // (T // k), T = {T}")
        res = _student(mix, sz, num_ddim_timesteps=T // k, eval_fn=evaluate, progress=progress)
        rows += [{"skipping_step": k, **e} for e in res.evals]
    write_csv(rows, Path(out_dir) / "skipping_step.csv")
    return rows


def guidance(out_dir=DEFAULT_OUT, fast=False, omegas=(0.0, 0.5, 1.0, 2.0, 3.0), progress=True):
    """Fig. 4 analog → ``guidance.csv``, columns ``omega,steps,fd,accuracy``.

    The distilled student sampled with guidance ω as input (trained on ω ~ U[0, 3]) for each class c: ``fd`` is the
    Fréchet distance to p(x | c) (exact moments), averaged over classes; ``accuracy`` the fraction of samples whose
    Bayes class under the clean data, argmax p(c | x), is c (the CLIP-score analog). Same x_T and noises for every ω."""
    sz, mix = _sizes(fast), mixture()
    student = _student(mix, sz, progress=progress).student
    rng = np.random.default_rng(3)
    per_class = sz.n // mix.n_classes
    draws = {n: (rng.standard_normal((per_class, mix.d)), int(rng.integers(2 ** 32))) for n in STEPS}
    rows = []
    for omega in tqdm(omegas, desc="guidance", disable=not progress):
        for n in STEPS:
            x_T, noise_seed = draws[n]
            fds, hits = [], 0
            for c in range(mix.n_classes):
                model = ds.student_model(student, labels=np.full(per_class, c), omega=omega)
                x = _lcm(STUDENT_CFG, model, x_T, n, np.random.default_rng(noise_seed))
                cond = mix.conditional(c)
                fds.append(tb.frechet_distance(x, (cond.mean(), cond.cov())))
                hits += int(np.sum(np.argmax(mix.class_posterior(x), axis=1) == c))
            rows.append({"omega": float(omega), "steps": n, "fd": float(np.mean(fds)),
                         "accuracy": hits / (per_class * mix.n_classes)})
    write_csv(rows, Path(out_dir) / "guidance.csv")
    return rows


def spacing(out_dir=DEFAULT_OUT, fast=False, original_steps=(50, 30), steps=(1, 2, 4), progress=True):
    """Spacing analog → ``spacing.csv``, columns
    ``spacing,original_inference_steps,method,steps,timesteps,fd,w2``.

    LCM's sampler on the LCM grid (spacing ``lcm``) and on origin grids built with ``leading`` / ``linspace`` /
    ``trailing`` (``ref.timesteps(cfg, n, spacing=...)``), with the exact consistency function (``lcm_exact``) and
    with the student (``lcm_student``, trained on the k = 20 grid). ``timesteps`` lists the schedule. With an exact
    consistency function every grid is exact, so differences come from the first timestep's prior and, for the
    student, from timesteps it was not trained on. Same x_T and noises for every grid."""
    sz, mix = _sizes(fast), mixture()
    student = _student(mix, sz, progress=progress).student
    rng = np.random.default_rng(4)
    moments, ref_sample = (mix.mean(), mix.cov()), mix.sample(sz.n_ref, rng)[0]
    n_exact = sz.n // 4     # the exact consistency function dominates the cost
    rows = []
    for orig in original_steps:
        cfg = ANALOG_CFG.replace(original_inference_steps=orig)
        scfg = STUDENT_CFG.replace(original_inference_steps=orig)
        exact = tb.consistency_model(mix, cfg, rtol=sz.rtol, atol=sz.rtol * 1e-3)
        for n in steps:
            x_T = rng.standard_normal((sz.n, mix.d))
            labels = mix.sample_labels(sz.n, rng)
            noise_seed = int(rng.integers(2 ** 32))
            done = {}   # grids that coincide (the LCM grid is trailing when T % orig == 0) are computed once
            for sp in tqdm((None, "leading", "linspace", "trailing"), desc=f"spacing orig={orig} n={n}",
                           disable=not progress):
                ts = ref.timesteps(cfg, n, spacing=sp)
                common = {"spacing": sp or "lcm", "original_inference_steps": orig}
                key = tuple(ts.tolist())
                if key not in done:
                    done[key] = _lcm(cfg, exact, x_T[:n_exact], n, np.random.default_rng(noise_seed), spacing=sp)
                rows.append({**common, "method": "lcm_exact", "steps": n, "timesteps": " ".join(map(str, ts)),
                             **_metrics(done[key], moments, ref_sample)})
                x = _lcm(scfg, ds.student_model(student, labels=labels), x_T, n, np.random.default_rng(noise_seed),
                         spacing=sp)
                rows.append({**common, "method": "lcm_student", "steps": n, "timesteps": " ".join(map(str, ts)),
                             **_metrics(x, moments, ref_sample)})
    write_csv(rows, Path(out_dir) / "spacing.csv")
    return rows


def timestep_scaling_samples(out_dir=DEFAULT_OUT, fast=False, scalings=None, steps=(1, 4), progress=True):
    """Boundary-condition effect → ``timestep_scaling_samples.csv``, columns
    ``timestep_scaling,steps,mean_abs_err,max_abs_err,c_skip_last``.

    LCM's sampler with the exact consistency function Φ as model output (prediction_type "sample"), for each
    ``timestep_scaling`` s, against the ideal sampler whose every step returns Φ itself (c_skip = 0, c_out = 1), from
    the same x_T and noises. Each step's error is c_skip·(x − Φ) + (c_out − 1)·Φ with c_skip ≈ σ_data²/(t·s)² and
    1 − c_out ≈ c_skip/2, so the error ∝ 1/s² until t_last·s approaches σ_data = 0.5 (s ≈ 0.01 at 4 steps, where
    t_last = 259). ``c_skip_last`` is c_skip at the last timestep. Φ is solved with rtol 1e-11 in both modes: the
    errors at large s are far below the usual solver tolerance. ``scalings`` default: 10⁻³ … 10³ by decades
    (fast: 10⁻³, 1, 10, 100)."""
    sz, mix = _sizes(fast), mixture()
    if scalings is None:
        scalings = (1e-3, 1.0, 10.0, 100.0) if fast else tuple(10.0 ** np.arange(-3, 4))
    rng = np.random.default_rng(5)
    rtol = 1e-11
    base = ANALOG_CFG.replace(prediction_type="sample")
    solve = tb.consistency_model(mix, base, rtol=rtol, atol=rtol * 1e-3)
    cache = {}

    def phi(x, t):  # identical inputs recur (the first step sees the same x_T for every s): solve each once
        key = (t, x.tobytes())
        if key not in cache:
            cache[key] = solve(x, t)
        return cache[key].copy()

    rows = []
    for n in steps:
        x_T = rng.standard_normal((sz.n_scaling, mix.d))
        sched = ref.timesteps(base, n)
        noises = tb.draw_noises(rng, n, x_T.shape)
        # the ideal sampler: x ← Φ(x, τ_1); x ← Φ(√ᾱ·x + √(1−ᾱ)·z, τ_i)
        x = x_T
        for i, t in enumerate(sched):
            x = phi(x, int(t))
            if i + 1 < len(sched):
                c, d = ref.noise_coefficients(base, int(sched[i + 1]))
                x = c * x + d * noises[i]
        ideal = x
        for s in tqdm(scalings, desc=f"timestep_scaling n={n}", disable=not progress):
            cfg = base.replace(timestep_scaling=float(s))
            err = np.abs(ref.sample(cfg, phi, x_T, sched, noises) - ideal)
            rows.append({"timestep_scaling": float(s), "steps": n, "mean_abs_err": float(err.mean()),
                         "max_abs_err": float(err.max()),
                         "c_skip_last": float(ref.boundary_scalings(cfg, int(sched[-1]))[0])})
    write_csv(rows, Path(out_dir) / "timestep_scaling_samples.csv")
    return rows


def endpoint(out_dir=DEFAULT_OUT, fast=False, progress=True):
    """Which end point: → ``endpoint.csv``, columns ``end,s_end,fd,w2,mean_abs_diff``.

    The exact consistency function from t = 999 (one step) to clean data (``data``, s = 0) and to LCM's boundary
    at timestep 0 (``boundary``, s = s_0), from the same x_T, measured against the clean data; ``mean_abs_diff`` is
    the mean |Φ_end − Φ_data|. Row ``floor``: an independent data sample (s_end = 0, the noise floor)."""
    sz, mix, cfg = _sizes(fast), mixture(), ANALOG_CFG
    rng = np.random.default_rng(6)
    moments, ref_sample = (mix.mean(), mix.cov()), mix.sample(sz.n_ref, rng)[0]
    x_T = rng.standard_normal((sz.n, mix.d))
    t = int(ref.timesteps(cfg, 1)[0])
    out = {e: tb.consistency_function(mix, cfg, x_T, t, end=e, rtol=sz.rtol, atol=sz.rtol * 1e-3) for e in tb.ENDS}
    rows = [{"end": e, "s_end": tb.end_noise_level(cfg, e), **_metrics(out[e], moments, ref_sample),
             "mean_abs_diff": float(np.mean(np.abs(out[e] - out["data"])))} for e in tb.ENDS]
    rows.append({"end": "floor", "s_end": 0.0, **_metrics(mix.sample(sz.n, rng)[0], moments, ref_sample),
                 "mean_abs_diff": ""})
    write_csv(rows, Path(out_dir) / "endpoint.csv")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Figures of notebooks/paper_figures.ipynb and timestep_scaling.ipynb (each returns its matplotlib figure)
# ---------------------------------------------------------------------------------------------------------------

#: columns that count something (steps, iterations, a skipping step): their axes get integer ticks only
COUNT_COLUMNS = ("steps", "iteration", "skipping_step")
#: how a numeric group is named in a legend
LABELS = {"skipping_step": "k"}
#: axis labels in words, with units, for the CSV columns the figures plot (data units: the data's standard deviation)
AXIS_LABELS = {
    "fd": "Fréchet distance to the target\n(squared, data units²)",
    "w2": "sliced W2 distance to a target sample\n(data units)",
    "paired_rms": "RMS distance to the exact map's sample\n(same x_T and noises; data units)",
    "steps": "sampling steps",
    "iteration": "distillation iteration",
    "omega": "guidance scale ω",
    "accuracy": "class accuracy\n(fraction whose Bayes class is the one asked)",
}
#: panel titles per plotted quantity
TITLES = {"fd": "Fréchet distance (lower is better)", "w2": "sliced W2 distance (lower is better)",
          "paired_rms": "distance to the exact consistency map", "accuracy": "class accuracy (CLIP-score analog)"}


def _group_key(g):
    """Numbers in numeric order (1, 5, 10, 20, 50, not 1, 10, 20, 5, 50), then strings in alphabetical order."""
    return (0, float(g), "") if isinstance(g, (int, float)) and not isinstance(g, bool) else (1, 0.0, str(g))


def _label(group, g):
    return g if isinstance(g, str) else f"{LABELS.get(group, group)} = {g:g}"


def count_ticks(ax, values, axis="x"):
    """Ticks of a count axis at integers only: at the values themselves when there are few (1, 2, 4, 8 on a log
    axis too, written as plain integers), else matplotlib's integer locator."""
    import matplotlib.ticker as mt
    which = ax.xaxis if axis == "x" else ax.yaxis
    vals = sorted({int(v) for v in values})
    if len(vals) <= 10:
        which.set_major_locator(mt.FixedLocator(vals))
        which.set_minor_locator(mt.NullLocator())
        which.set_major_formatter(mt.FuncFormatter(lambda v, _: f"{v:.0f}"))
    else:
        which.set_major_locator(mt.MaxNLocator(nbins=5, integer=True))


def plot_lines(ax, rows, x, y, group, *, logy=False, logx=False, legend=True):
    """One line of ``y`` against ``x`` per value of ``group``, groups in numeric order; integer ticks when ``x`` is
    a count (``COUNT_COLUMNS``)."""
    for g in sorted({r[group] for r in rows}, key=_group_key):
        pts = sorted((r[x], r[y]) for r in rows if r[group] == g)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=_label(group, g))
    ax.set(xlabel=AXIS_LABELS[x], ylabel=AXIS_LABELS[y], yscale="log" if logy else "linear")
    if logx:
        ax.set_xscale("log", base=2)
    if x in COUNT_COLUMNS:
        count_ticks(ax, [r[x] for r in rows])
    if legend:
        ax.legend(fontsize=7)


def plot_skipping_step(rows):
    """Fig. 3 analog: fd, w2 and paired_rms of the 4-step student along distillation, one line per k."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    for ax, y in zip(axes, ("fd", "w2", "paired_rms")):
        plot_lines(ax, rows, "iteration", y, "skipping_step", logy=True)
        ax.set_title(TITLES[y], fontsize=9)
    fig.suptitle("4-step samples of the student along distillation, per skipping step k")
    fig.tight_layout()
    return fig


def noise_floor(rows, y) -> dict:
    """Mean, standard deviation, min, max and count of ``y`` over the ``data`` rows (independent data samples)."""
    v = np.array([float(r[y]) for r in rows if r["method"] == "data"])
    if not len(v):
        return {}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "n": len(v)}


def floor_note(rows) -> str:
    """A sentence for the page: the noise floor of fd and w2 as mean ± s.d. over the data draws."""
    f = {y: noise_floor(rows, y) for y in ("fd", "w2")}
    if not f["fd"]:
        return ""
    return (f"Noise floor ({f['fd']['n']} independent data samples of the same size, measured like the methods): "
            + "; ".join(f"{y} {f[y]['mean']:.3g} ± {f[y]['sd']:.2g} (s.d.; range {f[y]['min']:.3g}–"
                        f"{f[y]['max']:.3g})" for y in ("fd", "w2"))
            + ". A method whose value lies in this band is as close to the target as the data themselves; "
              "differences inside it are sampling noise.")


def plot_table1(rows):
    """Table 1 analog: fd and w2 against steps (1, 2, 4, 8), one line per method; grey band: the noise floor, mean
    ± 1 s.d. over the ``data`` draws (dotted line: their mean)."""
    import matplotlib.pyplot as plt
    runs = [r for r in rows if r["method"] != "data"]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 3.8))
    for ax, y in zip(axes, ("fd", "w2")):
        plot_lines(ax, runs, "steps", y, "method", logy=True, logx=True, legend=False)
        f = noise_floor(rows, y)
        if f:
            ax.axhspan(max(f["mean"] - f["sd"], f["min"]), f["mean"] + f["sd"], color="0.6", alpha=0.3, lw=0,
                       label=f"noise floor (data vs target):\nmean ± s.d. of {f['n']} draws")
            ax.axhline(f["mean"], color="k", lw=0.7, ls=":")
        ax.set_title(f"{TITLES[y]} against steps", fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center right")
    fig.suptitle("Table 1 analog: few-step samplers against the exact target (2-D mixture)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.83, 1))       # the right sixth holds the legend, off the lines
    return fig


def plot_guidance(rows):
    """Fig. 4 analog: class-conditional FD and class accuracy against ω, one line per step count."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_lines(axes[0], rows, "omega", "fd", "steps", logy=True)
    plot_lines(axes[1], rows, "omega", "accuracy", "steps")
    axes[0].set_title("Fréchet distance to p(x | c), mean over classes", fontsize=9)
    axes[1].set_title("class accuracy (the CLIP-score analog)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_spacing(rows):
    """Spacing analog: fd against steps per origin-grid spacing, one panel per (method, original_inference_steps)."""
    import matplotlib.pyplot as plt
    panels = sorted({(r["method"], r["original_inference_steps"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), sharey=True, squeeze=False)
    for ax, (method, orig) in zip(axes[0], panels):
        plot_lines(ax, [r for r in rows if (r["method"], r["original_inference_steps"]) == (method, orig)],
                   "steps", "fd", "spacing", logy=True)
        ax.set_title(f"{method}, original_inference_steps={orig}", fontsize=8)
    for ax in axes[0][1:]:
        ax.set_ylabel("")          # shared y: the first panel's label says it
    fig.suptitle("Fréchet distance against steps, per spacing of the origin grid", fontsize=10)
    fig.tight_layout()
    return fig


def plot_timestep_scaling_samples(rows):
    """|sample − ideal sample| against timestep_scaling (log-log), per step count: mean (line) and max (triangles);
    dashed: the measured mean at the largest s carried back along 1/s²."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in sorted({r["steps"] for r in rows}):
        rs = sorted((r for r in rows if r["steps"] == n), key=lambda r: r["timestep_scaling"])
        s = np.array([r["timestep_scaling"] for r in rs])
        word = "step" if n == 1 else "steps"
        line, = ax.loglog(s, [r["mean_abs_err"] for r in rs], "o-", label=f"{n} {word}: mean |δx|")
        ax.loglog(s, [r["max_abs_err"] for r in rs], "^", color=line.get_color(), ms=4, label=f"{n} {word}: max |δx|")
        ax.loglog(s, rs[-1]["mean_abs_err"] * (s[-1] / s) ** 2, "--", color=line.get_color(), lw=0.8)
    ax.axvline(10.0, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="timestep_scaling s (dotted: 10, the released value)",
           ylabel="|sample − ideal sample| (data units)")
    ax.set_title("error the boundary condition leaves in LCM's samples; dashed: ∝ 1/s²", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


ANALOGS = {
    "table1_analog.csv": table1,
    "skipping_step.csv": skipping_step,
    "guidance.csv": guidance,
    "spacing.csv": spacing,
    "timestep_scaling_samples.csv": timestep_scaling_samples,
    "endpoint.csv": endpoint,
}


def run_all(out_dir=DEFAULT_OUT, fast=False, progress=True) -> dict:
    """Run every analog (the k = 20 student is trained once and shared); returns {csv name: rows}."""
    # skipping_step first: its k = 20 run is the student the other analogs reuse
    order = ["skipping_step.csv", "table1_analog.csv", "guidance.csv", "spacing.csv",
             "timestep_scaling_samples.csv", "endpoint.csv"]
    return {name: ANALOGS[name](out_dir=out_dir, fast=fast, progress=progress) for name in order}
