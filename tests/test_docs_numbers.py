"""Every measured number that README.md and docs/design.md quote matches the data behind the reports
(``reports/data/*.csv``), to the precision quoted.

Each claim finds its sentence in the document with a pattern (so a reworded or deleted sentence fails here and
the claim is updated with it) and compares the numbers it captures with what the data says. A number quoted as
"15.3" must be the data's value rounded to one decimal; "9.3e-7" to two significant digits; "≈ 53" to an integer.
Counts and facts that do not come from a report (the size of a test's grid, a NumPy rounding) are recomputed here.
"""

import csv
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from lcm_ref.studies import reproducibility as R

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "reports" / "data"
DOCS = {"README": ROOT / "README.md", "design": ROOT / "docs" / "design.md"}


def text(doc):
    """The document with its line breaks (and the indentation after them) folded into single spaces."""
    return re.sub(r"\s*\n\s*", " ", DOCS[doc].read_text())


def quoted(doc, pattern):
    """The groups of ``pattern`` in ``doc`` (whitespace in the pattern matches any run of whitespace)."""
    m = re.search(pattern.replace(" ", r"\s+"), text(doc))
    assert m, f"{doc}: no sentence matching {pattern!r} — the sentence changed; update the claim in this test with it"
    return m.groups()


def number(s: str) -> float:
    """A number as the documents write it: 114,128; −0.9988; 9.3e-7; 2.0·10⁴."""
    s = s.replace(",", "").replace("−", "-").strip()
    m = re.fullmatch(r"(-?[\d.]+)·10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)", s)
    if m:
        exp = m.group(2).translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-"))
        return float(m.group(1)) * 10 ** int(exp)
    return float(s)


def agrees(value, shown: str) -> bool:
    """Whether ``value`` rounds to the number ``shown`` at the precision it is shown with (decimal places for
    "15.3", significant digits for "9.3e-7" and "2.0·10⁴")."""
    s = shown.replace(",", "").replace("−", "-").strip()
    if "e" in s or "·10" in s:
        mant = re.match(r"-?([\d.]+)", s).group(1)
        sig = len(mant.replace(".", "").lstrip("0")) or 1
        return float(f"{value:.{sig - 1}e}") == pytest.approx(number(s), rel=1e-12)
    places = len(s.split(".")[1]) if "." in s else 0
    return round(Decimal(repr(float(value))), places) == Decimal(s)


def rows(name, **where):
    with open(DATA / name, newline="") as f:
        out = list(csv.DictReader(f))
    return [r for r in out if all(r[k] == str(v) for k, v in where.items())]


def fmax(rs, *cols):
    return max(float(r[c]) for r in rs for c in cols)


def check(doc, pattern, *values):
    shown = quoted(doc, pattern)
    assert len(shown) == len(values)
    for s, v in zip(shown, values):
        if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool):
            assert agrees(v, s), f"{doc}: quotes {s} where the data says {v!r} (pattern {pattern!r})"
        else:
            assert s == str(v), f"{doc}: quotes {s!r} where the data says {v!r} (pattern {pattern!r})"


# ---------------------------------------------------------------------------------------------------------------
# Accuracy (reports/reference_vs_gpu.md)
# ---------------------------------------------------------------------------------------------------------------

ERR = "accuracy_scaled_error_cpu.csv"


def diffusers_worst(schedule):
    return fmax(rows(ERR, impl="diffusers", dtype="float32", beta_schedule=schedule), "scaled_denoised", "scaled_prev")


def torch_lcm(dtype):
    return [r for r in rows(ERR, impl="TorchLCM", dtype=dtype) if not r["error"]]


def overflow_rows():
    return [r for r in rows(ERR) if int(r["overflow"])]


@pytest.mark.parametrize("doc, pattern", [
    ("README", r"measures up to ([\d.]+) \(scaled_linear\), ([\d.]+) \(linear\) and ([\d.]+) \(squaredcos_cap_v2\)"),
    ("design", r"diffusers float32 up to ([\d.]+) \(scaled_linear\), ([\d.]+) \(linear\), ([\d.]+) "
               r"\(squaredcos_cap_v2\)"),
])
def test_diffusers_float32_scaled_error(doc, pattern):
    check(doc, pattern, *(diffusers_worst(s) for s in ("scaled_linear", "linear", "squaredcos_cap_v2")))


