"""The figures of the learned testbed (``notebooks/paper_figures.ipynb``): each takes the rows of one
``lcm_ref.studies.paper`` evaluation and returns a matplotlib figure; the notebook only calls these and shows them.
Method names in words are ``paper.LABELS``."""

from __future__ import annotations

import numpy as np

from ..testbed.digits import lcd, sampling
from .paper import GUIDANCE_TEACHER_STEPS, IDEAL, KS, LABELS, OMEGA, SCALINGS, STEPS

__all__ = ["FD_TEST", "FD_TEACHER", "CLASS_SCORE", "STEPS_LABEL", "figure_table1", "figure_skipping_step",
           "figure_guidance", "figure_timestep_scaling", "figure_sample_grid"]

#: axis labels in words (FD: the FID formula on the classifier's 64-d features, squared feature units)
FD_TEST = "Fréchet distance to the test digits\n(classifier features, squared)"
FD_TEACHER = "Fréchet distance to the teacher's\n50-step samples (features, squared)"
CLASS_SCORE = "class score (classifier's probability\nof the requested class)"
STEPS_LABEL = "sampling steps"


def _band(ax, xs, ys, lo, hi, label, marker="o-"):
    ax.plot(xs, ys, marker, ms=3, label=label)
    ax.fill_between(xs, lo, hi, alpha=0.15)


