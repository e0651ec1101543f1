"""What ``check`` and ``conform`` share: the one compare-within-budget rule, the exception rule, and the helpers
that call an implementation and read its outputs.

The value rule (docs/design.md §8.4). An element of an implementation's output in dtype D is accepted when

    got ∈ [round_D(want − bound), round_D(want + bound)]

with ``want`` the float64 reference and ``bound`` the budget of docs/design.md §8.3 (absolute). Derivation: the exact
value v lies within ``bound`` of ``want`` (the budget includes the reference's own error), so a correct
implementation returns the rounding to D of some real number r with |r − want| ≤ bound. Rounding to D is monotonic
(r ≤ s ⇒ round_D(r) ≤ round_D(s)), so every such result lies between the roundings of the interval's ends, and every
D value inside that interval is the rounding of itself. This one rule covers ordinary rounding, overflow to ±inf
(round_D of a real beyond the overflow threshold, 65520 in float16, is ±inf), and underflow to subnormals or 0. It
never rejects a value the plain rule |got − want| ≤ bound accepts (for got in D), which is also applied, so outputs in
a finer dtype than D are judged as before. An infinite bound says the budget cannot bound the float evaluation there
(a coefficient that is itself infinite, quirk 3; an intermediate that overflows D, budget point 9): any value is
admitted. Equal values, including equal infinities and NaN against NaN, always pass.

The interval's ends ``want ± bound`` are evaluated in float64 and rounded once more; to make sure that rounding
never narrows the interval, each end is moved outward by one float64 ulp before it is rounded to D (``nextafter``).
The widening is at most 2⁻⁵² relative, below 2⁻²⁹ of a float32 ulp; for D = float64 the plain rule alone applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import os
import re
import sys
from typing import Optional

import numpy as np
import torch

from .. import reference as ref
from ..errors import LCMRefError, StrictError
from ..numerics import dtype_name, eps, to_f64

__all__ = ["hypothesis_seed", "source_independent_draws", "round_to", "accepted_interval", "Comparison", "compare_values", "call",
           "exceptions_match", "step_outputs", "impl_path", "cwd_importable", "abbreviate", "ABBREVIATE_OVER",
           "load_factory", "implementation_info"]

#: binary formats below float64: (significand bits p with the implicit bit, smallest normal exponent, largest
#: finite value). bfloat16 has float32's exponent range and 8 significand bits.
_FORMATS = {
    "float16": (11, -14, 65504.0),
    "bfloat16": (8, -126, float.fromhex("0x1.fe00000000000p+127")),
    "float32": (24, -126, float.fromhex("0x1.fffffe0000000p+127")),
}


def hypothesis_seed(name: str) -> int:
    """The fixed hypothesis seed of a run named ``name`` (a concern, or "check"): the first 8 bytes of
    SHA-256("lcm_ref:" + name). Hypothesis' own derandomization hashes the test function's source, so the examples
    drawn would change with an edit, and could differ between installs; this seed depends on the name alone
    (docs/design.md §9.3)."""
    return int.from_bytes(hashlib.sha256(f"lcm_ref:{name}".encode()).digest()[:8], "big")


@contextlib.contextmanager
def source_independent_draws():
    """Within the block, hypothesis draws do not depend on which modules are imported or where lcm_ref is
    installed.

    Recent hypothesis (6.13x and later) mixes into its float, integer and string draws the literal constants it finds
    in every imported module it judges local (not under site-packages). The examples a seeded run draws then depend
    on the process's import history (a pytest worker that has imported more modules draws other examples) and on
    the install (an editable checkout is local, a wheel is not): the cause of draws differing between installs. The
    oracle's runs turn this off by giving hypothesis an empty pool of local constants (an internal hook of
    hypothesis, guarded: where it does not exist there is nothing to turn off)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:                              # pragma: no cover - hypothesis without providers
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original


def round_to(values, dtype) -> np.ndarray:
    """float64 ``values`` correctly rounded (to nearest, ties to even) to ``dtype``, returned as float64.

    With v = m·2^e (0.5 ≤ |m| < 1) the spacing of D around v is q = 2^(max(e − 1, emin) − (p − 1)); v/q is exact
    (a power-of-two scaling with |v/q| < 2^p) and ``np.round`` rounds it half to even, so round(v/q)·q is the correctly
    rounded value, subnormals included (their spacing is emin's). A result above the largest finite value is ±inf:
    that happens exactly when |v| ≥ max + q/2, IEEE's overflow threshold (the tie at max + q/2 goes to the even
    neighbour 2^(emax+1), i.e. to infinity, as IEEE does). NaN and ±inf pass through."""
    v = np.asarray(values, dtype=np.float64)
    name = dtype_name(dtype)
    if name == "float64":
        return v.copy()
    p, emin, vmax = _FORMATS[name]
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(v)
        q = np.ldexp(1.0, np.maximum(e - 1, emin) - (p - 1))
        r = np.round(v / q) * q
        r = np.where(np.abs(r) > vmax, np.copysign(np.inf, v), r)
    return np.where(np.isfinite(v), r, v)