def test_torch_lcm_measured_accuracy():
    f32, f16, bf16 = torch_lcm("float32"), torch_lcm("float16"), torch_lcm("bfloat16")
    normal = lambda rs: fmax(rs, "scaled_denoised_normal", "scaled_prev_normal")  # noqa: E731
    check("README", r"three prediction types\): float32 ([\d.]+) / ([\d.]+), float16 ([\d.]+), bfloat16 ([\d.]+)\.",
          fmax(f32, "scaled_denoised"), fmax(f32, "scaled_prev"), normal(f16), normal(bf16))
    check("design", r"TorchLCM float32 ([\d.]+) \(denoised\) / ([\d.]+) \(prev\)",
          fmax(f32, "scaled_denoised"), fmax(f32, "scaled_prev"))
    check("design", r"TorchLCM float16 ([\d.]+) and bfloat16 ([\d.]+) in their own eps", normal(f16), normal(bf16))
    subnormal = fmax(f16, "scaled_denoised", "scaled_prev")
    check("README", r"float16-subnormal results reach ([\d.]+) \(their rounding", subnormal)
    check("design", r"float16-subnormal show scaled errors up to ([\d.]+), which B6", subnormal)
    check("design", r"over results in float16's normal range the worst is ([\d.]+)\.\)", normal(f16))


def test_torch_lcm_within_the_bounds_the_readme_states():
    """README: float32 ≤ 1.5 (denoised) / 2 (prev); float16 and bfloat16 ≤ 0.5 + 1.5·eps32/eps over results in the
    format's normal range; no wrong non-finite output anywhere."""
    f32 = torch_lcm("float32")
    assert fmax(f32, "scaled_denoised") <= 1.5 and fmax(f32, "scaled_prev") <= 2
    for dtype, eps in (("float16", 2.0 ** -10), ("bfloat16", 2.0 ** -7)):
        assert fmax(torch_lcm(dtype), "scaled_denoised_normal", "scaled_prev_normal") <= 0.5 + 1.5 * 2.0 ** -23 / eps
    assert not any(int(r["nonfinite"]) for r in rows(ERR))


def test_float16_overflow_is_counted_apart_and_explained():
    """The float16 infinities are overflows (the exact value beyond 65520, correctly rounded to ±inf), counted in
    `overflow`, in one step; both documents give the count, schedule and timestep."""
    (r,) = overflow_rows()
    assert (r["impl"], r["dtype"], r["prediction_type"]) == ("TorchLCM", "float16", "epsilon")
    check("README", r"\((\d+) elements of denoised, (\w+), epsilon, t = (\d+)\)", int(r["overflow"]),
          r["beta_schedule"], int(r["t"]))
    check("design", r"so \|denoised\| ≈ \|x − m\|·([\d.]+·10⁴) passes 65520 where \|x − m\| > [\d.]+: (\d+) elements",
          1 / math.sqrt(float(rows("behaviour_alpha_bar_snr.csv", config=r["beta_schedule"], t=999)[0]["alpha_bar"])),
          int(r["overflow"]))
    check("design", r"squaredcos_cap_v2 and epsilon prediction, 1/√ᾱ ≈ ([\d.]+·10⁴) at t = 999",
          1 / math.sqrt(float(rows("behaviour_alpha_bar_snr.csv", config="squaredcos_cap_v2", t=999)[0]["alpha_bar"])))
    with np.errstate(over="ignore"):      # "beyond 65520": that is where float16 rounds to ±inf
        assert np.float16(65519.99) == 65504 and np.isinf(np.float16(65520.0))


def test_gpu_results_named_by_device():
    """The README names the GPU, torch version and date of the committed GPU results as the files record them."""
    import json
    device = rows("bench_cuda.csv")[0]["device"]
    gpu, torch_version, date = quoted("README", r"GPU results measured on an (\w+) \(torch ([\d.]+), ([\d-]+)\) are "
                                                r"in `reports/data/bench_cuda.md`")
    assert gpu in device and gpu in rows("accuracy_cuda.csv")[0]["device"]
    assert rows("bench_cuda.csv")[0]["torch_version"].startswith(torch_version + ".")
    label = json.loads((DATA / "cuda_evidence.json").read_text())["files"]["bench_cuda.md"]
    assert label["date"] == date and label["torch"].startswith(torch_version + ".")


# ---------------------------------------------------------------------------------------------------------------
# The reference's own accuracy (reference_vs_gpu §3)
# ---------------------------------------------------------------------------------------------------------------

