"""What the conformance page shows (``notebooks/conformance.ipynb``): its text, tables and figure, computed from the
reports that ``lcm_ref.studies.conformance`` writes and reads (docs/design.md §9, §13)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .conformance import (CONCERNS, DTYPES, FILE_PATTERN, NOT_APPLICABLE, VERDICTS, Job, consistency, default_out,
                          version_tuple)

__all__ = ["report_folder", "how_to_make", "intro_markdown", "summary_markdown", "plot_matrix", "deviations_markdown", "deviation_rows", "tcd_rows", "timing_rows"]

def report_folder(data=None) -> Optional[Path]:
    """The folder holding the reports: ``data``/conformance (the report run's data folder, where ``lcm-ref report``
    carries the committed files), else the checkout's reports/data/conformance; None if neither has matrix.csv or
    a report named as ``FILE_PATTERN``."""
    for f in ([Path(data) / "conformance"] if data else []) + [default_out()]:
        if (f / "matrix.csv").is_file() or any(FILE_PATTERN.match(p.name) for p in f.glob("*.json")):
            return f
    return None


def how_to_make(diffusers_version=None) -> str:
    """How to make this page's data: from a pip install, ``lcm-ref conform --json`` into the report's
    data/conformance folder under the file names the page reads (``Job.filename``); in a checkout, ``make
    conformance`` (every release in its own environment)."""
    if diffusers_version is None:
        import diffusers
        diffusers_version = diffusers.__version__
    out = "reports/data/conformance"
    runs = "\n".join(f"lcm-ref conform diffusers:LCMScheduler --dtype {d} --json "
                     f"{out}/{Job('lcm', diffusers_version, d).filename}" for d in DTYPES)
    return ("Make them with the installed diffusers (" + diffusers_version + "), one report per sample dtype, "
            f"into `data/conformance/` of the report folder (`{out}/` for the default `lcm-ref report`):\n\n"
            f"```bash\n{runs}\nlcm-ref report --only conformance\n```\n\n"
            "`lcm-ref conform` exits 1 (FAIL) or 3 (INCOMPLETE) where a concern deviates: the report is written all "
            "the same. In a checkout of lcm_ref, `make conformance` runs the whole matrix instead (every release in "
            "its own environment).")


def intro_markdown(folder, rows, info) -> str:
    """The top of the page: with no runs, that there is nothing to show and ``how_to_make`` it; else
    ``summary_markdown`` and whether the files come from one run (``consistency``; reports without run.json are
    ``lcm-ref conform`` runs of their own)."""
    if not rows:
        return "**No conformance reports here, so this page shows no verdict.** " + how_to_make()
    text = summary_markdown(rows, info) + "\n\n"
    if not info:
        return text + ("These reports come from separate `lcm-ref conform` runs (no `run.json`): each stands on its "
                       "own, and the times of section 4 are conform's own.")
    problems = consistency(folder)
    if problems:
        return text + ("**These files do not come from one run** (rerun `make conformance`):\n\n"
                       + "\n".join(f"- {p}" for p in problems))
    return text + ("All files below come from that one run: `run.json` names each report by its SHA-256, and "
                   "`python -m lcm_ref.studies.conformance verify` checks them.")


def summary_markdown(rows, info) -> str:
    """One paragraph: what ran, how long it took, how many cells of each verdict."""
    versions = sorted({r["version"] for r in rows if not r["row"].startswith("lcm_ref")}, key=version_tuple)
    counts = {v: sum(r[c] == v for r in rows for c in CONCERNS) for v in VERDICTS}
    dtypes = " and ".join(sorted({r["sample_dtype"] for r in rows}, reverse=True))
    statuses = {st: sum(r.get("status") == st for r in rows) for st in ("PASS", "FAIL", "INCOMPLETE")}
    text = (f"{len(rows)} runs: diffusers {', '.join(versions)} (LCMScheduler; TCDScheduler from 0.27) and lcm_ref's "
            f"drop-in, each in {dtypes}, default examples"
            + ("" if not any(statuses.values()) else
               " (" + ", ".join(f"{n} {st}" for st, n in statuses.items() if n) + ")")
            + ". Cells: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".")
    if info:
        load = ", ".join(f"{x:.1f}" for x in info.get("load_average") or [])
        when = f" on {info['date']} (lcm_ref {info['lcm_ref']}, {info['git']})" if info.get("date") else ""
        text += (f" Last `make conformance`{when}: {info['wall_s']:.0f} s wall with {info['jobs']} processes on "
                 f"{info['cpus']} CPUs" + (f" (load average at the end: {load})" if load else "") + ".")
        if info.get("cpu_makespan_s") is not None:
            text += (f" The jobs used {info['cpu_seconds']:.0f} CPU seconds (imports included), which is "
                     f"{info['cpu_makespan_s']:.0f} s of wall time on {info['jobs']} otherwise idle cores.")
    return text


_COLOURS = {"pass": "#8fd19e", "fail": "#e8747c", "inconclusive": "#c9a0dc", "unsupported": "#f5c16c",
            "not_observable": "#b7c7e6", NOT_APPLICABLE: "#eeeeee"}
_MARKS = {"pass": "", "fail": "FAIL", "inconclusive": "inc.", "unsupported": "unsup.", "not_observable": "n.obs.",
          NOT_APPLICABLE: "n/a"}


def plot_matrix(rows, concerns=CONCERNS):
    """The matrix as a coloured grid (rows × concerns); returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    keys = list(_COLOURS)
    grid = [[keys.index(r[c]) if r[c] in keys else 0 for c in concerns] for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(rows) + 2.2))
    ax.imshow(grid, cmap=ListedColormap([_COLOURS[k] for k in keys]), vmin=-0.5, vmax=len(keys) - 0.5,
              aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(concerns):
            ax.text(j, i, _MARKS.get(r[c], r[c]), ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(concerns)), concerns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['row']}  {r['sample_dtype']}" for r in rows], fontsize=7.5)
    ax.set_xticks([x - 0.5 for x in range(1, len(concerns))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    ax.legend(handles=[Patch(color=_COLOURS[k], label=k) for k in keys], loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncol=len(keys), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def deviations_markdown(devs, runs=None) -> str:
    """Each deviation as a short section: what, where it shows (concerns, rows), the upstream change, an example.
    ``runs``: how many runs were read (with none, nothing is claimed about deviations)."""
    if not devs:
        return ("No runs were read, so nothing is known about deviations." if runs == 0 else
                "No concern fails or is unsupported in any" + (f" of the {runs} runs." if runs else " run."))
    out = []
    for k, d in enumerate(devs, 1):
        rows = _compress_rows(d["rows"])
        lines = [f"**{k}. {d['title']}**" + ("" if d["known"] else " — *not a known deviation: investigate*"), ""]
        if d["what"]:
            lines.append(d["what"])
        lines += ["", f"- concerns: {', '.join(f'`{c}`' for c in d['concerns'])}", f"- rows: {rows}"]
        if d["upstream"]:
            lines.append(f"- upstream: {d['upstream']}")
        ex = d["example"] + (f" — likely cause: {d['likely_cause']}" if d["likely_cause"] else "")
        lines.append(f"- one report says: {ex}")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _compress_rows(tags) -> str:
    """'LCMScheduler@0.22.0 float32', 'LCMScheduler@0.22.0 float16' -> 'LCMScheduler@0.22.0 (float32, float16)'."""
    by = {}
    for t in tags:
        name, _, dtype = t.rpartition(" ")
        by.setdefault(name, []).append(dtype)
    return "; ".join(f"{n} ({', '.join(d)})" for n, d in by.items())


def deviation_rows(devs) -> list[dict]:
    """The deviations as CSV rows."""
    return [{"key": d["key"], "title": d["title"], "known": d["known"], "concerns": " ".join(d["concerns"]),
             "rows": "; ".join(d["rows"]), "upstream": d["upstream"]} for d in devs]


def tcd_rows() -> list[dict]:
    """Which concerns the TCDScheduler rows judge, and why the others are not applicable."""
    from ..oracle.adapters import TCD_NOT_APPLICABLE
    return [{"concern": c, "judged for TCD": c not in TCD_NOT_APPLICABLE,
             "why not": TCD_NOT_APPLICABLE.get(c, "")} for c in CONCERNS]


def timing_rows(rows, info) -> list[dict]:
    """Per run: conform's own seconds (from the JSON), the job's CPU and wall seconds (run.json), the implementation
    judged (package and version, run.json) and the job's environment (diffusers, torch, hypothesis)."""
    meta = {(m.get("label"), m.get("dtype")): m for m in info.get("results", [])} if info else {}
    out = []
    for r in rows:
        m = meta.get((r["row"], r["sample_dtype"]), {})
        impl = " ".join(str(m[k]) for k in ("implementation_package", "implementation_version") if m.get(k))
        env = ", ".join(f"{k} {m[k]}" for k in ("diffusers", "torch", "hypothesis") if m.get(k))
        out.append({"implementation@version": r["row"], "samples": r["sample_dtype"],
                    "conform wall s": r["seconds"], "job CPU s": m.get("cpu_s"), "job wall s": m.get("wall_s"),
                    "adapter": m.get("adapter") or "", "judged implementation": impl, "environment": env})
    return out


