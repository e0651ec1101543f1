"""How far each implementation of the LCM step is from the exact result, in the scaled units of docs/design.md §8.

The logic behind ``notebooks/reference_vs_gpu.ipynb`` and ``notebooks/timestep_scaling.ipynb``:

- ``scaled_errors``: diffusers' float32 ``LCMScheduler`` and ``lcm_ref.torch_impl.TorchLCM`` in float32 / float16 /
  bfloat16 against ``lcm_ref.reference``, per timestep, prediction type and beta schedule:
  ``|impl − ref| / (eps(dtype)·Σ|terms|)`` via ``ref.step_terms`` and ``ref.scaled_error``. Inputs are rounded to
  the implementation's dtype first and the reference gets the same rounded values, so the error measured is the
  step's own; the noise is the one the implementation drew (diffusers draws its own from the generator; it is
  captured as drawn: ``lcm_ref.oracle.noise.step_with_noise``).
- ``reference_vs_mpmath`` / ``table_ulps``: the reference against the independent 60-digit evaluation of
  ``lcm_ref.reference.exact`` (tables in ulps, step outputs in scaled eps64 units).
- ``boundary_table`` / ``scaling_sweep``: the boundary-condition approximation (c_skip → 0, c_out → 1) against
  ``timestep_scaling``, closed form beside measured, and each implementation's error over decades of it.
- the format's limits (docs/design.md §8.4): an output whose exact value is beyond the dtype's range and that comes
  back as the correctly rounded ±inf is an ``overflow`` (right, scored 0), not a ``nonfinite`` error; errors are
  also reported over the results in the dtype's normal range (``explain_limits`` words it for the page).
- the figures (``plot_scaled_errors``, ``plot_scaling_sweep``) and the GPU results committed from elsewhere
  (``gpu_evidence``, ``compare_devices``, ``committed``).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import numpy as np

from ..reference import exact as E
from .. import reference as ref
from ..config import LCMConfig
from ..numerics import EPS, dtype_name, torch_dtype

SIGMA = ref.SIGMA_DATA
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("scaled_linear", "linear", "squaredcos_cap_v2")     # the ones diffusers' LCMScheduler accepts

# ---------------------------------------------------------------------------------------------------------------
# Implementations under test: step(cfg, schedule, i, x, m, seed) -> (prev_sample, denoised, z) as float64 arrays
# ---------------------------------------------------------------------------------------------------------------

def diffusers_step(cfg: LCMConfig, schedule, i, x, m, seed, *, dtype="float32", device="cpu"):
    """One ``diffusers.LCMScheduler.step`` at ``schedule[i]`` as a pipeline calls it (timestep a tensor element of
    ``scheduler.timesteps``; ``set_begin_index(i)``), with the noise drawn from ``seed``."""
    import torch
    from .behaviour import captured_diffusers_log, diffusers_scheduler
    from ..oracle.noise import step_with_noise
    dt = torch_dtype(dtype)
    s = diffusers_scheduler(cfg)
    with captured_diffusers_log():
        s.set_timesteps(timesteps=[int(t) for t in schedule], device=device)
    s.set_begin_index(i)
    xt, mt = torch.as_tensor(x, device=device).to(dt), torch.as_tensor(m, device=device).to(dt)
    out, z = step_with_noise(s, mt, s.timesteps[i], xt, seed)
    return _np(out.prev_sample), _np(out.denoised), _np(z)


def torch_lcm_step(cfg: LCMConfig, schedule, i, x, m, seed, *, dtype="float32", device="cpu"):
    """One step of ``lcm_ref.torch_impl.TorchLCM`` in ``dtype`` with the noise given explicitly."""
    import torch
    from ..torch_impl.noise import draw_noise
    from ..torch_impl import TorchLCM
    dt = torch_dtype(dtype)
    eng = TorchLCM(cfg, device=device, dtype=dt)
    xt, mt = torch.as_tensor(x, device=device).to(dt), torch.as_tensor(m, device=device).to(dt)
    z = draw_noise(xt.shape, torch.Generator(device).manual_seed(seed), device, dt)    # what diffusers draws
    out = eng.step(mt, int(schedule[i]), xt, schedule=torch.as_tensor(np.asarray(schedule), device=device),
                   noise=z, step_index=i)
    prev, den = (out.prev_sample, out.denoised) if hasattr(out, "prev_sample") else out
    return _np(prev), _np(den), _np(z)


def _np(t):
    return t.detach().cpu().double().numpy()


class Impl(NamedTuple):
    name: str
    dtype: str
    step: Callable


def implementations(device="cpu") -> list[Impl]:
    """The implementations measured here: diffusers in float32 and TorchLCM in float32, float16, bfloat16."""
    return [Impl("diffusers", "float32", lambda *a: diffusers_step(*a, dtype="float32", device=device))] + [
        Impl("TorchLCM", dt, lambda *a, dt=dt: torch_lcm_step(*a, dtype=dt, device=device))
        for dt in ("float32", "float16", "bfloat16")]


# ---------------------------------------------------------------------------------------------------------------
# Scaled error vs the reference
# ---------------------------------------------------------------------------------------------------------------

def inputs(shape, seed, dtype):
    """(x, model_output) drawn from N(0, 1) with ``seed``, rounded to ``dtype`` (returned as float64 arrays holding
    exactly the rounded values)."""
    import torch
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal(shape)).to(torch_dtype(dtype)).double().numpy()
    m = torch.as_tensor(rng.standard_normal(shape)).to(torch_dtype(dtype)).double().numpy()
    return x, m


def round_to(values, dtype) -> np.ndarray:
    """``values`` (float64) correctly rounded to ``dtype`` and returned as float64: what an exact computation would
    store in that format (±inf beyond its largest finite value, subnormal or 0 below its normal range)."""
    v = np.asarray(values, dtype=np.float64)
    name = dtype_name(dtype)
    if name in ("float64", "float32", "float16"):
        with np.errstate(over="ignore"):
            return v.astype(name).astype(np.float64)
    import torch
    return torch.as_tensor(v).to(torch_dtype(name)).double().numpy()


def smallest_normal(dtype) -> float:
    """The smallest positive normal number of ``dtype`` (2⁻¹⁴ for float16); below it results are subnormal."""
    return {"float64": 2.0 ** -1022, "float32": 2.0 ** -126, "bfloat16": 2.0 ** -126,
            "float16": 2.0 ** -14}[dtype_name(dtype)]


def _scaled(got, want, terms, dtype):
    """(scaled error per element, overflow mask, normal-range mask, genuine non-finite mask) of one output.

    docs/design.md §8.4: where the exact value lies outside ``dtype``'s range its correctly rounded value is ±inf;
    an implementation that returns exactly that is right, so the element scores 0 and is counted as an overflow,
    not as an error. ``normal`` marks the elements whose correctly rounded value is 0 or a normal number of the
    format (float16-subnormal results carry up to 2⁻²⁵ of absolute rounding, docs/design.md §8.B6)."""
    err = ref.scaled_error(got, want, terms, dtype)
    rounded = round_to(want, dtype)
    overflow = np.isinf(rounded) & np.isfinite(want) & (got == rounded)
    err = np.where(overflow, 0.0, err)
    normal = np.isfinite(rounded) & ((np.abs(rounded) >= smallest_normal(dtype)) | (want == 0))
    nonfinite = ~np.isfinite(got) & np.isfinite(rounded)
    return err, overflow, normal, nonfinite


def measure_step(cfg: LCMConfig, impl: Impl, schedule, i, shape, seed) -> dict:
    """Max scaled error (docs/design.md §8) of ``impl``'s denoised and prev_sample at ``schedule[i]``, over all
    elements (``scaled_*``) and over the elements whose correctly rounded value is in the format's normal range
    (``scaled_*_normal``); ``overflow``: elements whose exact value is beyond the format's range and where the
    implementation returned the correctly rounded ±inf (right, docs/design.md §8.4; scored 0); ``nonfinite``:
    non-finite outputs where the correctly rounded value is finite (wrong); the max relative error of denoised
    (diagnostic only)."""
    schedule = np.asarray(schedule, dtype=np.int64)
    x, m = inputs(shape, seed + i, impl.dtype)
    try:
        prev, den, z = impl.step(cfg, schedule, i, x, m, seed + 1000 + i)
    except Exception as e:   # an implementation that raises is reported, not hidden
        return dict(error=f"{type(e).__name__}: {e}")
    t = int(schedule[i])
    want = ref.step(cfg, m, t, x, schedule=schedule, noise=z, step_index=i)
    terms = ref.step_terms(cfg, m, t, x, schedule=schedule, noise=z, step_index=i)
    e_den, o_den, n_den, bad_den = _scaled(den, want.denoised, terms.denoised, impl.dtype)
    e_prev, o_prev, n_prev, bad_prev = _scaled(prev, want.prev_sample, terms.prev_sample, impl.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(den - want.denoised) / np.abs(want.denoised)
    return dict(scaled_denoised=float(e_den.max()), scaled_prev=float(e_prev.max()),
                scaled_denoised_normal=float(e_den[n_den].max(initial=0.0)),
                scaled_prev_normal=float(e_prev[n_prev].max(initial=0.0)),
                rel_denoised=float(np.nanmax(np.where((want.denoised == den) | o_den, 0.0, rel))),
                overflow=int(o_den.sum() + o_prev.sum()), nonfinite=int(bad_den.sum() + bad_prev.sum()), error="")


def scaled_errors(impls, *, beta_schedules=BETA_SCHEDULES, prediction_types=PREDICTION_TYPES, every=1,
                  shape=(2, 4, 32, 32), seed=0, progress=True) -> list[dict]:
    """Per implementation × beta schedule × prediction type × timestep of the 50-point grid (every ``every``-th):
    one step from that timestep to the next grid point (the last re-noise-free), measured by ``measure_step``."""
    from tqdm.auto import tqdm
    grid = ref.timesteps(LCMConfig(), 50)
    idx = list(range(0, len(grid), every))
    if idx[-1] != len(grid) - 1:
        idx.append(len(grid) - 1)
    jobs = [(im, bs, pt, i) for im in impls for bs in beta_schedules for pt in prediction_types for i in idx]
    rows = []
    for im, bs, pt, i in tqdm(jobs, desc="scaled errors", disable=not progress, mininterval=2):
        cfg = LCMConfig(beta_schedule=bs, prediction_type=pt)
        r = measure_step(cfg, im, grid, i, shape, seed)
        rows.append(dict(impl=im.name, dtype=im.dtype, beta_schedule=bs, prediction_type=pt, t=int(grid[i]),
                         last_step=i == len(grid) - 1, **r))
    return rows


def summarize(rows, keys=("impl", "dtype", "prediction_type")) -> list[dict]:
    """Max over the other dimensions of each scaled error, grouped by ``keys``; ``worst_t`` is where denoised is
    worst; ``max_normal_range`` the largest scaled error of either output over elements whose correctly rounded
    value is a normal number of the dtype; ``overflow`` / ``nonfinite`` / ``errors`` are counts (measure_step).
    Rows written before the overflow and normal-range columns existed (e.g. an older ``accuracy_cuda.csv``) give
    "" there."""
    out = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        g = out.setdefault(k, {**{c: r[c] for c in keys}, "max_scaled_denoised": 0.0, "max_scaled_prev": 0.0,
                               "max_normal_range": 0.0 if "scaled_denoised_normal" in r else "",
                               "worst_t": None, "overflow": 0 if "overflow" in r else "", "nonfinite": 0,
                               "errors": 0})
        if r.get("error"):
            g["errors"] += 1
            continue
        if r["scaled_denoised"] >= g["max_scaled_denoised"]:
            g["max_scaled_denoised"], g["worst_t"] = r["scaled_denoised"], r["t"]
        g["max_scaled_prev"] = max(g["max_scaled_prev"], r["scaled_prev"])
        if g["max_normal_range"] != "":
            g["max_normal_range"] = max(g["max_normal_range"], r["scaled_denoised_normal"], r["scaled_prev_normal"])
        if g["overflow"] != "":
            g["overflow"] += r["overflow"]
        g["nonfinite"] += r["nonfinite"]
    return list(out.values())


def derived_bound(impl: str, dtype: str) -> float | None:
    """TorchLCM's derived bound in its own eps (docs/design.md §8.3) for results in the format's normal range:
    float32 1.5 (denoised) / 2 (prev) → 2 for either; float16 / bfloat16 0.5 + 1.5·eps32/eps(dtype) (computed in
    float32, rounded once). None for diffusers (its budget depends on t, docs/design.md §8.3)."""
    if impl != "TorchLCM":
        return None
    return 2.0 if dtype == "float32" else 0.5 + 1.5 * EPS["float32"] / EPS[dtype]


#: the smallest magnitude that rounds to ±inf in each format (its largest finite value plus half an ulp)
OVERFLOW_AT = {"float16": 65520.0, "bfloat16": 2.0 ** 127 * (2 - 2.0 ** -8), "float32": 2.0 ** 127 * (2 - 2.0 ** -24)}


def explain_limits(rows) -> str:
    """Markdown: the format limits seen in ``scaled_errors`` rows, from the rows themselves — overflow elements (the
    exact value beyond the dtype's range, returned as the correctly rounded ±inf: right, docs/design.md §8.4),
    genuinely wrong non-finite outputs, and the float16-subnormal results whose fixed absolute rounding (2⁻²⁵)
    exceeds the normal-range bound — then each TorchLCM dtype's worst normal-range error against its derived
    bound (``derived_bound``)."""
    ok = [r for r in rows if not r.get("error")]
    lines = []
    for r in (r for r in ok if r.get("overflow")):
        why = ""
        if r["prediction_type"] == "epsilon":
            a = float(ref.alphas_cumprod(LCMConfig(beta_schedule=r["beta_schedule"]))[r["t"]])
            why = (f" (epsilon prediction divides by √ᾱ: 1/√ᾱ = {1 / math.sqrt(a):.3g} at t = {r['t']} with "
                   f"{r['beta_schedule']}, and |denoised| ≈ |x − √(1−ᾱ)·m|/√ᾱ)")
        lines.append(f"- **Overflow, not an error:** {r['impl']} {r['dtype']} {r['beta_schedule']} "
                     f"{r['prediction_type']} at t = {r['t']}: {r['overflow']} elements whose exact value is at least "
                     f"{OVERFLOW_AT.get(r['dtype'], float('nan')):.6g}{why} came back as ±inf. That is the exact value "
                     f"correctly rounded to {r['dtype']} (docs/design.md §8.4): they score 0 and are counted in "
                     "`overflow`, not in `nonfinite`.")
    if not lines:
        lines.append("- No output overflowed its format.")
    bad = sorted({f"{r['impl']} {r['dtype']} {r['beta_schedule']} {r['prediction_type']} t={r['t']}"
                  for r in rows if r.get("nonfinite") or r.get("error")})
    lines.append("- Non-finite outputs where the correctly rounded value is finite, or a raised exception: "
                 + (", ".join(bad) if bad else "none") + ".")
    for (impl, dt) in ORDER:
        mine = [r for r in ok if (r["impl"], r["dtype"]) == (impl, dt)]
        bound = derived_bound(impl, dt)
        if not mine or bound is None:
            continue
        worst = max(mine, key=lambda r: max(r["scaled_denoised"], r["scaled_prev"]))
        normal = max(max(r["scaled_denoised_normal"], r["scaled_prev_normal"]) for r in mine)
        text = (f"- {impl} {dt}: worst scaled error over results in the format's normal range **{normal:.4g}** "
                f"(derived bound {bound:.6g}: {'within' if normal <= bound else 'EXCEEDED'})")
        all_max = max(worst["scaled_denoised"], worst["scaled_prev"])
        if all_max > normal:
            text += (f"; over all elements **{all_max:.3g}** ({worst['beta_schedule']}, {worst['prediction_type']}, "
                     f"t = {worst['t']}), where the result is subnormal in {dt}")
            if dt == "float16":
                text += (": below 2⁻¹⁴ float16's spacing is fixed at 2⁻²⁴, so one rounding can cost 2⁻²⁵ absolute, "
                         "more than 0.5·eps·Σ|terms| when Σ|terms| is that small (docs/design.md §8.B6)")
        lines.append(text + ".")
    return "\n".join(lines)


def compare_devices(cpu_rows, gpu_rows, keys=("impl", "dtype", "beta_schedule")) -> list[dict]:
    """Worst scaled errors per ``keys`` side by side: this run's CPU rows and a GPU results file's rows."""
    cpu, gpu = ({tuple(g[k] for k in keys): g for g in summarize(rs, keys)} for rs in (cpu_rows, gpu_rows))
    out = []
    for k in list(cpu) + [k for k in gpu if k not in cpu]:
        c, g = cpu.get(k, {}), gpu.get(k, {})
        out.append({**dict(zip(keys, k)), "cpu_denoised": c.get("max_scaled_denoised", ""),
                    "gpu_denoised": g.get("max_scaled_denoised", ""), "cpu_prev": c.get("max_scaled_prev", ""),
                    "gpu_prev": g.get("max_scaled_prev", ""), "cpu_nonfinite": c.get("nonfinite", ""),
                    "gpu_nonfinite": g.get("nonfinite", "")})
    return out


def committed(path) -> str:
    """When a results file was recorded: the date and commit of the last git commit that touched the file of the
    same name under ``reports/data`` of this checkout (the report runs on a copy), else the file's own date."""
    import datetime as _dt
    import subprocess
    from pathlib import Path
    from .report import ROOT
    path = Path(path)
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs %h", "--", f"reports/data/{path.name}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.split()
        if len(out) == 2:
            return f"committed {out[0]} ({out[1]})"
    except (OSError, subprocess.SubprocessError):
        pass
    return "file dated " + _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d")


def gpu_evidence(data) -> list[dict]:
    """One row per GPU results file present in ``data`` (``accuracy_cuda.csv``, ``bench_cuda.csv``,
    ``bench_cuda_accuracy.csv``, ``cuda_oracle.md``, ``cuda_tests.log``): what it holds, where it was measured
    (device and software, as the files record them), when (``committed``), and whether it still describes this
    code (``lcm_ref.studies.evidence.status``: the commit and torch version that made it, stale when the torch
    engine has changed since)."""
    from . import evidence
    import csv
    import re
    from pathlib import Path
    data = Path(data)
    software = "GPU"
    if (data / "bench_cuda.md").exists():
        m = re.search(r"Device: \*\*(.+?)\*\*; (.+?)\.\s*$", (data / "bench_cuda.md").read_text(), re.M)
        software = f"{m.group(1)}; {m.group(2)}" if m else software

    def device_of(name):
        with open(data / name, newline="") as f:
            return next(csv.DictReader(f), {}).get("device", "") or software

    def tests_summary():
        found = re.findall(r"^=*\s*(\d+ passed[^=]*?)\s*=*$", (data / "cuda_tests.log").read_text(), re.M)
        return found[-1] if found else "no summary line"
    what = {
        "accuracy_cuda.csv": lambda: ("§1's measurement on the GPU (same inputs: drawn by NumPy)",
                                      device_of("accuracy_cuda.csv")),
        "bench_cuda.csv": lambda: ("`lcm-ref bench --device cuda` timings (shown on the benchmarks page)", software),
        "bench_cuda_accuracy.csv": lambda: ("`lcm-ref bench --device cuda` accuracy, 8-step schedules", software),
        "cuda_oracle.md": lambda: ("`lcm-ref check` of TorchLCM's drop-in, float32 (below)",
                                   "cuda (the file names no GPU model)"),
        "cuda_tests.log": lambda: (f"`pytest -m cuda` on TorchLCM and the drop-in: {tests_summary()}",
                                   "cuda (the log names no GPU model)"),
    }
    return [{"file": f"`{name}`", "holds": f()[0], "measured on": f()[1], "recorded": committed(data / name),
             "status": evidence.status(evidence.label(data, name))[1]}
            for name, f in what.items() if (data / name).exists()]


def gpu_overflow_note(cpu_rows, gpu_rows) -> str:
    """For a GPU file written before overflow was counted apart from non-finite: whether its non-finite counts are
    the overflow elements of this run (same inputs, so the same correctly rounded infinities)."""
    if not gpu_rows or "overflow" in gpu_rows[0]:
        return ""
    cpu = {(r["impl"], r["dtype"], r["beta_schedule"], r["prediction_type"], r["t"]): r for r in cpu_rows}
    parts, same = [], True
    for g in gpu_rows:
        if g.get("nonfinite"):
            c = cpu.get((g["impl"], g["dtype"], g["beta_schedule"], g["prediction_type"], g["t"]), {})
            same &= c.get("overflow") == g["nonfinite"] and not c.get("nonfinite")
            parts.append(f"{g['nonfinite']} in {g['impl']} {g['dtype']} {g['beta_schedule']} {g['prediction_type']} "
                         f"at t = {g['t']}")
    if not parts:
        return ""
    return (f"`accuracy_cuda.csv` predates the `overflow` column, so its non-finite count ({'; '.join(parts)}) "
            + ("is the same set of overflow elements this run finds on the same inputs: the correctly rounded ±inf, "
               "not an error." if same else "does not match this run's overflow count: a GPU rerun would tell."))


# ---------------------------------------------------------------------------------------------------------------
# Figures (the notebooks call these; styles distinguish every implementation even where their lines coincide)
# ---------------------------------------------------------------------------------------------------------------

#: line style per (impl, dtype): float16 and bfloat16 both sit near 0.5 eps, so they differ in marker, dash and
#: a small horizontal offset as well as colour.
IMPL_STYLES = {
    ("diffusers", "float32"): dict(color="tab:blue", marker=".", ls="-", dx=0.0),
    ("TorchLCM", "float32"): dict(color="tab:red", marker="o", ls="-", ms=3, dx=0.0),
    ("TorchLCM", "float16"): dict(color="tab:green", marker="s", ls="--", ms=4, mfc="none", dx=-3.0),
    ("TorchLCM", "bfloat16"): dict(color="tab:orange", marker="^", ls=":", ms=3, dx=3.0),
}
ORDER = list(IMPL_STYLES)


def _style(impl, dtype):
    st = dict(IMPL_STYLES.get((impl, dtype), dict(marker=".", ls="-", dx=0.0)))
    return st.pop("dx"), st


def plot_scaled_errors(rows, beta_schedule, floor=1e-3):
    """Scaled error per timestep (2 × 3 panels: denoised / prev × prediction type) for one beta schedule, one line
    per implementation. Zero is drawn at ``floor``; overflow elements (the correctly rounded ±inf) score 0 and are
    counted in the title; a non-finite max (a wrong inf/NaN) is drawn as a cross at the top. Returns the figure."""
    import matplotlib.pyplot as plt
    keys = sorted({(r["impl"], r["dtype"]) for r in rows}, key=lambda k: ORDER.index(k) if k in ORDER else 99)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True, sharey="row")
    notes = []
    for col, pt in enumerate(PREDICTION_TYPES):
        for row, key in enumerate(("scaled_denoised", "scaled_prev")):
            ax = axes[row, col]
            top = max([r[key] for r in rows if r["beta_schedule"] == beta_schedule and not r["error"]
                       and math.isfinite(r[key])] + [1.0]) * 3
            for impl, dt in keys:
                pts = [r for r in rows if (r["impl"], r["dtype"]) == (impl, dt) and r["prediction_type"] == pt
                       and r["beta_schedule"] == beta_schedule and not r["error"]]
                dx, st = _style(impl, dt)
                ax.semilogy([r["t"] + dx for r in pts], [min(max(r[key], floor), top) for r in pts],
                            label=f"{impl} {dt}", lw=1, **st)
                bad = [r for r in pts if not math.isfinite(r[key])]
                if bad:
                    ax.plot([r["t"] for r in bad], [top] * len(bad), "x", color=st.get("color"), ms=9, mew=2)
                over = sum(r.get("overflow") or 0 for r in pts if key == "scaled_denoised") if row == 0 else 0
                if over:
                    notes.append(f"{impl} {dt} {pt}: {over} overflow elements (exact |value| beyond the format, "
                                 "inf returned: correct, scored 0)")
            ax.set_title(f"prediction_type {pt}: error of {'denoised' if row == 0 else 'prev_sample'}", fontsize=9)
            ax.set(xlabel="timestep t" if row else None)
    axes[0, 0].set_ylabel("max scaled error of denoised\n(eps units of the dtype)")
    axes[1, 0].set_ylabel("max scaled error of prev_sample\n(eps units of the dtype)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{beta_schedule} betas; 0 drawn at {floor:g}; float16/bfloat16 offset by ∓3 in t to keep both "
                 "visible" + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Reference vs mpmath (the independent 60-digit evaluation of lcm_ref.reference.exact)
# ---------------------------------------------------------------------------------------------------------------

def ulp_error(got, exact_mp) -> np.ndarray:
    """|got − exact| in units of the float64 ulp at the exact value (|got| for zero)."""
    exact = [float(v) for v in exact_mp]
    return np.array([float(abs(E.MP.mpf(float(g)) - v) / E.MP.mpf(float(np.spacing(abs(e)))))
                     for g, v, e in zip(np.ravel(got), exact_mp, exact)])


def table_ulps(cfg: LCMConfig) -> dict:
    """ᾱ_t ulp error vs ``lcm_ref.reference.exact`` for ``ref.alphas_cumprod``, a naive float64 ``np.cumprod`` and diffusers'
    float32 table (the latter in float32 ulps)."""
    from .behaviour import diffusers_scheduler
    exact = E.exact_tables(cfg)["alphas_cumprod"]
    T = cfg.num_train_timesteps
    if cfg.beta_schedule == "scaled_linear":
        naive_betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T) ** 2
    elif cfg.beta_schedule == "linear":
        naive_betas = np.linspace(cfg.beta_start, cfg.beta_end, T)
    else:
        naive_betas = np.asarray(ref.betas(cfg))
    naive = np.cumprod(1.0 - naive_betas)
    d32 = diffusers_scheduler(cfg).alphas_cumprod.double().numpy()
    exact32 = np.array([float(v) for v in exact], dtype=np.float32)
    ulp32 = np.abs(d32 - np.array([float(v) for v in exact])) / np.spacing(np.abs(exact32)).astype(np.float64)
    return dict(t=np.arange(T), reference=ulp_error(ref.alphas_cumprod(cfg), exact),
                naive_float64=ulp_error(naive, exact), diffusers_float32=ulp32)