def mpmath_worst(mode):
    return fmax(rows("accuracy_reference_vs_mpmath.csv", mode=mode), "scaled_denoised", "scaled_prev")


@pytest.mark.parametrize("doc, pattern", [
    ("README", r"measured worst on the accuracy page: ([\d.]+) without clip/threshold, ([\d.]+) with clip, ([\d.]+) "
               r"with thresholding"),
    ("design", r"measured worst ([\d.]+) without clip/threshold, ([\d.]+) with clip, ([\d.]+) with thresholding"),
])
def test_reference_against_mpmath(doc, pattern):
    check(doc, pattern, *(mpmath_worst(m) for m in ("none", "clip", "threshold")))
    assert max(mpmath_worst(m) for m in ("none", "clip", "threshold")) <= 4      # the bound both documents state


def test_table_ulps():
    ulps = {(r["beta_schedule"], r["table"]): r for r in rows("accuracy_table_ulps.csv")}
    naive = {s: ulps[(s, "naive_float64")] for s in ("scaled_linear", "linear", "squaredcos_cap_v2")}
    check("README", r"float64 `np.cumprod` is ([\d.]+) ulp off at t = (\d+) \(scaled_linear",
          float(naive["scaled_linear"]["max_ulp"]), int(naive["scaled_linear"]["worst_t"]))
    check("design", r"reaching ([\d.]+) ulp \(scaled_linear, t = (\d+)\), ([\d.]+) \(linear\) and ([\d.]+) "
                    r"\(squaredcos_cap_v2\)",
          float(naive["scaled_linear"]["max_ulp"]), int(naive["scaled_linear"]["worst_t"]),
          float(naive["linear"]["max_ulp"]), float(naive["squaredcos_cap_v2"]["max_ulp"]))
    (bound,) = quoted("design", r"measured: ≤ ([\d.]+) ulp on every entry checked")
    assert max(float(r["max_ulp"]) for r in rows("accuracy_table_ulps.csv", table="reference")) <= float(bound)


def test_diffusers_alpha_bar_relative_error():
    """docs/design.md §4.4: diffusers' float32 ᾱ (SD schedule) is at most ≈ 9.3e-7 off, relatively, near t = 513:
    its ulp error times float32's spacing at ᾱ, over ᾱ."""
    alpha = {int(r["t"]): float(r["alpha_bar"])
             for r in rows("behaviour_alpha_bar_snr.csv", config="SD/SDXL LCM (epsilon)")}
    rel = [(float(r["diffusers_float32"]) * float(np.spacing(np.float32(alpha[int(r["t"])]))) / alpha[int(r["t"])],
            int(r["t"])) for r in rows("accuracy_table_ulps_per_t.csv", beta_schedule="scaled_linear")]
    worst, t = max(rel)
    check("design", r"max\. relative error of ᾱ ≈ ([\d.e-]+), near t = (\d+) for the SD schedule", worst, t)


def test_table_entry_count():
    """README: the number of table entries checked is the product it spells out."""
    total, schedules, ts, tables = quoted("README", r"all ([\d,]+) entries checked \((\d+) schedules × "
                                                    r"T ∈ \{([\d, ]+)\} × with/without zero-SNR × (\d+) tables\)")
    assert number(total) == int(schedules) * sum(int(t) for t in ts.split(",")) * 2 * int(tables)


# ---------------------------------------------------------------------------------------------------------------
# Scheduler behaviour (reports/scheduler_behaviour.md)
# ---------------------------------------------------------------------------------------------------------------

def ts(r):
    return r["timesteps"].replace(" ", ", ")


def test_timestep_examples():
    sd = {int(r["n"]): r for r in rows("behaviour_timesteps_common.csv", config="SD/SDXL LCM (epsilon)")}
    for n in (1, 2, 4, 8):
        (shown,) = quoted("design", rf"n={n} `\[([\d, ]+)\]`")
        assert shown == ts(sd[n])
    orig = {(int(r["original_inference_steps"]), int(r["n"])): r
            for r in rows("behaviour_timesteps_original_steps.csv")}
    (first,) = quoted("design", r"orig 30 — k = 33, the first timestep is (\d+)")
    assert all(r["timesteps"].split()[0] == first for (o, _), r in orig.items() if o == 30)
    (four,) = quoted("design", r"orig 4 \(an SSD-1B LCM\) — n=4 `\[([\d, ]+)\]`, n ≥ 5 raises")
    assert four == ts(orig[(4, 4)]) and all(orig[(4, n)]["timesteps"].startswith("ValueError") for n in (5, 6, 7, 8))
    (half,) = quoted("design", r"strength 0\.5, n=4 — `\[([\d, ]+)\]`")
    assert half == ts(rows("behaviour_timesteps_strength.csv", strength=0.5, n=4)[0])


