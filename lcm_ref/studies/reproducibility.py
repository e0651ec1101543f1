"""What a rerun of ``lcm-ref report`` reproduces, per family of numbers (docs/design.md §14), and a checker.

On one machine and install every number in ``reports/data`` is reproduced exactly (timings aside). Across machines
each family below has its own claim, from how its numbers are computed:

- **exact**: integers, mpmath, correctly rounded IEEE operations: identical;
- **rounding errors**: the scaled errors of diffusers and TorchLCM are maxima over inputs that include the noise torch
  draws: identical where torch uses the same kernels, within 2 scaled units elsewhere;
- **distillation curves** and the **distilled student**: float32 training, where a last-bit difference in one kernel
  compounds over thousands of optimizer steps;
- **testbed baselines**: diffusers' DDIM and DPM-Solver++ keep float32 tables;
- **testbed, float64**: the exact denoiser and consistency function in float64 NumPy/SciPy, whose BLAS and SIMD
  kernels differ between CPUs in the last bits;
- **timings**: never reproducible (benchmark claims are ratios from one run).

``TOLERANCES`` holds the claims; ``compare(a, b)`` checks two ``reports/data`` folders against them
(``python -m lcm_ref.studies.reproducibility A B``); ``index_markdown()`` is the text of the reports index.

Evidence (docs/design.md §14): the report run natively (AVX-512) and with torch, MKL, oneDNN, OpenBLAS and NumPy
forced to AVX2 (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"``) or to scalar kernels
(``ATEN_CPU_CAPABILITY=default``, SSE4.2 for the libraries).
"""

from __future__ import annotations

import csv
import math
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import NamedTuple


class Family(NamedTuple):
    name: str
    pages: str              #: where the numbers are shown
    files: tuple            #: "file.csv" or "file.csv:column=value" (rows whose column starts with value)
    rel: float              #: allowed relative difference (0: identical)
    abs: float              #: allowed absolute difference (0: none)
    columns: tuple = ()     #: if given, only these columns (fnmatch patterns) get the tolerance; others are exact
    ignore: tuple = ()      #: columns not compared (diagnostics)
    claim: str = ""
    observed: str = ""


#: The families, first match wins. ``observed``: the largest difference seen between a run on an AVX-512 machine
#: and the same install forced to AVX2 kernels, forced to scalar kernels, and the files committed from another
#: machine (docs/design.md §14 has the commands).
TOLERANCES = (
    Family("timings", "benchmarks, the index", ("bench.csv", "report_runs.csv"), math.inf, math.inf,
           claim="not reproducible: each speed claim is a ratio of two times from the same run on one machine",
           observed="—"),
    Family("exact", "scheduler_behaviour, reference_vs_gpu §3, timestep_scaling §1–2",
           ("behaviour_*.csv", "accuracy_reference_vs_mpmath.csv", "accuracy_table_ulps*.csv",
            "scaling_boundary.csv", "scaling_c_out_is_one.csv"), 0.0, 0.0,
           claim="identical: integers, mpmath rounded once, correctly rounded IEEE operations (diffusers' float32 "
                 "tables and scalings included)",
           observed="identical with AVX2, with scalar kernels, and in the files committed from another machine"),
    Family("rounding errors", "reference_vs_gpu §1, timestep_scaling §3, benchmarks (accuracy)",
           ("accuracy_scaled_error_cpu.csv", "scaling_sweep.csv", "bench_accuracy.csv"), 0.0, 2.0,
           columns=("*scaled*", "ours_*", "diffusers_*"), ignore=("rel_denoised",),
           claim="identical where torch runs its vectorized CPU kernels (AVX2 and AVX-512 give the same bits); "
                 "elsewhere torch draws other noise, so each maximum is taken over other inputs: within 2 scaled "
                 "units (the derived bounds of docs/design.md §8 hold everywhere)",
           observed="identical with AVX2 and in the files committed from another machine; with scalar kernels "
                    "1.63 scaled units (diffusers float32), 0.52 (TorchLCM float32)"),
    Family("distillation curves", "paper_figures (Fig. 3)", ("skipping_step.csv",), 0.1, 0.0,
           claim="relative 0.1: float32 training, where a last-bit difference in one kernel compounds over "
                 "thousands of optimizer steps",
           observed="1.8e-12 with AVX2 and in the committed files; 3.5e-2 with scalar kernels"),
    Family("distilled student", "paper_figures (the student's rows, Fig. 4)",
           ("guidance.csv", "table1_analog.csv:method=lcm_student", "spacing.csv:method=lcm_student"), 1e-2, 0.0,
           claim="relative 1e-2: the k = 20 student after its full training, the same float32 effect",
           observed="7e-12 with AVX2 and in the committed files; 7.2e-5 with scalar kernels"),
    Family("testbed baselines", "paper_figures (Table 1: DDIM, DPM-Solver++)",
           ("table1_analog.csv:method=ddim", "table1_analog.csv:method=dpmsolver"), 1e-5, 0.0,
           claim="relative 1e-5: diffusers' DDIM and DPM-Solver++ keep float32 tables, so a platform that rounds one "
                 "float32 coefficient operation differently moves a result by about float32's precision",
           observed="2.1e-13 with AVX2 or scalar kernels; 2.5e-7 on another CPU (0.5020389012 → 0.5020387762), "
                    "and float64 tables instead of float32 move that number by 2.8e-7"),
    Family("testbed, float64", "paper_figures (exact rows, end point, spacing), timestep_scaling §4",
           ("table1_analog.csv", "spacing.csv", "endpoint.csv", "timestep_scaling_samples.csv"), 1e-9, 1e-12,
           claim="relative 1e-9, or absolute 1e-12 for values that are themselves rounding-level (|δx| at large "
                 "timestep_scaling): float64 NumPy/SciPy, whose BLAS and SIMD kernels differ between CPUs in the "
                 "last bits",
           observed="relative 3e-12, absolute 4e-14"),
)