TABLE_KINDS = {"reference": "lcm_ref.reference (float64)", "naive_float64": "np.cumprod in float64",
               "diffusers_float32": "diffusers (float32)"}


def table_ulps_figure(beta_schedules=BETA_SCHEDULES, floor=1e-3):
    """ᾱ_t's error in ulps against t, one panel per beta schedule, one line per table (``table_ulps``); 0 drawn at
    ``floor``. Returns (figure, rows of ``accuracy_table_ulps.csv``, rows of ``accuracy_table_ulps_per_t.csv``)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(beta_schedules), figsize=(12, 3.6), sharey=True, squeeze=False)
    ulp_rows, per_t = [], []
    for ax, bs in zip(axes[0], beta_schedules):
        u = table_ulps(LCMConfig(beta_schedule=bs))
        for key, label in TABLE_KINDS.items():
            ax.semilogy(u["t"], np.maximum(u[key], floor), lw=0.8, label=label)
            ulp_rows.append({"beta_schedule": bs, "table": key, "max_ulp": float(u[key].max()),
                             "worst_t": int(u[key].argmax())})
        per_t += [{"beta_schedule": bs, "t": int(t), **{k: float(u[k][t]) for k in TABLE_KINDS}} for t in u["t"]]
        ax.set_title(f"error of the ᾱ_t table, {bs} betas", fontsize=9)
        ax.set(xlabel="timestep t")
    axes[0][0].set_ylabel(f"error in ulps of the table's dtype\n(0 drawn at {floor:g})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig, ulp_rows, per_t


#: the non-linear steps measured beside the plain one (docs/design.md §8.2): clip_sample and dynamic thresholding
MPMATH_MODES = {"none": {}, "clip": dict(clip_sample=True, clip_sample_range=0.9),
                "threshold": dict(thresholding=True, sample_max_value=3.0)}


def reference_vs_mpmath(*, beta_schedules=BETA_SCHEDULES, prediction_types=PREDICTION_TYPES, modes=tuple(MPMATH_MODES),
                        every=1, shape=(2, 4, 4, 4), seed=0) -> list[dict]:
    """Max scaled error (eps64 units) of ``ref.step``'s outputs against ``lcm_ref.reference.exact.exact_step`` (the
    exact value not rounded first), per schedule, prediction type, mode (``MPMATH_MODES``: plain, clip_sample,
    thresholding) and timestep of the 50-point grid. docs/design.md §8.2 bound: ≤ 4."""
    grid = ref.timesteps(LCMConfig(), 50)
    rows = []
    for mode in modes:
        for bs in beta_schedules:
            for pt in prediction_types:
                cfg = LCMConfig(beta_schedule=bs, prediction_type=pt, **MPMATH_MODES[mode])
                for i in range(0, len(grid), every):
                    rng = np.random.default_rng(seed + i)
                    x, m, z = (rng.standard_normal(shape) for _ in range(3))
                    t = int(grid[i])
                    last = i == len(grid) - 1
                    want_prev, want_den = E.exact_step(cfg, m, t, x, z, -1 if last else int(grid[i + 1]), last)
                    got = ref.step(cfg, m, t, x, schedule=grid, noise=z, step_index=i)
                    terms = ref.step_terms(cfg, m, t, x, schedule=grid, noise=z, step_index=i)
                    rows.append(dict(mode=mode, beta_schedule=bs, prediction_type=pt, t=t,
                                     scaled_denoised=float(E.scaled_error(got.denoised, want_den,
                                                                          terms.denoised).max()),
                                     scaled_prev=float(E.scaled_error(got.prev_sample, want_prev,
                                                                      terms.prev_sample).max())))
    return rows


def summarize_mpmath(rows, keys=("mode", "beta_schedule", "prediction_type")) -> list[dict]:
    """Max scaled errors of ``reference_vs_mpmath`` rows grouped by ``keys``."""
    out = {}
    for r in rows:
        k = tuple(r.get(c, "none") for c in keys)
        g = out.setdefault(k, {**dict(zip(keys, k)), "max_scaled_denoised": 0.0, "max_scaled_prev": 0.0})
        g["max_scaled_denoised"] = max(g["max_scaled_denoised"], r["scaled_denoised"])
        g["max_scaled_prev"] = max(g["max_scaled_prev"], r["scaled_prev"])
    return list(out.values())


# ---------------------------------------------------------------------------------------------------------------
# timestep_scaling: the boundary condition and the numerics over decades
# ---------------------------------------------------------------------------------------------------------------

def exact_boundary(t, s) -> tuple[float, float]:
    """(c_skip, 1 − c_out) at timestep t for timestep_scaling s, exact (``lcm_ref.reference.exact``), rounded once."""
    c_skip, c_out = E.exact_boundary(t, s)
    return float(c_skip), float(1 - c_out)


def asymptotic_boundary(t, s) -> tuple[float, float]:
    """Leading-order closed form for u = t·s ≫ σ: c_skip ≈ σ²/u², 1 − c_out ≈ σ²/(2u²)."""
    u = float(t) * float(s)
    return (SIGMA ** 2 / u ** 2, SIGMA ** 2 / (2 * u ** 2)) if u > 0 else (math.nan, math.nan)


def diffusers_boundary(t, s, *, tensor=True):
    """What diffusers' ``get_scalings_for_boundary_condition_discrete`` returns for timestep t: with a tensor
    timestep (as pipelines pass) float32 0-d tensors; with an int, Python floats (which can raise OverflowError)."""
    import torch
    from .behaviour import diffusers_scheduler
    sch = diffusers_scheduler(LCMConfig(timestep_scaling=s))
    ts = torch.tensor(t) if tensor else int(t)
    try:
        c_skip, c_out = sch.get_scalings_for_boundary_condition_discrete(ts)
    except OverflowError as e:
        return f"OverflowError: {e}", None
    return float(c_skip), float(c_out)


def boundary_table(scales, timesteps) -> list[dict]:
    """Per (timestep_scaling, t): exact c_skip and 1 − c_out, the asymptotic closed form, and what the reference
    (float64) and diffusers (float32 tensor path) give."""
    rows = []
    for s in scales:
        cfg = LCMConfig(timestep_scaling=s)
        for t in timesteps:
            c_skip, one_m = exact_boundary(t, s)
            a_skip, a_one_m = asymptotic_boundary(t, s)
            r_skip, r_out = ref.boundary_scalings(cfg, int(t))
            d_skip, d_out = diffusers_boundary(t, s)
            rows.append(dict(timestep_scaling=s, t=int(t), c_skip=c_skip, c_skip_closed_form=a_skip,
                             one_minus_c_out=one_m, one_minus_c_out_closed_form=a_one_m,
                             ref_c_skip=r_skip, ref_c_out=r_out,
                             diffusers_fp32_c_skip=d_skip, diffusers_fp32_c_out=d_out,
                             diffusers_fp32_c_out_is_1=d_out == 1.0))
    return rows


def plot_boundary(rows, floor=1e-12):
    """c_skip and 1 − c_out against t (log-log) per timestep_scaling of ``boundary_table`` rows: exact (line), the
    closed form (dashed), the reference in float64 (o) and diffusers' float32 (x); 0 drawn at ``floor``."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in sorted({r["timestep_scaling"] for r in rows}):
        rs = [r for r in rows if r["timestep_scaling"] == s]
        t = [r["t"] for r in rs]
        line, = axes[0].loglog(t, [r["c_skip"] for r in rs], label=f"s = {s:g}")
        c = line.get_color()
        axes[0].loglog(t, [r["c_skip_closed_form"] for r in rs], "--", color=c, lw=0.8)
        axes[0].loglog(t, [max(r["diffusers_fp32_c_skip"], floor) for r in rs], "x", color=c, ms=4)
        axes[1].loglog(t, [r["one_minus_c_out"] for r in rs], color=c, label=f"s = {s:g}")
        axes[1].loglog(t, [r["one_minus_c_out_closed_form"] for r in rs], "--", color=c, lw=0.8)
        axes[1].loglog(t, [max(1 - r["ref_c_out"], floor) for r in rs], "o", color=c, ms=3, mfc="none")
        axes[1].loglog(t, [max(1 - r["diffusers_fp32_c_out"], floor) for r in rs], "x", color=c, ms=4)
    axes[0].set(xlabel="timestep t", ylabel="c_skip (weight of the input sample)")
    axes[0].set_title("c_skip against t (ideal 0)", fontsize=9)
    axes[1].set(xlabel="timestep t", ylabel="1 − c_out (shortfall of the model's weight)", ylim=(floor / 3, 2))
    axes[1].set_title("1 − c_out against t (ideal 0)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"line: exact; dashed: closed form; o: reference float64; x: diffusers float32; 0 drawn at {floor:g}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def first_t_c_out_is_one(s, T=1000) -> dict:
    """The smallest t in 1..T−1 where c_out == 1 exactly: in diffusers' float32 tensor path, in float32 rounding of
    the exact value, and in the reference's float64 (None if never)."""
    import torch
    from .behaviour import diffusers_scheduler
    sch = diffusers_scheduler(LCMConfig(timestep_scaling=s))
    ts = torch.arange(1, T)
    d = [float(sch.get_scalings_for_boundary_condition_discrete(t)[1]) for t in ts]
    exact = [1 - exact_boundary(int(t), s)[1] for t in range(1, T)]
    r = ref.boundary_scalings(LCMConfig(timestep_scaling=s), np.arange(1, T))[1]

    def first(values):
        hit = [i + 1 for i, v in enumerate(values) if v == 1.0]
        return hit[0] if hit else None
    return dict(timestep_scaling=s, diffusers_fp32=first(d),
                exact_rounded_to_fp32=first([float(np.float32(v)) for v in exact]), reference_fp64=first(list(r)))


def scaling_sweep(impls, scales, *, prediction_type="epsilon", n=8, shape=(1, 4, 16, 16), seed=0,
                  progress=True) -> list[dict]:
    """Per timestep_scaling and implementation: max scaled error of denoised and prev over the n-step schedule,
    overflow and non-finite elements (``measure_step``), and the error an implementation raised."""
    from tqdm.auto import tqdm
    rows = []
    for s in tqdm(scales, desc="timestep_scaling sweep", disable=not progress):
        cfg = LCMConfig(timestep_scaling=s, prediction_type=prediction_type)
        sched = ref.timesteps(cfg, n)
        for im in impls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steps = [measure_step(cfg, im, sched, i, shape, seed) for i in range(len(sched))]
            errs = [r["error"] for r in steps if r.get("error")]
            ok = [r for r in steps if not r.get("error")]
            rows.append(dict(timestep_scaling=s, impl=im.name, dtype=im.dtype,
                             max_scaled_denoised=max((r["scaled_denoised"] for r in ok), default=math.nan),
                             max_scaled_prev=max((r["scaled_prev"] for r in ok), default=math.nan),
                             overflow=sum(r["overflow"] for r in ok), nonfinite=sum(r["nonfinite"] for r in ok),
                             error=errs[0] if errs else ""))
    return rows


def float32_overflow_scalings(timesteps) -> dict:
    """Where diffusers' float32 boundary scalings break, for a schedule's timesteps: u = t·s, and u² (in c_skip's
    and c_out's denominators) overflows float32 once t·s > √max32 ≈ 1.8e19 (c_skip = c_out = 0, so denoised = 0);
    u itself overflows once t·s > max32 ≈ 3.4e38 (c_out = ∞/∞ = NaN). Returns {name: (s where the largest t
    crosses, s where the smallest t crosses)}."""
    big = float(np.finfo(np.float32).max)
    t_hi, t_lo = float(max(timesteps)), float(min(t for t in timesteps if t > 0))
    return {"u² overflows (denoised = 0)": (math.sqrt(big) / t_hi, math.sqrt(big) / t_lo),
            "u overflows (NaN)": (big / t_hi, big / t_lo)}


def plot_scaling_sweep(sweep, *, n=8, top=1e9, zoom=(-3.5, 40.5)):
    """Max scaled error of denoised against log10(timestep_scaling), one line per implementation: a main panel over
    ``zoom`` where float32's two overflow transitions are shaded and labelled (``float32_overflow_scalings`` of the
    n-step schedule), and a narrow panel for the decades beyond (up to 10³⁰⁰, where nothing changes any more).
    Non-finite or raised is drawn at ``top``. Returns the figure."""
    import matplotlib.pyplot as plt
    keys = sorted({(r["impl"], r["dtype"]) for r in sweep}, key=lambda k: ORDER.index(k) if k in ORDER else 99)
    far = [math.log10(r["timestep_scaling"]) for r in sweep if math.log10(r["timestep_scaling"]) > zoom[1]]
    fig, axes = plt.subplots(1, 2 if far else 1, figsize=(10, 4.4), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": [5, 1] if far else [1]})
    axes = axes[0]
    for impl, dt in keys:
        rs = [r for r in sweep if (r["impl"], r["dtype"]) == (impl, dt)]
        x = [math.log10(r["timestep_scaling"]) for r in rs]
        y = [min(r["max_scaled_denoised"], top) if math.isfinite(r["max_scaled_denoised"]) and not r["error"]
             else top for r in rs]
        dx, st = _style(impl, dt)
        for ax in axes:     # float16 and bfloat16 coincide near 0.5: shifted by ∓0.25 decade to show both
            ax.semilogy([v + dx / 12 for v in x], y, label=f"{impl} {dt}", lw=1, **st)
    ts = ref.timesteps(LCMConfig(), n)
    marks = []
    for (name, (lo, hi)), colour, short in zip(float32_overflow_scalings(ts).items(), ("tab:purple", "tab:brown"),
                                               ("u² = ∞", "u = ∞")):
        a, b = math.log10(lo), math.log10(hi)
        axes[0].axvspan(a, b, color=colour, alpha=0.2, lw=0,
                        label=f"float32 {name}: s ≥ {lo:.1e} (t = {max(ts)}) … {hi:.1e} (t = {min(ts)})")
        axes[0].text(a - 0.3, top / 5, short, ha="right", va="center", fontsize=8, color=colour)
        marks.append((a, f"{lo:.1e}"))
    top_axis = axes[0].secondary_xaxis("top")      # the transitions marked on an axis of their own
    top_axis.set_xticks([m[0] for m in marks], [f"s = {m[1]}" for m in marks], fontsize=7)
    top_axis.tick_params(length=6)
    axes[0].axhline(2.0 ** 23, color="grey", lw=0.5, ls=":")
    axes[0].set(xlim=zoom, xlabel="log10(timestep_scaling)", ylim=(0.1, top * 5),
                ylabel="max scaled error of denoised\n(eps units of the dtype)")
    axes[0].set_title("error of each implementation against timestep_scaling", fontsize=9, pad=18)
    axes[0].xaxis.set_major_locator(plt.MultipleLocator(5))
    axes[0].legend(fontsize=7, loc="center left", framealpha=0.9)
    if far:
        axes[1].set(xlim=(min(far) - 20, max(far) + 20), xlabel="… up to 10³⁰⁰")
        axes[1].set_title("the decades beyond", fontsize=9, pad=18)
        axes[1].axhline(2.0 ** 23, color="grey", lw=0.5, ls=":")
        axes[1].set_xticks(sorted(set(int(v) for v in far))[::2] + [int(max(far))])
    fig.suptitle(f"n = {n} schedule, epsilon; dotted: 2²³ (relative error 1 in float32); non-finite or raised: drawn "
                 f"at {top:.0e}; float16 / bfloat16 shifted ∓0.25 decade", fontsize=9)
    fig.tight_layout()
    return fig