def figure_table1(rows, floor=None):
    """FD and class score against steps, one line per method with its interval band; the ceiling and the
    real-vs-real floor as horizontal lines."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for meth in sampling.METHODS + (IDEAL,):
        rs = sorted((r for r in rows if r["method"] == meth), key=lambda r: r["steps"])
        if not rs:
            continue
        xs, marker = [r["steps"] for r in rs], "s:" if meth == IDEAL else "o-"
        _band(axes[0], xs, [r["fd"] for r in rs], [r["fd_lo"] for r in rs], [r["fd_hi"] for r in rs], LABELS[meth],
              marker)
        _band(axes[1], xs, [r["class_score"] for r in rs], [r["cs_lo"] for r in rs], [r["cs_hi"] for r in rs],
              LABELS[meth], marker)
    ceil = next((r for r in rows if r["method"] == "teacher_ddim_50"), None)
    for ax, key in zip(axes, ("fd", "class_score")):
        if ceil:
            ax.axhline(ceil[key], color="k", lw=0.8, ls="--", label=LABELS["teacher_ddim_50"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(STEPS), [str(s) for s in STEPS])
        ax.set_xlabel(STEPS_LABEL)
    if floor is not None:
        axes[0].axhline(floor, color="k", lw=0.8, ls=":", label="real vs real (floor)")
    axes[0].set_title(f"FID analog against steps (ω = {OMEGA:g}; bands: 95 % intervals)", fontsize=9)
    return _fd_and_score_axes(fig, axes, "class score against steps (the CLIP-score analog)")


def _fd_and_score_axes(fig, axes, score_title):
    """Labels, titles and legend of a two-panel figure: FD to the test split (log) left, class score right."""
    axes[0].set(ylabel=FD_TEST, yscale="log")
    if not axes[0].get_title():
        axes[0].set_title(f"Fréchet distance to the test digits (ω = {OMEGA:g})", fontsize=9)
    axes[1].set(ylabel=CLASS_SCORE)
    axes[1].set_title(score_title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_skipping_step(rows):
    """Fig. 3: 4-step FD along distillation, one column per solver, one line per k with its interval band; top row
    FD to the test split, bottom row FD to the teacher's own samples at the same ω."""
    import matplotlib.pyplot as plt
    solvers = [s for s in lcd.SOLVERS if any(r["solver"] == s for r in rows)] or list(lcd.SOLVERS[:1])
    fig, axes = plt.subplots(2, len(solvers), figsize=(4 * len(solvers), 6.2), sharey="row", squeeze=False)
    for j, solver in enumerate(solvers):
        for k in KS:
            rs = sorted((r for r in rows if r["solver"] == solver and r["k"] == k), key=lambda r: r["iteration"])
            if not rs:
                continue
            xs = [r["iteration"] for r in rs]
            for i, key in enumerate(("fd", "fd_teacher")):
                _band(axes[i][j], xs, [r[key] for r in rs], [r[f"{key}_lo"] for r in rs],
                      [r[f"{key}_hi"] for r in rs], f"k = {k}", ".-")
        axes[0][j].set(xlabel="LCD iteration (distillation step)", yscale="log")
        axes[0][j].set_title(f"{solver} teacher: FD to the test digits", fontsize=9)
        axes[1][j].set(xlabel="LCD iteration (distillation step)", yscale="log")
        axes[1][j].set_title(f"{solver} teacher: FD to its own samples", fontsize=9)
    axes[0][0].set_ylabel(f"{FD_TEST}\n4-step samples, ω = {OMEGA:g}", fontsize=8)
    axes[1][0].set_ylabel(f"{FD_TEACHER}\n4-step samples, ω = {OMEGA:g}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_guidance(rows):
    """Fig. 4: FD and class score against ω, one line per step count of the student, with interval bands; the
    teacher (DPM-Solver++) dashed."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    groups = [(f"LCM, {n} step{'s' * (n > 1)}", [r for r in rows if r.get("method", "lcm") == "lcm"
                                                  and r["steps"] == n], "o-") for n in STEPS]
    groups.append((f"teacher, DPM-Solver++ {GUIDANCE_TEACHER_STEPS} steps",
                   [r for r in rows if r.get("method") == "teacher_dpmsolver++"], "k.--"))
    for label, rs, marker in groups:
        rs = sorted(rs, key=lambda r: r["omega"])
        if not rs:
            continue
        xs = [r["omega"] for r in rs]
        _band(axes[0], xs, [r["fd"] for r in rs], [r["fd_lo"] for r in rs], [r["fd_hi"] for r in rs], label, marker)
        _band(axes[1], xs, [r["class_score"] for r in rs], [r["cs_lo"] for r in rs], [r["cs_hi"] for r in rs],
              label, marker)
    axes[0].set(xlabel="guidance scale ω", ylabel=FD_TEST)
    axes[0].set_title("Fréchet distance to the test digits against ω (bands: 95 % intervals)", fontsize=9)
    axes[1].set(xlabel="guidance scale ω", ylabel=CLASS_SCORE)
    axes[1].set_title("class score against ω (the CLIP-score analog)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_timestep_scaling(rows):
    """FD and class score against steps for the students distilled with each timestep_scaling."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for s in SCALINGS:
        rs = sorted((r for r in rows if r["timestep_scaling"] == s), key=lambda r: r["steps"])
        xs = [r["steps"] for r in rs]
        _band(axes[0], xs, [r["fd"] for r in rs], [r["fd_lo"] for r in rs], [r["fd_hi"] for r in rs],
              f"s = {s:g}" + (" (released)" if s == 10 else ""))
        _band(axes[1], xs, [r["class_score"] for r in rs], [r["cs_lo"] for r in rs], [r["cs_hi"] for r in rs],
              f"s = {s:g}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(STEPS), [str(s) for s in STEPS])
        ax.set_xlabel(STEPS_LABEL)
    axes[0].set_title("Fréchet distance to the test digits, per timestep_scaling s", fontsize=9)
    return _fd_and_score_axes(fig, axes, "class score, per timestep_scaling s")


def figure_sample_grid(grids):
    """Methods in rows, step counts in columns; each cell the ten classes 0…9 (two rows of five) from the same
    seed (x_T); a last row, "references", with the teacher's 50-step DDIM samples (the ceiling) and real digits of
    the test split, each panel titled with what it holds."""
    import matplotlib.pyplot as plt

    def tile(img):                      # (10, 8, 8) → 2×5 mosaic with 1-pixel gaps
        pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), constant_values=0.0)
        return np.concatenate([np.concatenate(list(pad[r * 5:(r + 1) * 5]), axis=1) for r in range(2)], axis=0)
    fig, axes = plt.subplots(len(sampling.METHODS) + 1, len(STEPS), figsize=(8.5, 6.2), squeeze=False)
    for i, meth in enumerate(sampling.METHODS):
        for j, n in enumerate(STEPS):
            ax = axes[i][j]
            ax.imshow(tile(grids[(meth, n)]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{n} step{'s' * (n > 1)}", fontsize=8)
            if j == 0:
                ax.set_ylabel({"lcm": "LCM student"}.get(meth, LABELS[meth].replace(" (teacher)", "")), fontsize=8)
    last = axes[len(sampling.METHODS)]
    extra = [(k, v) for k, v in grids.items() if k[0] not in sampling.METHODS]
    for j, ax in enumerate(last):
        ax.axis("off")
        if j < len(extra):
            (name, n), img = extra[j]
            ax.axis("on")
            ax.imshow(tile(img), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(LABELS.get(name, name), fontsize=8)
            if j == 0:
                ax.set_ylabel("references", fontsize=8)
    fig.suptitle(f"Samples of classes 0–9 (two rows of five per cell), ω = {OMEGA:g}, one seed for every cell\n"
                 "last row, references: the teacher at 50 DDIM steps, and real digits of the test split", fontsize=9)
    fig.tight_layout()
    return fig


