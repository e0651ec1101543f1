"""Small helpers every layer shares: machine epsilon and unit roundoff per dtype, float64 conversion, writing a
file atomically (a temporary file in the same folder, then ``os.replace``: never a half-written file), CSV and
Markdown tables, and the Fréchet distance (the FID formula, used by both testbeds).

Imports neither torch nor diffusers at module level (the reference uses it); ``torch_dtype`` imports torch when
called.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import LCMRefError

__all__ = ["EPS", "eps", "unit_roundoff", "dtype_name", "torch_dtype", "to_f64", "umask", "file_mode", "write_atomic",
           "csv_text", "write_csv", "read_csv", "markdown_table", "moments", "frechet_distance"]

#: machine epsilon (the spacing of floats in [1, 2)) of each floating dtype lcm_ref compares in
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def dtype_name(dtype) -> str:
    """'float32' for torch.float32, np.float32, np.dtype('float32') or 'float32'; LCMRefError for anything else."""
    name = str(getattr(dtype, "name", None) or dtype).replace("torch.", "")
    if name == "<class 'numpy.float64'>" or dtype is float:
        name = "float64"
    for np_type, n in ((np.float64, "float64"), (np.float32, "float32"), (np.float16, "float16")):
        if dtype is np_type:
            name = n
    if name not in EPS:
        raise LCMRefError("dtype", dtype, f"one of {sorted(EPS)}")
    return name


def eps(dtype) -> float:
    """Machine epsilon of ``dtype`` (2⁻²³ for float32): the unit of scaled errors."""
    return EPS[dtype_name(dtype)]


def unit_roundoff(dtype) -> float:
    """u = eps/2, the largest relative error of one rounding to nearest."""
    return eps(dtype) / 2


def torch_dtype(dtype):
    """The torch dtype named by ``dtype`` (a torch dtype or its name); LCMRefError if it is not a floating one."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise LCMRefError("dtype", dtype, "a floating torch dtype: float32, float64, float16 or bfloat16")
    return d


def to_f64(x, name: str = "value"):
    """A float64 NumPy array of ``x`` (a torch tensor on any device, an array or a nested list); None stays None.
    Anything else raises LCMRefError naming ``name``."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise LCMRefError(name, type(x).__name__, "an array-like of real numbers") from None


def umask() -> int:
    """The process's file-mode creation mask (read from /proc where it can be, so that no other thread ever sees
    it changed; else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits a file this package writes gets: 0o666 without the umask's bits (0o644 under the usual
    umask 022), as ``open(path, "w")`` gives a new file. A file being replaced gets them too, so that files an
    earlier version wrote with mkstemp's 0600 become readable again when they are rewritten."""
    return 0o666 & ~umask()


def write_atomic(path, data) -> Path:
    """Write ``data`` (bytes, or str written as UTF-8 with newlines as given) to ``path``: a temporary file in the
    same folder, then ``os.replace``. Creates the folder. The file gets the umask's permissions (``file_mode``), not
    mkstemp's 0600. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    mode = file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)                 # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _csv_cell(v, floatfmt=None):
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if floatfmt is None else format(float(v), floatfmt)
    if isinstance(v, np.integer):
        return str(int(v))
    return v


def csv_text(rows, columns=None, floatfmt=None) -> str:
    """``rows`` (dicts) as CSV text, columns in ``columns`` order (default: the first row's keys). Floats in repr
    precision (a round trip) unless ``floatfmt`` is given; lists joined by spaces; None empty."""
    rows = list(rows)
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_cell(r.get(c), floatfmt) for c in columns])
    return buf.getvalue()


def write_csv(rows, path, columns=None, floatfmt=None) -> Path:
    """``csv_text`` written atomically to ``path`` (the project's one CSV writer). Refused before anything is
    written: no rows, or (when ``columns`` is not given) a row with a key the first row lacks."""
    rows = list(rows)
    if not rows:
        raise LCMRefError("rows", rows, "a non-empty list of dicts")
    extra = [] if columns else sorted({k for r in rows for k in r} - set(rows[0]))
    if extra:
        raise LCMRefError("rows", f"keys {extra}", f"only the first row's keys {list(rows[0])}")
    return write_atomic(path, csv_text(rows, columns, floatfmt))


def read_csv(path) -> list:
    """Rows of a CSV as dicts; numbers converted to int / float where they parse."""
    def conv(v):
        for f in (int, float):
            try:
                return f(v)
            except ValueError:
                pass
        return v
    with open(path, newline="") as f:
        return [{k: conv(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _md_cell(v, floatfmt):
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "—"          # not applicable / not measured
    if isinstance(v, (float, np.floating)):
        return format(float(v), floatfmt)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows, columns=None, floatfmt=".3g") -> str:
    """``rows`` (dicts) as a Markdown table (``columns`` picks and orders the keys, default the first row's); floats
    formatted with ``floatfmt``, None and NaN as —."""
    rows = list(rows)
    if not rows:
        return "_(no rows)_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(r.get(c), floatfmt) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def moments(a, name="a") -> tuple:
    """(mean, covariance) in float64 of samples ``a`` (N, d), N ≥ 2 (unbiased covariance, as FID), or a
    (mean, cov) pair as given."""
    if isinstance(a, tuple):
        m, c = (np.asarray(v, dtype=np.float64) for v in a)
        return np.atleast_1d(m), np.atleast_2d(c)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise LCMRefError(f"{name}.shape", a.shape, "(N, d) with N >= 2, or a (mean, cov) tuple")
    if not np.isfinite(a).all():
        raise LCMRefError(name, "non-finite values", "finite samples")
    return a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False))


def _psd_sqrt(c):
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a, b) -> float:
    """The Fréchet distance (squared, like FID) between the Gaussians fitted to ``a`` and ``b`` (each samples
    (N, d) or a (mean, cov) pair): ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½, with symmetric
    eigendecompositions in float64 (the symmetric form has real eigenvalues; negative rounding is clipped to 0).
    On Gaussians this is W2²."""
    (ma, ca), (mb, cb) = moments(a, "a"), moments(b, "b")
    if ma.shape != mb.shape:
        raise LCMRefError("b", f"dimension {mb.shape}", f"the dimension of a, {ma.shape}")
    s = _psd_sqrt(ca)
    m = s @ cb @ s
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    return float(np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2.0 * cross)
