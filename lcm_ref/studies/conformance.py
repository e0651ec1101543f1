"""The diffusers version matrix: ``conform`` on each release's LCMScheduler (and TCDScheduler where it exists) and on
lcm_ref's drop-in, in float32 and float16 — the back-end of ``make conformance`` and of
``notebooks/conformance.ipynb`` (docs/design.md §9, §13).

    python -m lcm_ref.studies.conformance --venvs ~/.cache/lcm_ref/venvs       # the whole matrix, 2 processes
    python -m lcm_ref.studies.conformance job --kind lcm --dtype float16 --json out.json   # one run, this env
    python -m lcm_ref.studies.conformance matrix                                # rebuild matrix.csv from the JSON
    python -m lcm_ref.studies.conformance verify                                # do the files come from one run?
    python -m lcm_ref.studies.conformance design --write                        # docs/design.md §13.3's table

Each diffusers release lives in its own virtual environment ``<venvs>/diffusers-<V>/`` (``make conformance``
creates them). The driver runs one job per implementation × dtype as a subprocess of that environment's Python,
with lcm_ref importable from this checkout (a folder holding only a link to the package goes on PYTHONPATH, so
nothing else of this environment leaks in), one torch thread each, ``jobs`` (default 2) at a time. A job runs
``lcm_ref.oracle.conform.conform`` with the default examples and writes its ``ConformanceReport`` JSON
(``conformance.schema.json``), named ``<impl>-<version>_<dtype>.json``.

Every file of ``<out>`` comes from one run, and each fact has one source:

- the reports are the source of every verdict, status, judged count and conform's own seconds; the jobs write them
  into a folder inside ``<out>`` that replaces ``<out>``'s reports only when the run is over (no report of an
  earlier run stays);
- ``matrix.csv`` is built from the reports (one row per implementation@version and dtype, its status, one column
  per concern: its verdict, ``n/a`` where a concern does not apply to the implementation);
- ``run.json`` holds what only the driver knows (wall and CPU time per job and in all, the machine, the versions
  of each job's environment and of the implementation) and, per result, the report's SHA-256 and the facts read
  back from it (``report_facts``), so that ``consistency`` (``verify``) can tell a file of another run;
- the page (``notebooks/conformance.ipynb``) and the table of docs/design.md §13.3 (``design_table``) are computed
  from these files, and a test checks both against them.

The page reads only these files: ``load_matrix``, ``run_info``, ``deviations`` (each distinct deviation with the rows
that show it, matched against ``KNOWN_DEVIATIONS``: the upstream change that introduced or fixed it),
``release_table``, ``verdict_table``; its text, figure and remaining tables are ``lcm_ref.studies.conformance_page``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ..numerics import csv_text, write_atomic, write_csv

__all__ = ["VERSIONS", "DTYPES", "CONCERNS", "Job", "plan", "run_job", "run_matrix", "write_matrix", "load_matrix",
           "matrix_rows", "verdict_table", "KNOWN_DEVIATIONS", "Deviation", "deviations", "NOT_APPLICABLE", "makespan",
           "default_venvs", "default_out", "main", "version_tuple", "FILE_PATTERN",
           "MATRIX_COLUMNS",
           "file_digest", "report_facts", "release_table", "DEVIATION_VERDICTS", "DESIGN_BEGIN", "DESIGN_END",
           "design_table", "design_section", "write_design", "consistency", "run_info"]

#: the releases of the matrix (docs/design.md §13.1): the first release with LCMScheduler, the ones that changed it,
#: and the newest at the time of writing
VERSIONS = ("0.22.0", "0.23.1", "0.24.0", "0.25.1", "0.26.3", "0.27.2", "0.31.0", "0.32.2", "0.42.1")
DTYPES = ("float32", "float16")
#: the concerns, in report order (``lcm_ref.oracle.conform.CONCERNS``; repeated so that reading the matrix needs no
#: torch)
CONCERNS = ("config", "timesteps", "original_inference_steps", "strength", "custom_timesteps", "tables", "denoised",
            "prev_sample", "final_step", "noise", "dtype", "clip_threshold", "add_noise", "get_velocity",
            "previous_timestep", "errors", "state", "interface")
VERDICTS = ("pass", "fail", "inconclusive", "unsupported", "not_observable", "n/a")
#: cell of a concern that was not run because it does not apply to the implementation (with the reason, below)
NOT_APPLICABLE = "n/a"
#: the columns of matrix.csv
MATRIX_COLUMNS = ["row", "implementation", "version", "sample_dtype", "file", "status", "seconds", *CONCERNS]
#: seconds one job may take before it is stopped (a default run takes 10–40 s on one core)
JOB_TIMEOUT_S = 600

_ROOT = Path(__file__).resolve().parents[2]


def default_venvs() -> Path:
    """Where ``make conformance`` keeps the per-release environments: $LCM_REF_VENVS or ~/.cache/lcm_ref/venvs."""
    return Path(os.environ.get("LCM_REF_VENVS") or Path.home() / ".cache" / "lcm_ref" / "venvs")


def default_out() -> Path:
    """reports/data/conformance of the checkout (or of the current directory outside one)."""
    base = _ROOT if (_ROOT / "pyproject.toml").exists() else Path.cwd()
    return base / "reports" / "data" / "conformance"


# ---------------------------------------------------------------------------------------------------------------
# One job (runs inside a release's environment)
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One conform run: ``kind`` "lcm" (diffusers' LCMScheduler), "tcd" (TCDScheduler) or "dropin" (lcm_ref's
    drop-in), in the environment of diffusers ``version``, samples in ``dtype``."""
    kind: str
    version: str
    dtype: str

    @property
    def implementation(self) -> str:
        return {"lcm": "diffusers LCMScheduler", "tcd": "diffusers TCDScheduler",
                "dropin": "lcm_ref drop-in LCMScheduler"}[self.kind]

    @property
    def label(self) -> str:
        """implementation@version (the drop-in is named by lcm_ref's version, run beside diffusers ``version``)."""
        if self.kind == "dropin":
            from .. import __version__
            return f"lcm_ref.torch_impl.LCMScheduler@{__version__}"
        return f"{'LCMScheduler' if self.kind == 'lcm' else 'TCDScheduler'}@{self.version}"

    @property
    def filename(self) -> str:
        name = {"lcm": "LCMScheduler", "tcd": "TCDScheduler", "dropin": "lcm_ref-dropin"}[self.kind]
        return f"{name}-{self.version}_{self.dtype}.json"


