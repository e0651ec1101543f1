"""``lcm-ref report``: execute the notebooks in ``notebooks/`` and write them as markdown pages into ``reports/``.

Per notebook ``<name>.ipynb`` a page ``reports/<name>.md`` with its figures (``reports/figures/<name>-NN.png``) and
tables; the numbers behind the figures go to ``reports/data/*.csv`` (the notebooks write them); ``reports/README.md``
is the index, with the versions, the device, the seed and the date.

Notebooks learn the mode and where to write through environment variables: ``LCM_REF_FAST`` ("1" in fast mode),
``LCM_REF_DATA`` (the data folder), ``LCM_REF_SEED``. Inside a notebook, ``ctx = lcm_ref.studies.report.setup()`` reads them.
``LCM_REF_WEIGHTS`` / ``LCM_REF_RUNS`` (``run(weights=, runs=)``) point the learned testbed at networks trained with
``lcm-ref paper train`` instead of the committed ones.

Everything is written into a temporary folder beside the target and moved into place at the end, so an interrupted
run leaves the previous reports intact. Files named ``data/*cuda*`` (GPU results produced elsewhere, e.g. by
``lcm-ref bench`` on a GPU machine) are carried over from the previous reports.
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import LCMRefError
from ..numerics import markdown_table, read_csv, umask, write_atomic, write_csv
from . import reproducibility

#: The notebooks in reading order (others found in the folder follow, sorted by name).
ORDER = ("scheduler_behaviour", "reference_vs_gpu", "timestep_scaling", "paper_figures", "benchmarks", "conformance")
SEED = 0                    #: the seed every notebook passes to its random draws (LCM_REF_SEED)
CELL_TIMEOUT_S = 1800       #: per-cell limit; the whole full run is meant to take minutes
CARRIED = ("data/*cuda*", "data/conformance/*")  #: files a full run keeps: GPU results made elsewhere, make conformance's
RUNS_CSV = "data/report_runs.csv"
ROOT = Path(__file__).resolve().parents[2]   #: the repository root, in a checkout (not in a wheel install)


def notebooks_folder() -> Path:
    """The notebooks shipped with the package (``lcm_ref.notebooks``: the repository's notebooks/ in a checkout,
    package data in a wheel install)."""
    import importlib.resources

    return Path(str(importlib.resources.files("lcm_ref.notebooks")))


def default_data_folder() -> Path:
    """Where a notebook run by hand writes its CSVs: ``reports/data`` of the checkout it belongs to, else
    ./reports/data in the current directory (never inside an installed package)."""
    if (ROOT / "pyproject.toml").is_file() and (ROOT / "notebooks").is_dir():
        return ROOT / "reports" / "data"
    return Path.cwd() / "reports" / "data"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------------------------
# Inside a notebook
# ---------------------------------------------------------------------------------------------------------------

class Context(NamedTuple):
    fast: bool          #: fast mode: smaller sweeps, same code paths
    data: Path          #: where the notebook writes its CSVs
    seed: int


def setup() -> Context:
    """Read LCM_REF_FAST / LCM_REF_DATA / LCM_REF_SEED (defaults: full mode, ``default_data_folder()``, SEED) and set
    matplotlib's defaults so every figure renders the same on every machine."""
    import matplotlib
    import matplotlib.pyplot as plt
    fast = os.environ.get("LCM_REF_FAST", "0") not in ("", "0")
    data = Path(os.environ.get("LCM_REF_DATA") or default_data_folder())
    data.mkdir(parents=True, exist_ok=True)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (7.0, 4.0),
                                "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    plt.rcParams["svg.hashsalt"] = "lcm_ref"
    return Context(fast, data, int(os.environ.get("LCM_REF_SEED", SEED)))


md_table = markdown_table


def show_table(rows, columns=None, floatfmt=".3g"):
    """Display ``md_table(rows, ...)`` as markdown in the notebook (and so in its report page)."""
    from IPython.display import Markdown, display
    display(Markdown(md_table(rows, columns, floatfmt)))


def show(text: str):
    """Display markdown text (a caption, a computed statement) in the notebook and its page."""
    from IPython.display import Markdown, display
    display(Markdown(text))


