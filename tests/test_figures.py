"""The report figures read without the CSV (issue 16): every panel that plots data has a title, every axis label is
words (never a raw CSV column name like ``fd`` or ``paired_rms``), and the Table 1 noise floor is a band from
several draws. Figures are built from small synthetic rows: no training, no sampling."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lcm_ref.studies import accuracy as ACC  # noqa: E402
from lcm_ref.studies import analogs as A  # noqa: E402
from lcm_ref.studies import behaviour as B  # noqa: E402
from lcm_ref.studies import bench  # noqa: E402
from lcm_ref.studies import paper as P  # noqa: E402
from lcm_ref.studies import paper_plots as PP  # noqa: E402
from lcm_ref.testbed.digits import lcd, sampling  # noqa: E402


def _rows(keys, **values):
    """Every combination of the grouping ``keys`` (name → values), each with the measured ``values`` (name → f(i))."""
    names = list(keys)
    out = []
    for i, combo in enumerate(itertools.product(*keys.values())):
        out.append({**dict(zip(names, combo)), **{k: f(i) for k, f in values.items()}})
    return out


def _fd(i):
    return 1.0 + 0.1 * i


FD_BAND = dict(fd=_fd, fd_lo=lambda i: 0.9 + 0.1 * i, fd_hi=lambda i: 1.2 + 0.1 * i,
               class_score=lambda i: 0.9, cs_lo=lambda i: 0.85, cs_hi=lambda i: 0.95)


def _figures():
    """(name, figure, the CSV columns its rows had) for every report figure built from lcm_ref."""
    t1 = (_rows({"method": ["data"] * 3, "steps": [0]}, fd=lambda i: 1e-3 * (i + 1), w2=lambda i: 0.05)
          + _rows({"method": ["lcm_exact", "ddim_trailing"], "steps": A.STEPS}, fd=_fd, w2=_fd))
    sk = _rows({"skipping_step": [1, 20], "iteration": [0, 10, 20]}, fd=_fd, w2=_fd, paired_rms=_fd,
               paired_median=_fd)
    gd = _rows({"steps": [1, 4], "omega": [0.0, 1.0]}, fd=_fd, accuracy=lambda i: 0.5)
    sp = _rows({"method": ["lcm_exact"], "original_inference_steps": [30, 50], "spacing": ["lcm", "trailing"],
                "steps": [1, 2, 4]}, fd=_fd, w2=_fd)
    ts = _rows({"steps": [1, 4], "timestep_scaling": [1.0, 10.0, 100.0]}, mean_abs_err=_fd, max_abs_err=_fd)
    pt1 = _rows({"method": list(sampling.METHODS) + [P.IDEAL], "steps": P.STEPS}, **FD_BAND) + \
        _rows({"method": ["teacher_ddim_50"], "steps": [50]}, **FD_BAND)
    psk = _rows({"solver": list(lcd.SOLVERS), "k": [1, 20], "iteration": [0, 100]}, fd_teacher=_fd,
                fd_teacher_lo=_fd, fd_teacher_hi=_fd, **FD_BAND)
    pgd = _rows({"method": ["lcm"], "steps": P.STEPS, "omega": [2.0, 8.0]}, **FD_BAND) + \
        _rows({"method": ["teacher_dpmsolver++"], "steps": [8], "omega": [2.0, 8.0]}, **FD_BAND)
    pts = _rows({"timestep_scaling": P.SCALINGS, "steps": P.STEPS}, **FD_BAND)
    grids = {(m, n): np.zeros((10, 8, 8)) for m in sampling.METHODS for n in P.STEPS}
    grids[("teacher_ddim_50", 50)] = np.zeros((10, 8, 8))
    grids[("real (test split)", 0)] = np.zeros((10, 8, 8))
    bn = [{"benchmark": "step", "shape": "1x4x64x64", "speedup": 3.0, "ratio_to_limit": 1.2}]
    se = _rows({"impl": ["diffusers", "TorchLCM"], "dtype": ["float32"], "prediction_type": list(ACC.PREDICTION_TYPES),
                "beta_schedule": ["scaled_linear"], "t": [999, 499]},
               scaled_denoised=_fd, scaled_prev=_fd, error=lambda i: "", overflow=lambda i: 0)
    sw = _rows({"impl": ["diffusers"], "dtype": ["float32"], "timestep_scaling": [0.1, 10.0, 1e20, 1e300]},
               max_scaled_denoised=_fd, error=lambda i: "")
    bd = _rows({"timestep_scaling": [1.0, 10.0], "t": [1, 10, 100]}, c_skip=_fd, c_skip_closed_form=_fd,
               one_minus_c_out=_fd, one_minus_c_out_closed_form=_fd, ref_c_out=lambda i: 0.5,
               diffusers_fp32_c_skip=_fd, diffusers_fp32_c_out=lambda i: 0.5)
    sel = [{"n": n, "diffusers LCMScheduler (= lcm_ref)": [999, 499][:n], "TCD": [999, 500][:n],
            "TCD s (eta=0.3)": [1, 2][:n]} for n in (1, 2)]
    curves, snr_rows, scaling_rows = B.schedule_curves_figure(configs=B.CURVE_CONFIGS[:1], scalings=(10.0,))
    return [
        ("analogs.plot_table1", A.plot_table1(t1), t1),
        ("analogs.plot_skipping_step", A.plot_skipping_step(sk), sk),
        ("analogs.plot_guidance", A.plot_guidance(gd), gd),
        ("analogs.plot_spacing", A.plot_spacing(sp), sp),
        ("analogs.plot_timestep_scaling_samples", A.plot_timestep_scaling_samples(ts), ts),
        ("paper_plots.figure_table1", PP.figure_table1(pt1, 0.9), pt1),
        ("paper_plots.figure_skipping_step", PP.figure_skipping_step(psk), psk),
        ("paper_plots.figure_guidance", PP.figure_guidance(pgd), pgd),
        ("paper_plots.figure_timestep_scaling", PP.figure_timestep_scaling(pts), pts),
        ("paper_plots.figure_sample_grid", PP.figure_sample_grid(grids), [{"method": 0, "steps": 0, "class": 0}]),
        ("bench.plot", bench.plot(bn, "cpu"), bn),
        ("accuracy.plot_scaled_errors", ACC.plot_scaled_errors(se, "scaled_linear"), se),
        ("accuracy.plot_scaling_sweep", ACC.plot_scaling_sweep(sw), sw),
        ("accuracy.plot_boundary", ACC.plot_boundary(bd), bd),
        ("behaviour.plot_selection", B.plot_selection(sel, ns=(1, 2)), sel),
        ("behaviour.schedule_curves_figure", curves, snr_rows + scaling_rows),
    ]


FIGURES = _figures()


def _plots_data(ax):
    return bool(ax.lines or ax.collections or ax.patches) and ax.get_visible() and ax.axison


PLOTS = [f for f in FIGURES if f[0] != "paper_plots.figure_sample_grid"]     # the grid shows images: its own test below


@pytest.mark.parametrize("name,fig,rows", PLOTS, ids=[f[0] for f in PLOTS])
def test_figure_text_is_words(name, fig, rows):
    """Each panel that plots data has a title and an x label (its own, or that of the panel it shares x with); no
    axis label is a raw CSV column name; the figure has a y label (shared y axes label only their first panel)
    unless its y axis is categories named by the ticks."""
    columns = {c for r in rows for c in r}
    data_axes = [ax for ax in fig.axes if _plots_data(ax)]
    assert data_axes, name
    for ax in fig.axes:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label.strip() not in columns, f"{name}: axis label {label!r} is a CSV column name"
    for ax in data_axes:
        assert ax.get_title().strip(), f"{name}: a panel has no title"
        shared = ax.get_shared_x_axes().get_siblings(ax)          # a shared x axis is labelled once, below
        assert any(a.get_xlabel().strip() for a in shared), f"{name}: panel {ax.get_title()!r} has no x label"
    if name not in ("bench.plot", "behaviour.plot_selection"):       # their y axes are categories, named by ticks
        assert any(ax.get_ylabel().strip() for ax in data_axes), name
    plt.close(fig)


def test_the_check_catches_a_raw_label():
    """Mutant: a panel labelled with the column name "fd" and no title fails the rule above."""
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    ax.set(xlabel="sampling steps", ylabel="fd")
    with pytest.raises(AssertionError, match="is a CSV column name"):
        test_figure_text_is_words("mutant", fig, [{"steps": 1, "fd": 1.0}])
    ax.set(ylabel="Fréchet distance")
    with pytest.raises(AssertionError, match="has no title"):
        test_figure_text_is_words("mutant", fig, [{"steps": 1, "fd": 1.0}])


def test_table1_floor_is_a_band_over_draws():
    """Table 1's noise floor is drawn as mean ± s.d. over the data rows (not one draw), and the page's note gives
    both, with the number of draws."""
    rows = [{"method": "data", "steps": 0, "fd": v, "w2": v} for v in (1.0, 2.0, 3.0)] + \
        [{"method": "lcm_exact", "steps": s, "fd": 5.0, "w2": 5.0} for s in (1, 2)]
    f = A.noise_floor(rows, "fd")
    assert (f["mean"], f["sd"], f["n"]) == (2.0, 1.0, 3)
    fig = A.plot_table1(rows)
    spans = [p for p in fig.axes[0].patches if p.get_label().startswith("noise floor")]
    assert len(spans) == 1
    ys = spans[0].get_path().transformed(spans[0].get_patch_transform()).vertices[:, 1]
    assert (min(ys), max(ys)) == (1.0, 3.0)
    assert "3 independent data samples" in A.floor_note(rows) and "2 ± 1" in A.floor_note(rows)
    plt.close(fig)


def test_analog_floor_uses_several_draws():
    """table1 writes FLOOR_DRAWS ≥ 10 data rows (independent samples), so the floor has a spread."""
    assert A.FLOOR_DRAWS >= 10


def test_sample_grid_says_what_its_last_row_holds():
    """The sample grid's caption names both references in its last row: the teacher and the real digits."""
    fig = dict((n, f) for n, f, _ in FIGURES)["paper_plots.figure_sample_grid"]
    text = fig.get_suptitle()
    assert "teacher" in text and "real" in text
    last = [ax.get_title() for ax in fig.axes[-len(P.STEPS):] if ax.axison]
    assert last == ["teacher, DDIM 50 steps", "real (test split)"]
    rows = len(fig.axes) // len(P.STEPS)
    assert all(fig.axes[i * len(P.STEPS)].get_ylabel() for i in range(rows)), "every row of the grid is named"