def version_tuple(v: str) -> tuple:
    """(major, minor, patch) of a version string, for sorting."""
    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])


def job_factory(kind: str):
    """(factory, impl name for reports and replay, concerns to run, adapter used or None) for ``kind`` in the
    installed diffusers."""
    from ..oracle import adapters
    if kind == "dropin":
        from ..torch_impl import LCMScheduler
        return LCMScheduler, "lcm_ref.torch_impl:LCMScheduler", adapters.ALL_CONCERNS, None
    import diffusers
    if kind == "tcd":
        return diffusers.TCDScheduler, "diffusers:TCDScheduler", adapters.TCD_CONCERNS, None
    missing = adapters.missing_keywords(diffusers.LCMScheduler)
    if missing["constructor"] or missing["set_timesteps"]:
        return (adapters.compat_LCMScheduler, "lcm_ref.oracle.adapters:compat_LCMScheduler", adapters.ALL_CONCERNS,
                "diffusers_compat")
    return diffusers.LCMScheduler, "diffusers:LCMScheduler", adapters.ALL_CONCERNS, None


def run_job(kind: str, dtype: str, json_path, *, examples=None, shrink=True) -> dict:
    """Run one conform job in this environment and write its report to ``json_path``; returns the job's metadata
    (printed as the last line of stdout by ``job``): what ran (implementation, its package and version, adapter,
    missing keywords) and in which environment (diffusers, torch, hypothesis, NumPy), and the job's CPU time. The
    verdicts and conform's own time are the report's: the driver reads them from the file it wrote."""
    import hypothesis
    import numpy
    import torch
    torch.set_num_threads(1)
    import diffusers
    from ..oracle import adapters
    from ..oracle.compare import implementation_info
    from ..oracle.conform import conform
    factory, impl, concerns, adapter = job_factory(kind)
    report = conform(factory, dtype=dtype, impl=impl, concerns=concerns, examples=examples, shrink=shrink)
    write_atomic(json_path, report.to_json())
    missing = adapters.missing_keywords(getattr(factory, "cls", factory)) if kind != "dropin" else {}
    info = implementation_info(factory)
    return {"kind": kind, "dtype": dtype, "diffusers": diffusers.__version__, "torch": torch.__version__,
            "hypothesis": hypothesis.__version__, "numpy": numpy.__version__, "implementation": impl,
            "implementation_package": info["package"], "implementation_version": info["version"],
            "adapter": adapter, "cpu_s": round(time.process_time(), 2), "missing": missing,
            "concerns": list(concerns), "file": Path(json_path).name}


def file_digest(path) -> str:
    """SHA-256 of a file's bytes (hex): how run.json names the exact report each result belongs to."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def report_facts(path) -> dict:
    """What run.json and the page take from a report file, read from the file itself: ``sha256``, ``status``,
    ``seconds`` (conform's own), ``verdicts`` (concern -> verdict), ``judged`` (concern -> judged examples, where
    the report has them), and the implementation's package and version where the report records them."""
    rep = json.loads(Path(path).read_text())
    return {"sha256": file_digest(path), "status": rep.get("status"), "seconds": rep.get("seconds"),
            "verdicts": {c["concern"]: c["verdict"] for c in rep["concerns"]},
            "judged": {c["concern"]: c["judged"] for c in rep["concerns"] if "judged" in c},
            **{k: rep[k] for k in ("implementation_package", "implementation_version") if k in rep}}


