"""Where results measured elsewhere (a GPU) came from, and whether they still describe this code.

Each GPU results file under ``reports/data`` is labelled in the sidecar ``cuda_evidence.json``: the commit and the
torch version that made it, the source files it measured (the torch engine) and a fingerprint of them at that
commit. The evidence is **stale** when the engine's sources here no longer have that fingerprint: the code it
measured has changed since, so its numbers describe an older engine. ``record`` writes the label when a GPU run
writes new evidence (``lcm-ref bench --device cuda``, the reference_vs_gpu page on a GPU).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from pathlib import Path

from ..errors import LCMRefError
from ..numerics import write_atomic

__all__ = ["SIDECAR", "PACKAGE", "fingerprint", "engine_sources", "status", "label", "record", "git_commit"]

SIDECAR = "cuda_evidence.json"   #: named *cuda* so that a full ``lcm-ref report`` carries it with the files it labels
#: the installed package's folder: the engine's sources are read from here (a wheel has no git history)
PACKAGE = Path(__file__).resolve().parents[1]


def fingerprint(sources: dict) -> str:
    """sha256 over the sources' paths and bytes, in path order: equal exactly when every file is byte-identical."""
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(path.encode() + b"\0" + bytes(sources[path]) + b"\0")
    return h.hexdigest()


def engine_sources(package=PACKAGE) -> dict:
    """{"lcm_ref/torch_impl/<name>.py": bytes}: the torch engine's sources as installed (what GPU evidence measures)."""
    return {f"lcm_ref/torch_impl/{p.name}": p.read_bytes() for p in sorted(Path(package, "torch_impl").glob("*.py"))}


def git_commit(root=PACKAGE.parent) -> str:
    """The checkout's HEAD commit (40 hex digits), "+dirty" when the engine's sources differ from it; "unknown"
    outside a git checkout."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--", "lcm_ref/torch_impl").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def status(meta, current: str | None = None) -> tuple[bool, str]:
    """(stale, why) for one file's label ``meta`` (a dict of the sidecar, or None): stale unless the label's
    ``code_sha256`` equals ``current`` (default: the fingerprint of the installed engine's sources)."""
    if not meta:
        return True, "stale: no label (commit, torch version, measured code) records what made it"
    current = current or fingerprint(engine_sources())
    made = f"made at commit {meta['commit'][:10]} with torch {meta['torch']} on {meta['date']}"
    if meta["code_sha256"] == current:
        return False, f"current: {made}; the code it measured ({', '.join(meta['code_paths'])}) is unchanged"
    return True, (f"stale: {made}, measuring {', '.join(meta['code_paths'])}; the torch engine has changed since "
                  f"(lcm_ref/torch_impl/ now fingerprints {current[:12]}, the measured code "
                  f"{meta['code_sha256'][:12]}), so these numbers describe an older engine until a GPU rerun")


def label(data, name) -> dict | None:
    """The sidecar's label for results file ``name`` in folder ``data`` (None if there is none)."""
    path = Path(data) / SIDECAR
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("files", {}).get(name)


def record(data, names, *, torch_version=None, commit=None, sources=None) -> Path:
    """Label results files ``names`` in ``data`` as made now by this code: the commit (``git_commit``), torch's
    version, today's date (UTC), the engine's source paths and fingerprint. Other files' labels are kept."""
    if isinstance(names, str):
        raise LCMRefError("names", names, "a list of file names, not one string")
    import torch
    sources = engine_sources() if sources is None else sources
    path = Path(data) / SIDECAR
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.setdefault("about", "Labels of the GPU results files: what made each one (lcm_ref.studies.evidence).")
    files = doc.setdefault("files", {})
    for name in names:
        files[name] = {"commit": commit or git_commit(), "torch": torch_version or torch.__version__,
                       "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                       "code_paths": sorted(sources), "code_sha256": fingerprint(sources)}
    return write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