def _matches(spec: str, name: str, row: dict) -> bool:
    pattern, _, cond = spec.partition(":")
    if not fnmatch(name, pattern):
        return False
    if not cond:
        return True
    col, _, value = cond.partition("=")
    return str(row.get(col, "")).startswith(value)


def family_of(name: str, row: dict) -> Family | None:
    """The family of a row of ``reports/data/<name>`` (first match in TOLERANCES), None for a file not listed."""
    return next((f for f in TOLERANCES if any(_matches(s, name, row) for s in f.files)), None)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def within(a, b, fam: Family, column: str) -> bool:
    """Whether cells ``a`` and ``b`` (strings as read from CSV) agree within ``fam``'s tolerance."""
    if a == b:
        return True
    x, y = _num(a), _num(b)
    if column in fam.ignore:
        return True
    if x is None or y is None:
        return fam.rel == math.inf
    if fam.columns and not any(fnmatch(column, c) for c in fam.columns):
        return x == y
    if math.isnan(x) and math.isnan(y):
        return True
    if not (math.isfinite(x) and math.isfinite(y)):
        return x == y or fam.rel == math.inf
    return abs(x - y) <= max(fam.rel * max(abs(x), abs(y)), fam.abs)


def compare(a, b) -> list[dict]:
    """Every cell of the CSVs in folder ``a`` that differs from folder ``b`` beyond its family's tolerance (a file
    missing from ``b``, or with other rows, is one entry). Empty: ``b`` reproduces ``a`` as docs/design.md §14
    claims. GPU results (``*cuda*``) and timing files are not compared."""
    a, b = Path(a), Path(b)
    out = []
    for fa in sorted(a.glob("*.csv")):
        fam = family_of(fa.name, {})
        if "cuda" in fa.name or (fam is not None and fam.rel == math.inf):
            continue        # GPU results made elsewhere; timings
        fb = b / fa.name
        if not fb.exists():
            out.append(dict(file=fa.name, problem="missing"))
            continue
        with open(fa, newline="") as f:
            ra = list(csv.DictReader(f))
        with open(fb, newline="") as f:
            rb = list(csv.DictReader(f))
        if len(ra) != len(rb):
            out.append(dict(file=fa.name, problem=f"{len(ra)} rows vs {len(rb)}"))
            continue
        for i, (x, y) in enumerate(zip(ra, rb)):
            fam = family_of(fa.name, x)
            if fam is None:
                fam = Family("unlisted", "", (), 0.0, 0.0)
            for col in x:
                if not within(x[col], y.get(col), fam, col):
                    out.append(dict(file=fa.name, row=i + 2, column=col, a=x[col], b=y.get(col), family=fam.name,
                                    problem=f"beyond {fam.name} tolerance (rel {fam.rel:g}, abs {fam.abs:g})"))
    return out


def index_markdown() -> str:
    """The reproducibility paragraph of ``reports/README.md``."""
    from ..numerics import markdown_table
    rows = [{"numbers": f.name, "pages": f.pages, "across machines": f.claim, "observed": f.observed or "—"}
            for f in TOLERANCES]
    return ("## Reproducibility\n\n"
            "On one machine and install a rerun reproduces every number exactly (timings aside). On another machine "
            "each family of numbers holds to its own tolerance, from how it is computed (docs/design.md §14); "
            "`python -m lcm_ref.studies.reproducibility reports/data OTHER/data` checks two runs against it.\n\n"
            + markdown_table(rows))


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m lcm_ref.studies.reproducibility DATA_A DATA_B", file=sys.stderr)
        return 2
    bad = compare(*args)
    for d in bad:
        print(d)
    print(f"{len(bad)} difference(s) beyond the docs/design.md §14 tolerances")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