# ---------------------------------------------------------------------------------------------------------------
# The matrix (runs in the main environment)
# ---------------------------------------------------------------------------------------------------------------

def plan(versions=VERSIONS, dtypes=DTYPES, *, dropin_version=None) -> list[Job]:
    """Every job of the matrix: LCMScheduler of each release, TCDScheduler from 0.27 on, the drop-in beside
    ``dropin_version`` (default: the newest release), each dtype; the slowest (oldest releases: more failing
    concerns to shrink) first."""
    jobs = []
    for v in versions:
        for d in dtypes:
            jobs.append(Job("lcm", v, d))
            if version_tuple(v) >= (0, 27):
                jobs.append(Job("tcd", v, d))
    newest = dropin_version or max(versions, key=version_tuple)
    jobs += [Job("dropin", newest, d) for d in dtypes]
    return sorted(jobs, key=lambda j: (version_tuple(j.version) if j.kind == "lcm" else (9, 9), j.kind))


@contextlib.contextmanager
def _package_path():
    """A temporary folder whose only entry is a link to this lcm_ref package (for PYTHONPATH)."""
    import lcm_ref
    with tempfile.TemporaryDirectory(prefix="lcm_ref-path-") as d:
        os.symlink(Path(lcm_ref.__file__).resolve().parent, Path(d) / "lcm_ref")
        yield d


def _python(venvs: Path, version: str) -> Path:
    return Path(venvs) / f"diffusers-{version}" / "bin" / "python"


def _run_one(job: Job, venvs: Path, stage: Path, pypath: str, examples, shrink) -> dict:
    """Run ``job`` in its release's environment, its report into ``stage``; returns its run.json entry, with the
    report's own facts (``report_facts``) read from the file the job wrote."""
    py = _python(venvs, job.version)
    path = stage / job.filename
    cmd = [str(py), "-m", "lcm_ref.studies.conformance", "job", "--kind", job.kind, "--dtype", job.dtype,
           "--json", str(path)]
    if examples is not None:
        cmd += ["--examples", str(examples)]
    if not shrink:
        cmd.append("--no-shrink")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=pypath, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1",
               PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=JOB_TIMEOUT_S,
                           cwd=tempfile.gettempdir())
        tail = (p.stdout + p.stderr).strip().splitlines()
        meta = None
        for line in reversed(p.stdout.strip().splitlines()):
            if line.startswith("{"):
                meta = json.loads(line)
                break
        ok = p.returncode == 0 and meta is not None and path.is_file()
        if meta is not None and not path.is_file():
            tail.append(f"the job wrote no report at {path}")
    except subprocess.TimeoutExpired:
        ok, meta, tail = False, None, [f"timed out after {JOB_TIMEOUT_S} s"]
    wall = time.perf_counter() - t0
    meta = meta or {"kind": job.kind, "dtype": job.dtype}
    if not ok:
        meta["error"] = "\n".join(tail[-20:])
    meta.update(ok=ok, kind=job.kind, dtype=job.dtype, version=job.version, label=job.label, wall_s=round(wall, 2),
                file=job.filename)
    if ok:
        meta.update(report_facts(path))
    return meta