def save_csv(rows, path, columns=None) -> None:
    """Write ``rows`` (dicts) as CSV, atomically (``numerics.write_csv``: floats in repr precision, lists joined by
    spaces). Returns None (so that a notebook cell ending with it prints nothing)."""
    write_csv(rows, path, columns)


# ---------------------------------------------------------------------------------------------------------------
# Executed notebook -> markdown page
# ---------------------------------------------------------------------------------------------------------------

def _text(x):
    return "".join(x) if isinstance(x, list) else (x or "")


def notebook_to_markdown(nb, name: str, figures_dir: Path, header: str = "") -> tuple[str, list[Path]]:
    """Markdown of an executed notebook: markdown cells as they are; each code cell's source in a collapsed block
    (unless tagged ``remove-input``); its outputs (unless tagged ``remove-output``): image/png → a PNG file under
    ``figures_dir`` named ``<name>-NN.png``; text/markdown as is; text/plain and stdout in a code block; errors with
    their traceback. stderr is dropped (progress bars, library warnings). Returns (markdown, figure paths)."""
    parts, figures = [], []
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        src = _text(cell.get("source")).strip()
        if cell.cell_type == "markdown":
            parts.append(src)
            continue
        if cell.cell_type != "code":
            continue
        if src and "remove-input" not in tags and "remove-cell" not in tags:
            parts.append(f"<details><summary>code</summary>\n\n```python\n{src}\n```\n\n</details>")
        if "remove-output" in tags or "remove-cell" in tags:
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                if out.get("name") == "stdout" and _text(out.get("text")).strip():
                    parts.append("```text\n" + _ANSI.sub("", _text(out.get("text"))).rstrip() + "\n```")
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data:
                    continue            # a progress-bar widget: its text fallback is noise on a page
                if "image/png" in data:
                    path = figures_dir / f"{name}-{len(figures) + 1:02d}.png"
                    write_atomic(path, base64.b64decode(_text(data["image/png"])))
                    figures.append(path)
                    parts.append(f"![{name} figure {len(figures)}](figures/{path.name})")
                elif "text/markdown" in data:
                    parts.append(_text(data["text/markdown"]).strip())
                elif "text/plain" in data:
                    parts.append("```text\n" + _ANSI.sub("", _text(data["text/plain"])).rstrip() + "\n```")
            elif kind == "error":
                tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                parts.append(f"**Error** `{out.get('ename')}: {out.get('evalue')}`\n\n```text\n{tb}\n```")
    parts = [p for p in parts if p]
    if header:      # right under the title if the page starts with one
        if parts and parts[0].startswith("# "):
            title, _, rest = parts[0].partition("\n")
            parts[:1] = [title, header] + ([rest.strip()] if rest.strip() else [])
        else:
            parts.insert(0, header)
    return "\n\n".join(parts) + "\n", figures


def _title(nb, name):
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in _text(cell.source).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------

def notebook_paths(folder: Path) -> list[Path]:
    """The notebooks of ``folder``, ORDER first."""
    found = {p.stem: p for p in Path(folder).glob("*.ipynb")}
    return [found[n] for n in ORDER if n in found] + [found[n] for n in sorted(found) if n not in ORDER]


def environment() -> dict:
    """Versions, device, seed and date of this run (the README's header)."""
    import diffusers
    import numpy
    import torch
    from .. import __version__
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"lcm_ref": __version__, "git": commit, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": f"{cpu} ({cores} cores available)", "gpu": gpu, "seed": SEED,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


class Result(NamedTuple):
    name: str
    title: str
    ok: bool
    seconds: float
    figures: int
    error: str