def accepted_interval(want, bound, dtype):
    """(lo, hi): the D values a correct implementation may return, [round_D(want − bound), round_D(want + bound)]
    (module docstring), each end first moved outward by one float64 ulp (D coarser than float64 only)."""
    w, b = np.asarray(want, dtype=np.float64), np.asarray(bound, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = w - b, w + b
        if dtype_name(dtype) != "float64":
            lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    return round_to(lo, dtype), round_to(hi, dtype)


@dataclasses.dataclass
class Comparison:
    """The outcome of ``compare_values``: ``ok``; ``shape`` (a message when the shapes differ, else None); per element
    ``scaled`` (|got − want| / (eps(D)·Σ|terms|)), ``ratio`` (|got − want| / the accepted half-width on got's side,
    ≤ 1 where accepted), ``budget`` (that half-width in scaled units), ``rel`` (relative error, diagnostic only)
    and ``bad`` (the rejected elements); and the worst element: ``index``, ``got``, ``want``, its scaled error
    and budget; ``top_scaled`` / ``top_budget``: the scaled error and budget of the accepted element nearest its
    bound (the largest ratio)."""
    ok: bool
    shape: Optional[str] = None
    scaled: np.ndarray = None
    ratio: np.ndarray = None
    budget: np.ndarray = None
    rel: np.ndarray = None
    bad: np.ndarray = None
    index: tuple = ()
    got: float = float("nan")
    want: float = float("nan")
    worst_scaled: float = float("nan")
    worst_budget: float = float("nan")
    worst_ratio: float = float("nan")
    unbounded: int = 0          # elements with an infinite bound (admitted whatever they are)
    top_scaled: Optional[float] = None   # the accepted element nearest its bound: its scaled error ...
    top_budget: Optional[float] = None   # ... and its budget (scaled units; None: no finite bound)

    @property
    def n_bad(self) -> int:
        return 0 if self.bad is None else int(self.bad.sum())

    @property
    def size(self) -> int:
        return 0 if self.bad is None else int(self.bad.size)

    @property
    def max_ratio(self) -> float:
        """The largest error/budget ratio over the accepted and rejected elements (finite ratios only)."""
        if self.ratio is None or self.ratio.size == 0:
            return 0.0
        r = self.ratio[np.isfinite(self.ratio)]
        return float(r.max()) if r.size else (float("inf") if not self.ok else 0.0)

    def describe(self, dtype) -> str:
        """Two lines on the worst rejected element: got / want (also as float.hex), scaled error against the budget,
        how many elements are over."""
        d = dtype_name(dtype)
        return (f"  worst element {self.index}: got {self.got!r} ({_hex(self.got)}), want {self.want!r} "
                f"({_hex(self.want)})\n"
                f"  scaled error {self.worst_scaled:.4g} eps({d}), budget {self.worst_budget:.4g} "
                f"({self.worst_ratio:.3g}x over); {self.n_bad} of {self.size} elements over budget")


def _hex(v: float) -> str:
    return float(v).hex() if np.isfinite(v) else repr(float(v))


def compare_values(got, want, terms, bound, dtype) -> Comparison:
    """Judge ``got`` (an implementation's output in ``dtype``) against ``want`` (the reference) with the absolute
    per-element ``bound`` and the scale ``terms`` (Σ|terms|), by the rule of the module docstring."""
    g, w = to_f64(got, "got"), to_f64(want, "want")
    if g.shape != w.shape:
        return Comparison(False, shape=f"shape {tuple(g.shape)}, want {tuple(w.shape)}")
    terms = np.broadcast_to(to_f64(terms, "terms"), w.shape)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), w.shape)
    e = eps(dtype)
    scaled = ref.scaled_error(g, w, terms, dtype)
    lo, hi = accepted_interval(w, bound, dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(g - w)
        same = (g == w) | (np.isnan(g) & np.isnan(w))
        finite_bound = np.isfinite(bound)
        plain = np.isfinite(g) & np.isfinite(w) & (diff <= bound)
        rounded = finite_bound & np.isfinite(w) & (lo <= g) & (g <= hi)
        ok = same | plain | rounded | ~finite_bound
        # the accepted half-width on got's side: the bound, or further where rounding to D reaches beyond it
        half = np.where(g >= w, np.maximum(bound, hi - w), np.maximum(bound, w - lo))
        half = np.where(finite_bound, half, np.inf)
        ratio = np.where(same | ~finite_bound, 0.0, diff / half)
        # inf/inf: an infinite result at an infinite accepted end (overflow accepted) sits at the limit, ratio 1
        ratio = np.where(np.isnan(ratio), np.where(ok, 1.0, np.inf), ratio)
        ratio = np.where(ok, np.minimum(ratio, 1.0), np.where(ratio <= 1.0, np.inf, ratio))
        budget = np.where(same, 0.0, half / (e * terms))
        rel = np.where(same | (w == 0), 0.0, diff / np.abs(w))
    bad = ~ok
    c = Comparison(bool(ok.all()), scaled=scaled, ratio=ratio, budget=budget,
                   rel=np.where(np.isfinite(rel), rel, 0.0), bad=bad,
                   unbounded=int((~finite_bound & ~same).sum()))
    near = ok & finite_bound & np.isfinite(ratio) & np.isfinite(budget) & np.isfinite(scaled)
    if near.any():
        j = np.unravel_index(int(np.argmax(np.where(near, ratio, -1.0))), ratio.shape) if ratio.ndim else ()
        c.top_scaled, c.top_budget = float(scaled[j]), float(budget[j])
    if bad.any():
        score = np.where(bad, ratio, -1.0)
        i = np.unravel_index(int(np.argmax(score)), score.shape) if score.ndim else ()
        c.index = tuple(int(k) for k in i)
        c.got, c.want = float(g[i]), float(w[i])
        c.worst_scaled, c.worst_budget, c.worst_ratio = float(scaled[i]), float(budget[i]), float(ratio[i])
    return c


# ---------------------------------------------------------------------------------------------------------------
# Calling an implementation
# ---------------------------------------------------------------------------------------------------------------

def call(fn):
    """(fn(), None), or (None, the exception) if it raises one (an Exception: KeyboardInterrupt passes)."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - the exception itself is what is compared
        return None, e


def exceptions_match(want: BaseException, got: BaseException) -> bool:
    """Same class where the reference raises (a subclass is fine). lcm_ref's own errors are ValueErrors to an
    outside implementation; a StrictError must come back as a ValueError whose message names the parameter."""
    if isinstance(want, StrictError):
        param = str(want.parameter).split(".")[0].split("[")[0]
        return isinstance(got, ValueError) and param.lower() in str(got).lower()
    if isinstance(want, LCMRefError):
        return isinstance(got, ValueError)
    return isinstance(got, type(want))


def step_outputs(out):
    """(prev_sample, denoised) of what ``step`` returned: an output object with those attributes, a tuple
    (prev_sample[, denoised]), or a bare tensor (prev_sample only); a missing one is None."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)):
        return (out[0] if len(out) else None), (out[1] if len(out) > 1 else None)
    return getattr(out, "prev_sample", None), getattr(out, "denoised", None)


#: a number as Python, NumPy and torch print one, bare or wrapped as NumPy 2 prints a scalar (``np.float64(0.1)``)
_NUMBER = re.compile(r"(?:np\.\w+\()?[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\)?|[-+]?(?:inf|nan)")
#: the innermost bracketed runs a message can quote: [..] (lists, NumPy and torch arrays) and (..) (tuples)
_BRACKETED = re.compile(r"\[[^\[\]]*\]|\([^()\[\]]*\)")
#: longer runs of numbers than this are abbreviated (a schedule of up to 20 steps stays whole, as evidence)
ABBREVIATE_OVER = 20


def _numbers(inner: str):
    """The items of a bracketed run if every one is a number (comma- or, as NumPy prints, space-separated), else
    None."""
    items = [v.strip() for v in re.split(r"," if "," in inner else r"\s+", inner) if v.strip()]
    return items if items and all(_NUMBER.fullmatch(v) for v in items) else None


def _short_number(v: str) -> str:
    """A printed number without NumPy's wrapper, floats to 6 significant digits."""
    v = re.sub(r"^np\.\w+\((.*)\)$", r"\1", v)
    return v if re.fullmatch(r"[-+]?\d+", v) else format(float(v), ".6g")


def abbreviate(value, limit: int = 240) -> str:
    """``value`` (any object, or a message that quotes one) as text of at most ``limit`` characters: a run of more
    than ``ABBREVIATE_OVER`` numbers — a 1,000-entry ``trained_betas`` as a list, a tuple, or a NumPy or torch array,
    given as the value or quoted in an error message — becomes its first two and its count,
    ``[0.0001, 0.000102, … 1000 values]``; whatever is still longer than ``limit`` is cut with ``…``."""
    if isinstance(value, str):
        text = value
    elif hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:     # a NumPy or torch vector: every entry
        text = repr(value.tolist())
    else:
        text = repr(value)

    def short(m):
        run = m.group(0)
        items = _numbers(run[1:-1])
        if items is None or len(items) <= ABBREVIATE_OVER:
            return run
        head = ", ".join(_short_number(v) for v in items[:2])
        return f"{run[0]}{head}, … {len(items)} values{run[-1]}"
    text = _BRACKETED.sub(short, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_factory(path: str):
    """``module:attr`` (or ``module.attr``) -> the object, imported from the current directory first (as pytest's
    rootdir does: a port next to the user's shell is found without installing it); a clear LCMRefError if it cannot
    be imported."""
    if ":" in path:
        mod, _, attr = path.partition(":")
    else:
        mod, _, attr = path.rpartition(".")
    if not mod or not attr:
        raise LCMRefError("impl", path, "module:attr, e.g. diffusers:LCMScheduler")
    cwd_importable()
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise LCMRefError("impl", path, "an importable module:attr", detail=str(e)) from None
    return obj


def impl_path(factory) -> Optional[str]:
    """``module:qualname`` of a factory importable under that name (so a reproduction can name it), else None."""
    if isinstance(factory, str):
        return factory
    mod, qual = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if mod and qual and "<" not in qual:
        try:
            obj = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
            if obj is factory:
                return f"{mod}:{qual}"
        except Exception:  # noqa: BLE001 - not importable under its name: no path
            pass
    return None


# ---------------------------------------------------------------------------------------------------------------
# Naming an implementation: which package and version it comes from
# ---------------------------------------------------------------------------------------------------------------

#: attributes through which lcm_ref's adapters and the standard wrappers hold the implementation they drive
_WRAPPED = ("__wrapped__", "func", "cls", "factory", "sampler")


def _implementation_module(factory) -> Optional[str]:
    """The module that defines what ``factory`` runs: a ``module:attr`` string's module; else, through
    ``functools.partial`` / ``functools.wraps`` and lcm_ref's adapters (``diffusers_compat``, ``port``,
    ``k_diffusion``: the wrapped class, factory or sampler), the module of the class or function itself (of an
    instance's class)."""
    if isinstance(factory, str):
        try:
            factory = load_factory(factory)
        except Exception:  # noqa: BLE001 - not importable here: name the module it names
            return (factory.partition(":")[0] if ":" in factory else factory.rpartition(".")[0]) or None
    seen = set()
    while id(factory) not in seen:
        seen.add(id(factory))
        ours = type(factory).__module__.startswith("lcm_ref.oracle.adapters") or isinstance(factory, functools.partial)
        inner = next((getattr(factory, a) for a in _WRAPPED
                      if (ours or a == "__wrapped__") and getattr(factory, a, None) is not None), None)
        if inner is None:
            break
        factory = inner
    mod = getattr(factory, "__module__", None)
    if not isinstance(mod, str):
        mod = type(factory).__module__
    return mod


def implementation_info(factory) -> dict:
    """``{"package": ..., "version": ...}`` of the implementation ``factory`` builds (a class, a function, a
    ``module:attr`` string, or one of lcm_ref's adapters around one): the top-level package of the module that
    defines it, and the version of the installed distribution that provides that package
    (``importlib.metadata``), or None where there is none (a module run from a folder, ``__main__``); lcm_ref's
    own version for lcm_ref, whether installed or imported from a path.
    E.g. ``{"package": "diffusers", "version": "0.22.0"}`` for ``diffusers.LCMScheduler``, also through
    ``diffusers_compat``; ``{"package": "lcm_ref", "version": lcm_ref.__version__}`` for the drop-in."""
    from importlib import metadata

    mod = _implementation_module(factory)
    top = mod.split(".")[0] if mod else None
    version = None
    if top == "lcm_ref":                # this very code, installed or not (the version matrix runs it from a path)
        from .. import __version__
        version = __version__
    elif top and top not in ("__main__", "builtins"):
        names = [top] + [d for d in metadata.packages_distributions().get(top, []) if d != top]
        for name in names:
            try:
                version = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return {"package": top, "version": version}


def cwd_importable() -> None:
    """Let ``module:attr`` resolve against the current directory first, as pytest's rootdir does: the CLI commands
    that import an implementation (``lcm-ref conform``, ``check``, ``vectors check --impl``) go through
    ``load_factory``, which calls this.
    An interpreter started with ``python -m`` or an empty entry already has it ("" on sys.path)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