def run_matrix(venvs=None, out=None, *, versions=VERSIONS, dtypes=DTYPES, jobs=2, examples=None, shrink=True,
               progress=True) -> dict:
    """Run every job of ``plan(versions, dtypes)`` (``jobs`` processes at a time) and make ``out`` hold exactly this
    run: the JSON reports (every older report in ``out`` is removed), ``matrix.csv`` built from them, and
    ``run.json`` (timings, versions, machine, and per result the SHA-256, status, verdicts and seconds of the report
    it wrote, read back from the file). The jobs write into a folder inside ``out`` that is moved into place only
    at the end, so an interrupted run leaves the previous files. Returns run.json's content. A release whose
    environment is missing is skipped with a message (``make conformance`` creates them)."""
    from tqdm.auto import tqdm
    from .report import environment
    venvs = Path(venvs or default_venvs()).expanduser().resolve()
    # absolute: the jobs run in another directory, and a relative --out (make conformance's) once sent their
    # reports there while run.json and matrix.csv went here
    out = Path(out or default_out()).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    have = [v for v in versions if _python(venvs, v).exists()]
    for v in versions:
        if v not in have:
            print(f"conformance: no environment {venvs}/diffusers-{v} (make conformance creates it); skipped",
                  file=sys.stderr)
    todo = plan(have, dtypes)
    results = []
    t0 = time.perf_counter()
    with _package_path() as pypath, tempfile.TemporaryDirectory(prefix=".run-", dir=out) as stage, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        futures = {pool.submit(_run_one, j, venvs, Path(stage), pypath, examples, shrink): j for j in todo}
        with tqdm(total=len(todo), unit="run", desc="conformance", disable=not progress, file=sys.stderr) as bar:
            for fut in concurrent.futures.as_completed(futures):
                meta = fut.result()
                results.append(meta)
                bar.set_postfix_str(f"{meta['label']} {meta['dtype']}: {'ok' if meta['ok'] else 'ERROR'}")
                if not meta["ok"]:
                    tqdm.write(f"conformance: {meta['label']} {meta['dtype']} failed to run:\n{meta.get('error')}",
                               file=sys.stderr)
                bar.update()
        wall = time.perf_counter() - t0
        for old in out.glob("*.json"):          # one run per folder: no report of an earlier run stays
            if FILE_PATTERN.match(old.name):
                old.unlink()
        for m in results:
            if m["ok"]:
                os.replace(Path(stage) / m["file"], out / m["file"])
    order = {(j.label, j.dtype): i for i, j in enumerate(sorted(todo, key=_row_order))}
    results.sort(key=lambda m: order.get((m["label"], m["dtype"]), 1e9))
    cpu = [m.get("cpu_s", 0.0) for m in results]
    env = environment()
    info = {"wall_s": round(wall, 1), "jobs": int(jobs), "runs": len(results),
            "conform_seconds": round(sum(m.get("seconds") or 0.0 for m in results), 1),
            "cpu_seconds": round(sum(cpu), 1), "cpu_makespan_s": round(makespan(cpu, int(jobs)), 1),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cpus": os.cpu_count(), "cpu": env["cpu"], "machine": platform.machine(),
            "python": platform.python_version(), "lcm_ref": env["lcm_ref"], "git": env["git"], "date": env["date"],
            "examples": examples, "shrink": shrink, "results": results}
    write_matrix(out)
    write_atomic(out / "run.json", json.dumps(info, indent=2) + "\n")
    return info


def makespan(seconds, workers: int) -> float:
    """The wall time of running tasks of the given CPU ``seconds`` on ``workers`` otherwise idle cores, longest
    first to the least loaded core (the driver's order is close to it): what the matrix takes on a quiet machine,
    measured from each job's own CPU time (``time.process_time()``, imports included) when the machine was shared."""
    loads = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


def _row_order(job: Job):
    return ({"lcm": 0, "tcd": 1, "dropin": 2}[job.kind], version_tuple(job.version), DTYPES.index(job.dtype)
            if job.dtype in DTYPES else 9)


# ---------------------------------------------------------------------------------------------------------------
# Reading the reports
# ---------------------------------------------------------------------------------------------------------------

#: the name of a report file: <implementation>-<diffusers version>_<dtype>.json (``Job.filename``)
FILE_PATTERN = re.compile(r"^(?P<name>LCMScheduler|TCDScheduler|lcm_ref-dropin)-(?P<version>[0-9][^_]*)_(?P<dtype>[a-z0-9]+)"
                   r"\.json$")


def _row_label(name, version, lcm_ref_version):
    if name == "lcm_ref-dropin":
        return f"lcm_ref.torch_impl.LCMScheduler@{lcm_ref_version}"
    return f"{name}@{version}"


def matrix_rows(folder) -> list[dict]:
    """One row per JSON report in ``folder`` (files named as ``Job.filename``): ``row`` (implementation@version),
    ``implementation``, ``version`` (diffusers), ``sample_dtype``, ``file``, ``seconds``, then one cell per concern —
    its verdict, or ``n/a`` for a concern the run did not include. Sorted LCMScheduler by version, then
    TCDScheduler, then the drop-in; float32 before float16."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        m = FILE_PATTERN.match(path.name)
        if not m:
            continue
        rep = json.loads(path.read_text())
        verdicts = {c["concern"]: c["verdict"] for c in rep["concerns"]}
        row = {"row": _row_label(m["name"], m["version"], rep.get("lcm_ref_version", "")),
               "implementation": rep["implementation"], "version": m["version"], "sample_dtype": rep["dtype"],
               "file": path.name, "status": rep.get("status", ""), "seconds": rep.get("seconds")}
        for c in CONCERNS:
            row[c] = verdicts.get(c, NOT_APPLICABLE)
        rows.append(row)
    kind = {"LCMScheduler": 0, "TCDScheduler": 1}
    rows.sort(key=lambda r: (kind.get(r["row"].split("@")[0], 2), version_tuple(r["version"]),
                             DTYPES.index(r["sample_dtype"]) if r["sample_dtype"] in DTYPES else 9))
    return rows


def write_matrix(folder, path=None) -> Path:
    """``matrix.csv`` of ``folder``'s reports (``matrix_rows``)."""
    folder = Path(folder)
    rows = matrix_rows(folder)
    columns = MATRIX_COLUMNS
    return write_csv(rows, path or folder / "matrix.csv", columns)