def _execute(path: Path, workdir: Path, timeout: int, progress, env: dict) -> "object":
    """Execute one notebook with this interpreter's ``python3`` ipykernel and the environment ``env``; returns the
    executed notebook."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    # No kernel folders searched: only ipykernel's built-in "python3" spec, which runs this interpreter
    # (sys.executable), so a user-level kernelspec cannot send the notebooks to another Python. IPC transport (socket
    # files in a private folder) rather than TCP on localhost. The folder is a short one of the system's temporary
    # directory, not the work folder: a Unix socket's path holds at most 107 bytes, which a report written deep in
    # a tree exceeds (the kernel then fails to bind and the run waits for it).
    sockets = tempfile.mkdtemp(prefix="lcm-ref-kernel-")
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]),
                       transport="ipc", ip=os.path.join(sockets, "ipc"))
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}},
                            on_cell_executed=lambda **kw: progress.update(1))
    try:
        client.execute(env=env)
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
    return nb


def source_link(target: Path, out: Path, text: str) -> str:
    """Markdown naming ``target`` (a notebook or the notebooks' folder) from a page written into ``out``: a link
    relative to ``out`` when ``target`` exists and lies beside it (under ``out``'s parent: the checkout's
    notebooks/ next to reports/, or a --notebooks folder of the user's), so that it works wherever that tree is
    opened; else plain text naming where it ships (inside an installed package, a link would point into
    site-packages, and break as soon as the pages move)."""
    target, out = Path(target).resolve(), Path(out).resolve()
    if target.exists() and target.is_relative_to(out.parent) and not target.is_relative_to(out):
        return f"[`{text}`]({Path(os.path.relpath(target, out)).as_posix()})"
    return f"`{text}` (shipped with lcm_ref as `lcm_ref/notebooks/`)"


def _page_header(mode, seconds, env, name, source=""):
    return (f"_Generated by `lcm-ref report` ({mode} mode) on {env['date']} in {seconds:.0f} s, from "
            f"{source or f'`notebooks/{name}.ipynb`'}; lcm_ref {env['lcm_ref']} ({env['git']}), "
            f"torch {env['torch']}, diffusers {env['diffusers']}; CPU {env['cpu']}; GPU {env['gpu']}._")


def _write_index(out: Path, env: dict, fast: bool, source: str):
    runs = read_csv(out / RUNS_CSV) if (out / RUNS_CSV).exists() else []
    lines = ["# lcm_ref reports", "",
             "Generated by `lcm-ref report` (`make report` in a checkout) from the notebooks in "
             f"{source}. Each page is the executed notebook: its text, tables and figures (PNG in `figures/`); the numbers "
             "behind the figures are in `data/` (CSV).", "",
             "## Pages", "",
             md_table([{"page": f"[{r['title']}]({r['name']}.md)", "mode": r["mode"], "generated": r["date"],
                        "seconds": r["seconds"], "figures": r["figures"]} for r in runs if (out / f"{r['name']}.md")
                       .exists()], floatfmt=".0f"),
             f"## Environment of the last run ({'fast' if fast else 'full'} mode)", "",
             md_table([{"": k, "value": v} for k, v in env.items()]),
             f"Seeds: every notebook draws its random inputs from seed {SEED} (`LCM_REF_SEED`); the testbed, the "
             "distillation and the benchmarks use the fixed seeds documented in their modules.", "",
             reproducibility.index_markdown(), ""]
    write_atomic(out / "README.md", "\n".join(lines).encode())


def _update_runs(out: Path, results, mode, env):
    path = out / RUNS_CSV
    old = {r["name"]: r for r in read_csv(path)} if path.exists() else {}
    for r in results:
        if r.ok:
            old[r.name] = {"name": r.name, "title": r.title, "mode": mode, "date": env["date"],
                           "seconds": round(r.seconds, 1), "figures": r.figures}
    order = {n: i for i, n in enumerate(ORDER)}
    rows = sorted(old.values(), key=lambda r: (order.get(r["name"], len(order)), r["name"]))
    if rows:                # none when every notebook of a first run failed: no table to write, the failures are said
        save_csv(rows, path, ["name", "title", "mode", "date", "seconds", "figures"])


def run(out=None, *, fast=False, only=None, notebooks=None, timeout=CELL_TIMEOUT_S, quiet=False, weights=None,
        runs=None) -> list[Result]:
    """Execute the notebooks (default: the shipped ones, ``notebooks_folder()``) into ``out`` (default ./reports
    in the current directory) as described in the module docstring. ``weights`` / ``runs``: folders of the learned
    testbed to evaluate instead of the committed ones (``lcm-ref paper train``'s output).
    ``only``: a notebook name (without ``.ipynb``) or a list of them. Returns one Result per notebook; a notebook that
    fails keeps its previous page, and the others are still written."""
    import nbformat
    from tqdm.auto import tqdm
    out = Path(out or Path.cwd() / "reports").resolve()
    notebooks = Path(notebooks) if notebooks else notebooks_folder()
    paths = notebook_paths(notebooks)
    names = [p.stem for p in paths]
    if only:
        wanted = [only] if isinstance(only, str) else list(only)
        for w in wanted:
            if w not in names:
                raise LCMRefError("--only", w, f"one of {names}")
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        raise LCMRefError("notebooks", str(notebooks), "a folder with at least one .ipynb")
    folders = {}
    for what, env_name, folder in (("--weights", "LCM_REF_WEIGHTS", weights), ("--runs", "LCM_REF_RUNS", runs)):
        if folder is not None:
            if not Path(folder).is_dir():
                raise LCMRefError(what, str(folder), "an existing folder (lcm-ref paper train writes "
                                  "paper-train/weights and paper-train/runs)")
            folders[env_name] = str(Path(folder).resolve())
    mode = "fast" if fast else "full"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~umask())          # mkdtemp creates 0700; the report folder gets what mkdir would give
    try:
        if out.exists():
            if only:
                shutil.copytree(out, tmp, dirs_exist_ok=True)
            else:
                _carry(out, tmp, patterns=CARRIED + (RUNS_CSV,))
        for sub in ("figures", "data", ".work"):
            (tmp / sub).mkdir(exist_ok=True)
        env = environment()
        kernel_env = {**os.environ, "LCM_REF_FAST": "1" if fast else "0", "LCM_REF_DATA": str(tmp / "data"),
                      "LCM_REF_SEED": str(SEED), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                      "TQDM_DISABLE": "1", **folders}     # progress is the report's own bar (per cell)
        nbs = [nbformat.read(p, as_version=4) for p in paths]
        total = sum(1 for nb in nbs for c in nb.cells if c.cell_type == "code")
        results = []
        with tqdm(total=total, unit="cell", desc="report", disable=quiet, file=sys.stderr) as bar:
            for path, nb in zip(paths, nbs):
                bar.set_postfix_str(path.stem)
                for old in (tmp / "figures").glob(f"{path.stem}-*.png"):
                    old.unlink()
                start, done_before = time.perf_counter(), bar.n
                try:
                    executed = _execute(path, tmp / ".work", timeout, bar, kernel_env)
                except Exception as e:     # a failing notebook keeps its previous page; report and go on
                    bar.update(sum(1 for c in nb.cells if c.cell_type == "code") - (bar.n - done_before))
                    msg = _ANSI.sub("", str(e))
                    _keep_previous(out, tmp, path.stem)
                    results.append(Result(path.stem, _title(nb, path.stem), False, time.perf_counter() - start, 0,
                                          msg))
                    tqdm.write(f"lcm-ref report: {path.name} failed:\n{msg[-3000:]}", file=sys.stderr)
                    continue
                seconds = time.perf_counter() - start
                text, figs = notebook_to_markdown(executed, path.stem, tmp / "figures", _page_header(
                    mode, seconds, env, path.stem, source_link(path, out, f"notebooks/{path.name}")))
                write_atomic(tmp / f"{path.stem}.md", text.encode())
                results.append(Result(path.stem, _title(executed, path.stem), True, seconds, len(figs), ""))
        _update_runs(tmp, results, mode, env)
        _write_index(tmp, env, fast, source_link(notebooks, out, "notebooks/"))
        shutil.rmtree(tmp / ".work", ignore_errors=True)
        _carry(out, tmp, newer_only=True)      # GPU results someone wrote into ``out`` while this run went on
        _swap(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _carry(out: Path, tmp: Path, patterns=CARRIED, newer_only=False):
    """Copy the files of ``out`` matching ``patterns`` into ``tmp``; with ``newer_only``, only those missing from
    ``tmp`` or modified after its copy (so a result this run regenerated is not replaced by an older one)."""
    if not out.exists():
        return
    for pattern in patterns:
        for f in out.glob(pattern):
            dest = tmp / f.relative_to(out)
            if newer_only and dest.exists() and dest.stat().st_mtime >= f.stat().st_mtime:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


def _keep_previous(out: Path, tmp: Path, name: str):
    """Copy notebook ``name``'s previous page and figures from ``out`` into ``tmp`` (after it failed)."""
    for f in [out / f"{name}.md", *(out / "figures").glob(f"{name}-*.png")]:
        if f.exists():
            (tmp / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / f.relative_to(out))


def _swap(new: Path, out: Path):
    """Put ``new`` where ``out`` is: two renames, the old folder removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
    os.rename(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