def test_boundary_scalings_at_t19():
    r = rows("behaviour_c_skip_c_out.csv", timestep_scaling=10.0, t=19)[0]
    check("design", r"at scaling 10, t = 19: c_skip ≈ ([\d.e-]+), 1 − c_out ≈ ([\d.e-]+)\.",
          float(r["c_skip"]), float(r["one_minus_c_out"]))


def test_float16_underflow_examples():
    """docs/design.md §8.B6: where c_skip drops below float16's η = 2⁻²⁵, and the cosine schedule's ᾱ_{T−1}."""
    c = {int(r["t"]): float(r["c_skip"]) for r in rows("behaviour_c_skip_c_out.csv", timestep_scaling=10.0)}
    a = float(rows("behaviour_alpha_bar_snr.csv", config="squaredcos_cap_v2", t=999)[0]["alpha_bar"])
    check("design", r"c_skip falls below η = 2⁻²⁵ from t = (\d+) at timestep_scaling 10",
          min(t for t in c if c[t] < 2.0 ** -25))
    check("design", r"ᾱ_\{T−1\} ≈ ([\d.e-]+) flushes to 0 and its √ᾱ_\{T−1\} ≈ ([\d.e-]+) is subnormal",
          a, math.sqrt(a))
    assert np.float16(a) == 0 and 0 < np.float16(math.sqrt(a)) < 2.0 ** -14


def test_set_alpha_to_one_demo():
    r = rows("behaviour_set_alpha_to_one.csv")[0]
    check("design", r"Then `final_alpha_cumprod` is ([\d.]+) vs ᾱ_0 = ([\d.]+); with `timesteps=\[999, 499, -1\]` the "
                    r"step at 499 differs by up to ([\d.]+)\.",
          float(r["final_alpha_cumprod_true"]), float(r["final_alpha_cumprod_false"]),
          float(r["max_abs_difference_of_prev_sample"]))


def quirk(n):
    return rows("behaviour_quirks.csv", number=n)[0]["diffusers"]


def test_quirk_demos():
    (q1,) = quoted("design", r"final \|prev − denoised\| up to ([\d.]+) in the demo")
    assert f"max |prev − denoised| = {q1})" in quirk(1)
    c_out, big = quoted("design", r"c_out\(−1\) = (−[\d.]+), flipping the model's contribution \(denoised reaches "
                                  r"\|·\| ≈ (\d+) in the demo\)")
    assert agrees(float(re.search(r"c_out\(-1\) = (-[\d.]+)", quirk(2)).group(1)), c_out)
    assert agrees(float(re.search(r"max \|·\| = ([\d.]+)", quirk(2)).group(1)), big)
    (q4,) = quoted("design", r"`strength=1\.5, n=4` gives `\[([\d, ]+)\]`")
    assert f"gives [{q4}]" in quirk(4)
    (q5,) = quoted("design", r"re-noised at the last level \(\|prev − denoised\| ≈ (\d+) in the demo\)")
    assert agrees(float(re.search(r"max \|prev − denoised\| = ([\d.]+)", quirk(5)).group(1)), q5)
    old, new = quoted("design", r"returned `t − T//n` \(n=4: ([\d, ]+)\) instead of the next scheduled entry "
                                r"\(([\d, −]+)\)")
    assert f"gives [{old}]" in quirk(6) and f"→ [{new.replace('−', '-')}]" in quirk(6)


def test_other_implementations_selection():
    sel = {int(r["n"]): r for r in rows("behaviour_selection.csv")}
    (authors,) = quoted("design", r"stride selection \(n=4 → `\[([\d, ]+)\]`\)")
    assert authors == sel[4]["authors' original"].replace(" ", ", ")
    (a1111,) = quoted("design", r"\(n=4 → `\[([\d, ]+)\]`\): the last step is always t = 19")
    assert a1111 == sel[4]["A1111 LCM (= ComfyUI lcm + normal)"].replace(" ", ", ")