def load_matrix(folder) -> list[dict]:
    """The rows of ``folder``/matrix.csv (cells as strings, seconds as float); without matrix.csv (reports written
    one by one with ``lcm-ref conform --json``), ``matrix_rows`` of the reports themselves."""
    if not (Path(folder) / "matrix.csv").is_file():
        return matrix_rows(folder)
    with open(Path(folder) / "matrix.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        with contextlib.suppress(TypeError, ValueError):
            r["seconds"] = float(r["seconds"])
    return rows


_SHORT = {"pass": "pass", "fail": "FAIL", "inconclusive": "inconcl.", "unsupported": "unsupported",
          "not_observable": "not obs.", NOT_APPLICABLE: "n/a"}


def verdict_table(rows, *, concerns=CONCERNS, markdown=False) -> list[dict]:
    """The matrix: one dict per row with ``implementation@version``, ``samples`` (dtype) and a short plain cell per
    concern (``FAIL`` in capitals; the CSV's values); ``markdown``: for a page, with fail in bold."""
    cell = (lambda v: f"**{_SHORT.get(v, v)}**" if v == "fail" else _SHORT.get(v, v)) if markdown else \
        (lambda v: _SHORT.get(v, v))
    return [{"implementation@version": r["row"], "samples": r["sample_dtype"], **{c: cell(r[c]) for c in concerns}}
            for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Deviations, explained
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Deviation:
    """A known deviation: ``key``; ``title``; the ``concerns`` it shows in; ``verdicts`` it gives (fail or
    unsupported); ``match(concern_result: dict) -> bool`` recognises it in a report's concern entry; ``what``
    explains it; ``upstream`` names the change that introduced or fixed it."""
    key: str
    title: str
    concerns: tuple
    verdicts: tuple
    match: Callable
    what: str
    upstream: str
    kinds: tuple = ("lcm",)


def _text(c) -> str:
    words = [str(c.get(k) or "") for k in ("detail", "reason", "likely_cause")] + list(c.get("refused") or [])
    return " ".join(words)


def _has(*words):
    return lambda c: all(w.lower() in _text(c).lower() for w in words)


#: The deviations the matrix is expected to show, each with the upstream change (docs/design.md §13.1). A failing or
#: refused concern that matches none of these is listed as unexplained on the page: a new finding to investigate.
KNOWN_DEVIATIONS = (
    Deviation("stride_selection", "Stride selection of the timesteps",
              ("timesteps", "original_inference_steps", "strength"), ("fail",),
              _has("scheduler.timesteps ="),
              "`origin[::-(L//n)][:n]` (the authors' rule) instead of `floor(linspace(0, L, n, endpoint=False))`: "
              "n=4 gives [999, 759, 519, 279] instead of [999, 759, 499, 259]; the concerns `original_inference_steps` "
              "and `strength` compare the same selection on other grids.",
              "introduced 0.22.0 (958e17dada, #5448); replaced in 0.24.0 (dc21498b43, #5836)"),
    Deviation("final_step_noise", "Noise added on the last step", ("final_step",), ("fail",), _has("last step"),
              "0.22.0 re-noises whenever n > 1, the last step included (to the last timestep's own level), so the "
              "run does not end on `denoised`.",
              "introduced 0.22.0 (958e17dada, #5448); fixed in 0.23.0 (aab6de22c3, #5681)"),
    Deviation("noise_dtype", "Noise drawn in float32 for float16 latents", ("noise", "dtype"), ("fail",),
              lambda c: _has("float32")(c) and ("noise" in _text(c) or "dtype" in _text(c)),
              "0.22.0 calls `randn_tensor` without `dtype=`: z is float32 whatever the latents' dtype, a different "
              "stream than the float16 draw, and prev_sample is promoted to float32.",
              "introduced 0.22.0 (958e17dada, #5448); fixed in 0.23.0 (aab6de22c3, #5681: dtype=denoised.dtype)"),
    Deviation("no_timestep_scaling", "No `timestep_scaling` config key", ("config",), ("unsupported", "inconclusive"),
              _has("timestep_scaling"),
              "0.22.0 hard-codes u = t/0.1; through `diffusers_compat` configs with timestep_scaling = 10 are judged "
              "normally and the others are refused (reported, not failed).",
              "key added in 0.23.0 (aab6de22c3, #5681)"),
    Deviation("no_custom_timesteps", "No custom `timesteps=`", ("custom_timesteps", "errors"),
              ("unsupported", "inconclusive"),
              _has("timesteps"),
              "`set_timesteps` takes only num_inference_steps before 0.24.",
              "added in 0.24.0 (67d070749a, #5874)"),
    Deviation("required_num_inference_steps", "`num_inference_steps` required", ("errors",), ("fail", "unsupported"),
              _has("missing 1 required positional argument", "num_inference_steps"),
              "`set_timesteps(num_inference_steps, ...)` takes it positionally and without a default before 0.24, so "
              "a call with neither num_inference_steps nor timesteps raises TypeError where diffusers from 0.24 on, "
              "and the reference, raise ValueError.",
              "optional from 0.24.0 (67d070749a, #5874)"),
    Deviation("no_previous_timestep", "No `previous_timestep`", ("previous_timestep",), ("unsupported", "inconclusive"),
              _has("previous_timestep"), "the method does not exist before 0.24.",
              "added in 0.24.0 (67d070749a, #5874)"),
    Deviation("previous_timestep_formula", "`previous_timestep` returns t − T//n", ("previous_timestep",), ("fail",),
              _has("T//n"),
              "n=4 gives 749, 509, 249, 9 instead of the next scheduled entry 759, 499, 259, −1 (docs/design.md "
              "§6.Q6); `step` never calls it, so no output changes.",
              "introduced 0.24.0 (67d070749a, #5874, taken from DDPM); fixed in 0.32.0 (5effcd3e64, #9384)",
              ("lcm", "tcd")),
    Deviation("tcd_explicit_original_steps", "TCD: an explicit original_inference_steps selects from every training "
              "timestep", ("original_inference_steps",), ("fail",), _has("original_inference_steps="),
              "whenever `original_inference_steps` is passed to `TCDScheduler.set_timesteps` (any value, 50 "
              "included) its origin grid is every training timestep, range(0, int(T·strength)), instead of "
              "(1..orig)·k − 1: n=4 with original_inference_steps=50 gives [999, 749, 499, 249] where the same call "
              "without the keyword, and LCMScheduler either way, give [999, 759, 499, 259] (docs/design.md §13.2). "
              "LCMScheduler is not affected.",
              "in TCDScheduler since it was added (0.27.0); unchanged through 0.42.1 (measured)", ("tcd",)),
    Deviation("tcd_original_steps_unchecked", "TCD: an explicit original_inference_steps is not checked against "
              "num_train_timesteps", ("errors",), ("fail",), _has("original_inference_steps", "num_train_timesteps"),
              "`TCDScheduler.set_timesteps` compares original_inference_steps with num_train_timesteps only on its "
              "default path, where the keyword is left out and the config's value is used. A value passed "
              "explicitly takes the other path, the one that selects from every training timestep (the deviation "
              "above); there the value only bounds n (n ≤ original_inference_steps, and the grid's length // n ≥ 1), "
              "so `set_timesteps(1, original_inference_steps=1032)` with T = 1000 returns normally with timesteps "
              "[999] where LCMScheduler, whose check comes before both paths, and the reference raise ValueError. "
              "The schedule does not depend on the value there, so no output changes: a misconfiguration passes "
              "silently.",
              "in TCDScheduler since it was added (0.27.0); unchanged through 0.42.1 (measured)", ("tcd",)),
    Deviation("no_begin_index", "No `set_begin_index`", ("state",), ("unsupported", "inconclusive"),
              _has("set_begin_index"),
              "img2img pipelines cannot start mid-schedule without the first-step lookup.",
              "added in 0.27.0 (adcbe674a4, #6728)"),
)


def _example(c) -> str:
    """What one report says about a concern: what was refused (unsupported), else why it is not pass (the
    report's ``reason``, where it has one and the verdict is not fail), else the first line of the detail."""
    if c["verdict"] == "unsupported" and c.get("refused"):
        text = c["refused"][0]
    elif c["verdict"] != "fail" and c.get("reason"):
        text = c["reason"]
    else:
        text = ((c.get("detail") or "").splitlines() or [""])[0]
    return text if len(text) <= 240 else text[:237] + "..."


def _find(dev_list, kind, concern, c):
    for d in dev_list:
        if concern in d.concerns and c["verdict"] in d.verdicts and kind in d.kinds and d.match(c):
            return d
    return None


#: the verdicts a deviation can give: a cell with another verdict shows none
DEVIATION_VERDICTS = ("fail", "inconclusive", "unsupported")


def _kind(row: str) -> str:
    return {"LCMScheduler": "lcm", "TCDScheduler": "tcd"}.get(row.split("@")[0], "dropin")


def _cells(folder, known):
    """(matrix row, concern result, the known deviation it shows or None) for every fail, inconclusive or
    unsupported cell of ``folder``'s reports, in matrix order."""
    for r in matrix_rows(folder):
        rep = json.loads((Path(folder) / r["file"]).read_text())
        for c in rep["concerns"]:
            if c["verdict"] in DEVIATION_VERDICTS:
                yield r, c, _find(known, _kind(r["row"]), c["concern"], c)


def _key(r, c, d) -> str:
    return d.key if d else f"unexplained:{_kind(r['row'])}:{c['concern']}:{c['verdict']}"


def deviations(folder, *, known=KNOWN_DEVIATIONS) -> list[dict]:
    """Each distinct deviation found in ``folder``'s reports: the known ones (``known``) with the rows and concerns
    that show them, then any fail, inconclusive or unsupported verdict that matches none (``key``
    "unexplained:<kind>:<concern>:<verdict>", with its detail and likely cause). Each entry: key, title, what,
    upstream, concerns, rows (implementation@version dtype), example (the first detail line and likely cause of one
    occurrence), known."""
    found: dict = {}
    for r, c, d in _cells(folder, known):
        key = _key(r, c, d)
        e = found.setdefault(key, {
            "key": key, "title": d.title if d else f"{c['concern']}: {c['verdict']} (not a known deviation)",
            "what": d.what if d else "", "upstream": d.upstream if d else "", "concerns": [], "rows": [],
            "example": _example(c),
            "likely_cause": c.get("likely_cause") or "", "known": d is not None})
        if c["concern"] not in e["concerns"]:
            e["concerns"].append(c["concern"])
        tag = f"{r['row']} {r['sample_dtype']}"
        if tag not in e["rows"]:
            e["rows"].append(tag)
    order = {d.key: i for i, d in enumerate(known)}
    return sorted(found.values(), key=lambda e: (order.get(e["key"], len(order)), e["key"]))


def release_table(folder, *, known=KNOWN_DEVIATIONS) -> list[dict]:
    """What each implementation@version shows, in short — the table of the page's section 2 and of docs/design.md
    §13.3 (``design_table``): one row per implementation and run of consecutive versions that show the same
    deviations; per deviation its title and the concerns with their verdict, "(float16 only)" where one sample
    dtype alone shows it. Columns ``release`` and ``deviations``."""
    shown: dict = {}                # row label -> deviation key -> {"title", "cells": {concern: verdict}, "dtypes"}
    dtypes: dict = {}
    for r in matrix_rows(folder):
        shown.setdefault(r["row"], {})
        dtypes.setdefault(r["row"], set()).add(r["sample_dtype"])
    for r, c, d in _cells(folder, known):
        e = shown[r["row"]].setdefault(_key(r, c, d), {
            "title": d.title if d else f"{c['concern']}: not a known deviation", "cells": {}, "dtypes": set()})
        e["cells"].setdefault(c["concern"], c["verdict"])
        e["dtypes"].add(r["sample_dtype"])
    order = {d.key: i for i, d in enumerate(known)}

    def describe(label):
        parts = []
        for key in sorted(shown[label], key=lambda k: (order.get(k, len(order)), k)):
            e = shown[label][key]
            by_verdict: dict = {}
            for concern, verdict in e["cells"].items():
                by_verdict.setdefault(verdict, []).append(f"`{concern}`")
            where = "; ".join(f"{', '.join(cs)}: {v}" for v, cs in by_verdict.items())
            only = (f", {' and '.join(sorted(e['dtypes']))} only"
                    if e["dtypes"] != dtypes[label] else "")
            parts.append(f"{e['title']} ({where}{only})")
        return "; ".join(parts) or "none"

    groups: list = []               # [name, first version, last version, description]
    for label in shown:             # matrix order: by implementation, then version
        name, _, version = label.partition("@")
        text = describe(label)
        if groups and groups[-1][0] == name and groups[-1][3] == text:
            groups[-1][2] = version
        else:
            groups.append([name, version, version, text])
    return [{"release": f"{n} {a}" if a == b else f"{n} {a} – {b}", "deviations": t} for n, a, b, t in groups]


#: the lines around the generated table of docs/design.md §13.3
DESIGN_BEGIN = ("<!-- generated from reports/data/conformance by `python -m lcm_ref.studies.conformance design "
                "--write`; a test checks it: do not edit by hand -->")
DESIGN_END = "<!-- end of the generated table -->"


def design_table(folder) -> str:
    """docs/design.md §13.3's table: ``release_table`` as markdown between ``DESIGN_BEGIN`` and ``DESIGN_END``."""
    from ..numerics import markdown_table
    return f"{DESIGN_BEGIN}\n{markdown_table(release_table(folder))}{DESIGN_END}"


def design_section(text: str) -> Optional[str]:
    """The generated table (markers included) in a document's ``text``, or None if it has none."""
    a, b = text.find(DESIGN_BEGIN), text.find(DESIGN_END)
    return text[a:b + len(DESIGN_END)] if 0 <= a < b else None


def write_design(doc, folder) -> bool:
    """Replace the generated table in ``doc`` (docs/design.md) with ``design_table(folder)``; True if it changed.
    LCMRefError if the document has no markers."""
    from ..errors import LCMRefError
    doc = Path(doc)
    text = doc.read_text()
    old = design_section(text)
    if old is None:
        raise LCMRefError("doc", str(doc), f"a document with the lines {DESIGN_BEGIN!r} and {DESIGN_END!r}")
    new = design_table(folder)
    if new != old:
        write_atomic(doc, text.replace(old, new))
    return new != old


def run_info(folder) -> dict:
    """run.json of ``folder`` (timings and environment of the last ``make conformance``), or {}."""
    p = Path(folder) / "run.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def consistency(folder) -> list[str]:
    """Every way ``folder``'s files fail to come from one run (empty when they do): run.json lists exactly the
    report files present, each with the SHA-256 of its bytes, and with the report's status, seconds, verdicts and
    judged counts, and the implementation's package and version where the report records them; each report's file
    name, implementation version and sample dtype agree; matrix.csv is what the reports say."""
    folder = Path(folder)
    info = run_info(folder)
    problems = []
    if not info:
        return [f"{folder}: no run.json"]
    files = {p.name for p in folder.glob("*.json") if FILE_PATTERN.match(p.name)}
    listed = {m["file"]: m for m in info.get("results", [])}
    problems += [f"{f}: not in run.json (a report of another run)" for f in sorted(files - set(listed))]
    problems += [f"{f}: in run.json, but no such file" for f in sorted(set(listed) - files)]
    for name in sorted(files & set(listed)):
        m, facts = listed[name], report_facts(folder / name)
        for key, want in facts.items():
            if m.get(key) != want:
                problems.append(f"{name}: run.json says {key} = {m.get(key)!r}, the file {want!r}")
        fm = FILE_PATTERN.match(name)
        rep = json.loads((folder / name).read_text())
        if rep.get("dtype") != fm["dtype"] or m.get("dtype") != fm["dtype"]:
            problems.append(f"{name}: sample dtype {rep.get('dtype')!r} in the report, {m.get('dtype')!r} in "
                            f"run.json")
        version = m.get("implementation_version")
        want = rep.get("lcm_ref_version") if fm["name"] == "lcm_ref-dropin" else fm["version"]
        if version != want:
            problems.append(f"{name}: implementation version {version!r} in run.json, want {want!r} (the "
                            f"{'report' if fm['name'] == 'lcm_ref-dropin' else 'file name'})")
    if (folder / "matrix.csv").is_file():
        if (folder / "matrix.csv").read_text() != csv_text(matrix_rows(folder), MATRIX_COLUMNS):
            problems.append("matrix.csv: not what the reports say (python -m lcm_ref.studies.conformance matrix)")
    else:
        problems.append("matrix.csv: missing")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_ref.studies.conformance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    p.add_argument("--venvs", default=None, help="folder of the diffusers-<V> environments (default "
                   "$LCM_REF_VENVS or ~/.cache/lcm_ref/venvs)")
    p.add_argument("--out", default=None, help="where the reports go (default reports/data/conformance)")
    p.add_argument("--versions", nargs="+", default=list(VERSIONS), help="diffusers releases (default: all)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), help="sample dtypes (default float32 float16)")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    p.add_argument("--examples", type=int, default=None, help="hypothesis examples per concern (default: conform's)")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink failures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    j = sub.add_parser("job", help="one conform run in this environment")
    j.add_argument("--kind", choices=["lcm", "tcd", "dropin"], required=True)
    j.add_argument("--dtype", default="float32")
    j.add_argument("--json", required=True)
    j.add_argument("--examples", type=int, default=None)
    j.add_argument("--no-shrink", action="store_true")
    sub.add_parser("matrix", help="rebuild matrix.csv from the JSON reports in --out")
    sub.add_parser("verify", help="check that the files in --out come from one run (exit 1 if not)")
    d = sub.add_parser("design", help="print docs/design.md §13.3's table from the reports in --out")
    d.add_argument("--write", metavar="DOC", nargs="?", const=str(_ROOT / "docs" / "design.md"), default=None,
                   help="replace the generated table in DOC (default docs/design.md) instead")
    args = p.parse_args(argv)
    if args.command == "verify":
        problems = consistency(args.out or default_out())
        print("\n".join(problems) or "one run: run.json, the reports and matrix.csv agree")
        return 1 if problems else 0
    if args.command == "design":
        if args.write:
            print(f"{args.write}: {'updated' if write_design(args.write, args.out or default_out()) else 'unchanged'}")
        else:
            print(design_table(args.out or default_out()))
        return 0
    if args.command == "job":
        meta = run_job(args.kind, args.dtype, args.json, examples=args.examples, shrink=not args.no_shrink)
        print(json.dumps(meta))
        return 0
    if args.command == "matrix":
        print(write_matrix(args.out or default_out()))
        return 0
    info = run_matrix(args.venvs, args.out, versions=args.versions, dtypes=args.dtypes, jobs=args.jobs,
                      examples=args.examples, shrink=not args.no_shrink, progress=not args.quiet)
    bad = [m for m in info["results"] if not m["ok"]]
    print(f"conformance: {info['runs']} runs in {info['wall_s']:.0f} s wall ({info['jobs']} processes; "
          f"{info['cpu_seconds']:.0f} CPU s, {info['cpu_makespan_s']:.0f} s on {info['jobs']} idle cores), "
          f"{len(bad)} failed to run; matrix: "
          f"{Path(args.out or default_out()) / 'matrix.csv'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