def test_numpy_ties():
    """docs/design.md §2's near-ties (point 5), recomputed: NumPy's linspace and the double 0.58."""
    value, pos = quoted("design", r"NumPy's linspace gives ([\d.]+) at position (\d+)")
    assert repr(float(np.linspace(0, 30, 22, endpoint=False)[int(pos)])) == value
    (k,) = quoted("design", r"so `int\(50·0\.58\)` is (\d+)")
    assert int(50 * 0.58) == int(k)


# ---------------------------------------------------------------------------------------------------------------
# Testbed (reports/paper_figures.md, reports/timestep_scaling.md)
# ---------------------------------------------------------------------------------------------------------------

def test_end_point():
    b = rows("endpoint.csv", end="boundary")[0]
    check("design", r"s₀ = √\(\(1−ᾱ_0\)/ᾱ_0\) ≈ ([\d.]+) for the SD schedule", float(b["s_end"]))
    check("README", r"boundary at timestep 0 \(s₀ ≈ ([\d.]+), what distillation learns\)", float(b["s_end"]))
    check("design", r"the two differ by ([\d.]+) on average per coordinate", float(b["mean_abs_diff"]))


def test_epsilon_amplification_at_999():
    a = float(rows("behaviour_alpha_bar_snr.csv", config="SD/SDXL LCM (epsilon)", t=999)[0]["alpha_bar"])
    check("design", r"amplified by s ≈ ([\d.]+) at t = 999", math.sqrt((1 - a) / a))


def test_report_times():
    """Timing claims ("about N minutes") within a factor 2 of the full run recorded in report_runs.csv. The analogs'
    CPU time has no report of its own (the paper_figures page runs more than the analogs): its claim must stay below
    the page's time."""
    runs = {r["name"]: r for r in rows("report_runs.csv")}
    assert all(r["mode"] == "full" for r in runs.values())
    total = sum(float(r["seconds"]) for r in runs.values()) / 60
    for pattern in (r"About ([\d.]+) minutes on 2 cores", r"into `reports/` \(about ([\d.]+) minutes\)"):
        (m,) = quoted("README", pattern)
        assert float(m) / 2 <= total <= float(m) * 2, (pattern, total)
    (m,) = quoted("README", r"as CSV in about ([\d.]+) CPU-minutes")
    assert float(m) <= float(runs["paper_figures"]["seconds"]) / 60


# ---------------------------------------------------------------------------------------------------------------
# Reproducibility (docs/design.md §14 = lcm_ref.studies.reproducibility.TOLERANCES)
# ---------------------------------------------------------------------------------------------------------------

def section(doc, title):
    body = DOCS[doc].read_text()
    return body[body.index(title):]


def test_reproducibility_table_is_the_code_s():
    """The tolerance table of docs/design.md §14 states the tolerances and observations of ``TOLERANCES``."""
    body = section("design", "## §14 Reproducibility")
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
             if line.strip().startswith("| ") and not line.strip().startswith("| family")]
    table = {c[0]: (c[-2], c[-1]) for c in cells}
    fams = {f.name: f for f in R.TOLERANCES}
    assert set(table) == set(fams)
    for name, f in fams.items():
        claim, observed = table[name]
        nums = [number(x) for x in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?(?:e-?\d+)?)(?![\w.])", claim)]
        if f.rel == math.inf:
            assert "not reproducible" in claim
        elif f.rel == 0 and f.abs == 0:
            assert claim == "identical"
        else:
            assert {x for x in (f.rel, f.abs) if x} <= set(nums), (name, claim, f)
        for x in re.findall(r"\d+(?:\.\d+)?e-\d+|\d\.\d+", observed):
            assert x in f.observed, (name, x, f.observed)


def test_observed_cross_machine_change():
    """docs/design.md §14's observation: the committed value it starts from, and the relative change it quotes."""
    before, after = quoted("design", r"\(`ddim_lcm_timesteps`, 2 steps, fd\) from ([\d.]+) to ([\d.]+)\.")
    fd = float(rows("table1_analog.csv", method="ddim_lcm_timesteps", steps=2)[0]["fd"])
    assert agrees(fd, before)
    fam = R.family_of("table1_analog.csv", {"method": "ddim_lcm_timesteps"})
    assert fam.name == "testbed baselines" and "2.5e-7" in fam.observed
    assert agrees(abs(number(after) - number(before)) / number(before), "2.5e-7")
    assert R.within(before, after, fam, "fd")
