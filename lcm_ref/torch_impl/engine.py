"""``TorchLCM``: the LCM multistep scheduler as a functional torch engine for GPU and CPU (the diffusers drop-in
built on it is ``lcm_ref.torch_impl.dropin``; its error bounds against the reference, derived in full, are
``lcm_ref.torch_impl.bounds``).

``TorchLCM`` mirrors the names of ``lcm_ref.reference`` (``alphas_cumprod``, ``boundary_scalings``,
``x0_coefficients``, ``denoised_coefficients``, ``noise_coefficients``, ``set_timesteps``, ``previous_timestep``,
``step``, ``sample``, ``add_noise``, ``get_velocity``) so that one test loops over the names and compares (the
``jax._src.lax_reference`` style). Every coefficient comes from the reference's correctly rounded float64 tables;
nothing is recomputed in torch.

A step is affine unless clip/threshold is configured. Per schedule position i (timestep t = τ_i, next s = τ_{i+1}):

    denoised = a[t]·sample + b[t]·model_output
    prev     = (c[s]·a[t])·sample + (c[s]·b[t])·model_output + d[s]·z          (c = √ᾱ_s, d = √(1−ᾱ_s))

with the last step's row holding c = 1, d = 0 (prev = denoised). ``prev`` is formed from the inputs with the chained
coefficients ``c·a`` and ``c·b`` rather than from the rounded ``denoised``: that removes the denoised stage's
rounding from prev's error (bound 2 instead of 3, below) for one extra elementwise pass.

Coefficient dtype (why): tables are float32 for float32/float16/bfloat16 samples and float64 for float64 samples.

- float32: the compute dtype is the data's dtype, so products and sums run at memory speed in one precision; the
  rounding of a coefficient to float32 costs u = eps/2 relative on its term, the same as one more product. With the
  operation order above (each product and each sum rounded once; an FMA only removes roundings, so the bound holds
  with or without contraction), the first-order error is
      denoised:  u·(3|a·x| + 3|b·m|)                     ≤ 1.5·eps·Σ|terms|
      prev:      u·(4|ca·x| + 4|cb·m| + 3|d·z|)          ≤ 2.0·eps·Σ|terms|
  where Σ|terms| is ``reference.step_terms`` (|a·x| + |b·m| ≤ Σ_denoised since a = c_skip + c_out·p, c_skip ≥ 0).
  Float64 tables with float32 data would remove the coefficient roundings (to ≈ 1.0 and 1.5) but make every
  elementwise pass a float64 pass (measured on CPU: ≈ 1.5× the float32 step, which misses the benchmark targets).
- float16 / bfloat16: coefficients are float32 tensors shaped (B, 1, …), so torch's type promotion computes in
  float32 and the result is rounded once to the sample dtype: error ≤ 0.5·eps(dtype)·Σ + the float32 error above
  (1.5 or 2 times 2⁻¹³ for float16, 2⁻¹⁶ for bfloat16, in the dtype's eps).
- float64: the same order as float32 (chained coefficients c·a carry 3 u rather than 1 u).
- clip / threshold (non-linear, only when configured): computed in float64 from float64 rows and rounded once to the
  sample dtype (≤ 0.5 eps for the narrower dtypes); the threshold quantile's interpolation position is formed
  exactly on the host (ratio·(N − 1) in integers), its two order statistics by ``torch.sort``.

No host synchronisation in ``step``: every branch is on Python values (shapes, ints, the config); timesteps or step
indices given as tensors are looked up on the device. A timestep that is not in the schedule (or a step index out
of range) maps to a sentinel row index past the table's end, so the gather raises IndexError on CPU (a device-side
assert on CUDA) rather than giving a silent wrong answer. A multistep loop can be captured in a CUDA graph and
traced by ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .. import reference as ref
from ..config import LCMConfig
from ..errors import LCMRefError, StrictError
from .noise import draw_noise
from ..reference import StepOutput

__all__ = ["TorchLCM", "check_schedule", "python_int", "DTYPES"]

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LINEAR = ("a", "b", "ca", "cb", "d")                       # columns of the linear rows
_NONLINEAR = ("p", "q", "c_skip", "c_out", "c", "d")        # columns of the float64 rows (clip / threshold)


def check_schedule(cfg: LCMConfig, timesteps, profile: str = "strict") -> np.ndarray:
    """The schedule as np.int64 after the strict profile's checks: non-empty, distinct integers in [0, T), and no
    timestep with ᾱ = 0 under epsilon prediction (zero-SNR; diffusers divides by zero there: quirk 3).

    ``profile="diffusers"`` with a degenerate config (``cfg.degeneracies()``, docs/design.md §3) leaves out the ᾱ = 0
    check: there ᾱ ≤ 0 comes from the config itself, which was accepted with a warning, and such timesteps give
    NaN / ±inf as in diffusers rather than being refused one by one."""
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.tolist()
    ts = [t.item() if hasattr(t, "item") else t for t in np.asarray(timesteps, dtype=object).reshape(-1)]
    T = cfg.num_train_timesteps
    if not ts or any(not (isinstance(t, numbers.Integral) and not isinstance(t, bool) and 0 <= t < T) for t in ts):
        raise StrictError("timesteps", ts, f"a non-empty list of integers in [0, {T})")
    if len(set(ts)) != len(ts):
        raise StrictError("timesteps", ts, "distinct timesteps")
    arr = np.array(ts, dtype=np.int64)
    accepted_degenerate = profile == "diffusers" and bool(cfg.degeneracies())
    if cfg.prediction_type == "epsilon" and not accepted_degenerate and (ref.alphas_cumprod(cfg)[arr] == 0).any():
        raise StrictError("timesteps", ts, "timesteps with ᾱ > 0 for epsilon prediction (zero-SNR makes ᾱ[T-1] = 0 "
                          "and diffusers divides by zero: quirk 3)")
    return arr


def _affine_step(sample, model_output, noise, a, b, ca, cb, d, dtype, noise_is_scratch=False):
    """The linear step's arithmetic: denoised = a·x + b·m, prev = (ca·x + cb·m) + d·z, each product and each sum
    rounded once in the coefficients' dtype (float32 for the narrow dtypes, by type promotion), then rounded to
    ``dtype``. Returns (prev, denoised). ``noise_is_scratch``: the noise is this step's own draw, so prev is built
    in its buffer as (d·z + ca·x) + cb·m (one allocation less; the same 4u/4u/3u error terms)."""
    denoised = torch.mul(sample, a).addcmul_(b, model_output)
    if noise_is_scratch and noise.dtype == denoised.dtype:
        prev = noise.mul_(d).addcmul_(ca, sample).addcmul_(cb, model_output)
    else:
        prev = torch.mul(sample, ca).addcmul_(cb, model_output).addcmul_(d, noise)
    if prev.dtype == dtype:             # (.to on a tensor of that dtype is a no-op that still costs ~1 µs)
        return prev, denoised
    return prev.to(dtype), denoised.to(dtype)


def _gathered_affine_step(sample, model_output, noise, rows, index, dtype):
    """``_affine_step`` with the coefficient rows gathered from the (n, 5) table by ``index`` (shape (B,)), so a
    compiled version sees the same input tensors at every step (no recompilation per row)."""
    a, b, ca, cb, d = rows[index].view(index.shape[0], len(_LINEAR), *([1] * (sample.dim() - 1))).unbind(1)
    return _affine_step(sample, model_output, noise, a, b, ca, cb, d, dtype)


_COMPILED = []


def _compiled_step():
    """``_gathered_affine_step`` through ``torch.compile(fullgraph=True)``: one fused kernel (Triton on CUDA, C++
    on CPU) that reads x, m, z once and writes prev and denoised once. Compiled on first use per shape and dtype
    (seconds to tens of seconds)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_gathered_affine_step, fullgraph=True, dynamic=False))
    return _COMPILED[0]


def _quantile_position(n: int, ratio_num: int, ratio_den: int):
    """(lo, hi, w) with ratio·(n − 1) = lo + w exactly (ratio = ratio_num/ratio_den, the binary64 value), w rounded
    once: torch.quantile's linear interpolation position, formed in integers so no float rounding moves it."""
    num = ratio_num * (n - 1)
    lo = num // ratio_den
    return lo, min(lo + 1, n - 1), (num - lo * ratio_den) / ratio_den


class TorchLCM:
    """The LCM scheduler as a functional torch engine on one device and dtype (see the module docstring).

    ``TorchLCM(cfg, device=None, dtype=torch.float32)``; ``set_timesteps(...)`` (the reference's signature, strict
    profile) or ``set_schedule(timesteps)``; then ``step(model_output, timestep, sample, noise=None, *,
    step_index=None, generator=None)``. ``timestep`` / ``step_index`` may be Python ints or integer tensors of shape
    () or (B,) on the engine's device (one per batch element). ``fused=True`` runs the linear step's arithmetic as
    one ``torch.compile``-d kernel (for GPUs; the first call compiles).

    ``profile`` decides what happens to a config whose noise schedule is degenerate (``cfg.degeneracies()``: a β
    outside (0, 1), ``trained_betas`` not of length ``num_train_timesteps``; docs/design.md §3): ``"strict"``
    (default) refuses it here with ``StrictError`` naming the parameter; ``"diffusers"`` accepts it and computes
    what diffusers computes from it — the reference's tables (√ of a negative ᾱ is NaN; a ``trained_betas`` table
    sized unlike ``num_train_timesteps`` raises IndexError for a timestep past its end, at ``set_schedule``). Every
    other check is the strict profile's under both."""

    def __init__(self, cfg: LCMConfig, device=None, dtype=torch.float32, *, fused: bool = False,
                 profile: str = "strict"):
        if isinstance(cfg, dict):
            cfg = LCMConfig.from_dict(cfg)
        if not isinstance(cfg, LCMConfig):
            raise LCMRefError("cfg", type(cfg).__name__, "an LCMConfig (or a dict of its fields)")
        if dtype not in DTYPES:
            raise LCMRefError("dtype", dtype, f"one of {DTYPES}")
        cfg.check(profile)                  # StrictError for a degenerate config under "strict"
        self.profile = profile
        self.cfg, self.dtype, self.fused = cfg, dtype, bool(fused)
        self.device = _device(device)
        self.table_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.nonlinear = cfg.clip_sample or cfg.thresholding
        self._ratio = float(cfg.dynamic_thresholding_ratio).as_integer_ratio()
        self.betas = self._table(ref.betas(cfg))
        self.alphas_cumprod = self._table(ref.alphas_cumprod(cfg))
        self.sqrt_alphas_cumprod = self._table(ref.sqrt_alphas_cumprod(cfg))
        self.sqrt_one_minus_alphas_cumprod = self._table(ref.sqrt_one_minus_alphas_cumprod(cfg))
        self.final_alpha_cumprod = ref.final_alpha_cumprod(cfg)
        self._forward = torch.stack([self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod], dim=1)  # (T, 2)
        self._coefficient_tables = None     # built on first use of the mirrored coefficient functions
        self.timesteps = None
        self.num_inference_steps = None
        self._host_timesteps, self._position = [], {}
        self._rows = self._rows64 = self._index_of = self._index_check = self._next = None
        self._views = {}
        self._T = len(self.alphas_cumprod)    # num_train_timesteps, or len(trained_betas) if degenerate

    def __repr__(self):
        return f"TorchLCM({self.cfg!r}, device={str(self.device)!r}, dtype={self.dtype})"

    def _table(self, values, dtype=None):
        return torch.as_tensor(np.array(values, dtype=np.float64)).to(self.device, dtype or self.table_dtype)

    # -- mirrored coefficient functions (host-validated; not the hot path) ------------------------------------------
    def _coefficients(self):
        """(boundary, x0, denoised) tables over t in [−T, T) and noise over t_prev in [−1, T), from the reference
        (negative t as the reference and diffusers index: ᾱ wraps, c_out uses the negative t)."""
        if self._coefficient_tables is None:
            T = self._T
            ts = np.arange(-T, T)
            cols = [*ref.boundary_scalings(self.cfg, ts), *ref.x0_coefficients(self.cfg, ts),
                    *ref.denoised_coefficients(self.cfg, ts)]
            with np.errstate(invalid="ignore"):
                step_cols = self._table(np.stack(cols, axis=1))
            noise_cols = self._table(np.stack(ref.noise_coefficients(self.cfg, np.arange(-1, T)), axis=1))
            self._coefficient_tables = (step_cols, noise_cols)
        return self._coefficient_tables

    def _host_index(self, timestep, lo, hi, name="timestep"):
        t = timestep.detach().cpu().numpy() if isinstance(timestep, torch.Tensor) else np.asarray(timestep)
        if t.dtype.kind not in "iu" or ((t < lo) | (t >= hi)).any():
            raise LCMRefError(name, t.tolist(), f"integers in [{lo}, {hi})")
        return t.astype(np.int64)

    def _gather(self, table, idx, cols):
        out = table[torch.as_tensor(idx, device=self.device)]
        return tuple(out[..., k] for k in cols)

    def boundary_scalings(self, timestep):
        """(c_skip, c_out) at ``timestep`` (int, array or tensor; t in [−T, T)), as ``reference.boundary_scalings``."""
        t = self._host_index(timestep, -self._T, self._T)
        return self._gather(self._coefficients()[0], t + self._T, (0, 1))

    def x0_coefficients(self, timestep):
        """(p, q) with x0_pred = p·sample + q·model_output, as ``reference.x0_coefficients``."""
        t = self._host_index(timestep, -self._T, self._T)
        return self._gather(self._coefficients()[0], t + self._T, (2, 3))

    def denoised_coefficients(self, timestep):
        """(a, b) with denoised = a·sample + b·model_output, as ``reference.denoised_coefficients``."""
        t = self._host_index(timestep, -self._T, self._T)
        return self._gather(self._coefficients()[0], t + self._T, (4, 5))

    def noise_coefficients(self, prev_timestep):
        """(c, d) = (√ᾱ_prev, √(1 − ᾱ_prev)), final_alpha_cumprod for prev < 0, as ``reference.noise_coefficients``."""
        t = self._host_index(prev_timestep, -(1 << 62), self._T, "prev_timestep")
        return self._gather(self._coefficients()[1], np.maximum(t, -1) + 1, (0, 1))

    # -- schedule ---------------------------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps=None, *, original_inference_steps=None, timesteps=None, strength=1.0,
                      spacing=None) -> torch.Tensor:
        """``reference.set_timesteps`` with the strict profile, then ``set_schedule``; returns the timesteps
        (int64 on the device)."""
        sched = ref.set_timesteps(self.cfg, num_inference_steps, original_inference_steps=original_inference_steps,
                                  timesteps=timesteps, strength=strength, spacing=spacing, profile="strict")
        return self.set_schedule(sched.timesteps)

    def set_schedule(self, timesteps) -> torch.Tensor:
        """Use ``timesteps`` (distinct integers in [0, T), in the order they are stepped) as the schedule: builds the
        per-position rows (a, b, c·a, c·b, d) on the device, and the lookups from timestep and step index to row."""
        ts = check_schedule(self.cfg, timesteps, self.profile)
        n, T = len(ts), self._T
        nxt = np.append(ts[1:], -1)
        a, b = ref.denoised_coefficients(self.cfg, ts)
        c, d = ref.noise_coefficients(self.cfg, np.maximum(nxt, 0))
        c, d = np.where(nxt < 0, 1.0, c), np.where(nxt < 0, 0.0, d)           # last step: prev = denoised
        self._rows = self._table(np.stack([a, b, c * a, c * b, d], axis=1))
        if self.nonlinear:
            p, q = ref.x0_coefficients(self.cfg, ts)
            c_skip, c_out = ref.boundary_scalings(self.cfg, ts)
            self._rows64 = self._table(np.stack([p, q, c_skip, c_out, c, d], axis=1), torch.float64)
        # timestep -> row over [0, 2T) (negative t wraps into the upper half) and step index -> row over [0, 2n);
        # anything off the schedule maps to n, one past the last row, so the row gather raises instead of reading
        # a wrong row.
        index_of = np.full(2 * T, n, dtype=np.int64)
        index_of[ts] = np.arange(n)
        self._index_of = torch.as_tensor(index_of, device=self.device)
        self._index_check = torch.as_tensor(np.append(np.arange(n), np.full(n, n)), device=self.device)
        self._next = torch.as_tensor(nxt, device=self.device)
        self._views = {}
        self._host_index_tensors = [torch.tensor([i], device=self.device) for i in range(n)] if self.fused else []
        self._host_timesteps = [int(t) for t in ts]
        self._position = {t: i for i, t in enumerate(self._host_timesteps)}
        self.num_inference_steps = n
        self.timesteps = torch.as_tensor(ts, device=self.device)
        return self.timesteps

    def previous_timestep(self, timestep):
        """The timestep after ``timestep`` in the schedule, −1 after the last (``reference.previous_timestep``).
        An int gives an int; a tensor gives a tensor (looked up on the device, no host synchronisation)."""
        self._need_schedule()
        if isinstance(timestep, torch.Tensor):
            return self._next[self._index_of[timestep.reshape(-1)]].reshape(timestep.shape)
        i = self._row_of_timestep(timestep)
        return self._host_timesteps[i + 1] if i + 1 < len(self._host_timesteps) else -1

    def _need_schedule(self):
        if self._rows is None:
            raise LCMRefError("schedule", None, "set by set_timesteps(...) or set_schedule(timesteps) before stepping")

    def _row_of_timestep(self, timestep):
        t = python_int(timestep, "timestep")
        if t not in self._position:
            raise StrictError("timestep", t, f"one of the schedule's timesteps {self._host_timesteps}")
        return self._position[t]

    def _rows_for(self, table, timestep, step_index):
        """The rows of ``table`` for this call, shaped (B or 1, K), and whether it is known on the host to be the
        last step (True / False; None for tensor lookups, where the last row's c = 1, d = 0 does the work)."""
        if isinstance(step_index if step_index is not None else timestep, torch.Tensor):
            return table[self._device_row(timestep, step_index)], None
        i = self._host_row(timestep, step_index)
        return table[i:i + 1], i == len(self._host_timesteps) - 1

    def _device_row(self, timestep, step_index):
        """Row indices (B,) on the device for a tensor of timesteps or step indices; off-schedule values map to n."""
        key, lookup = (step_index, self._index_check) if step_index is not None else (timestep, self._index_of)
        if key.device != self.device or key.is_floating_point() or key.dtype == torch.bool:
            raise LCMRefError("step_index" if step_index is not None else "timestep", f"{key.dtype} on {key.device}",
                              f"Python ints or an integer tensor on {self.device}")
        # reshape(-1): a 0-d index tensor would be read on the host as a Python int (a sync)
        return lookup[key.reshape(-1)]

    def _host_row(self, timestep, step_index):
        """The schedule position of a host-side (int) timestep or step index, checked."""
        n = len(self._host_timesteps)
        if step_index is None:
            return self._row_of_timestep(timestep)
        i = python_int(step_index, "step_index")
        if not 0 <= i < n:
            raise StrictError("step_index", i, f"in [0, {n}) (a step past the end re-noises at the last level in "
                              "diffusers: quirk 5)")
        if timestep is not None and not isinstance(timestep, torch.Tensor) and timestep != self._host_timesteps[i]:
            raise StrictError("timestep", timestep, f"schedule[step_index={i}] = {self._host_timesteps[i]}")
        return i

    def _coefficients_for(self, table, columns, timestep, step_index, ndim):
        """The columns of ``table`` for this call as tensors shaped (B or 1, 1, …) to broadcast against a sample of
        ``ndim`` dims, and the host-known last-step flag. Host-indexed rows are cached as views (no kernel)."""
        if not isinstance(step_index if step_index is not None else timestep, torch.Tensor):
            i = self._host_row(timestep, step_index)
            key = (id(table), ndim, i)
            if key not in self._views:
                self._views[key] = table[i:i + 1].view(1, columns, *([1] * (ndim - 1))).unbind(1)
            return self._views[key], i == len(self._host_timesteps) - 1
        rows, last = self._rows_for(table, timestep, step_index)
        return rows.view(rows.shape[0], columns, *([1] * (ndim - 1))).unbind(1), last

    # -- step -------------------------------------------------------------------------------------------------------
    def step(self, model_output, timestep, sample, noise=None, *, step_index=None, generator=None,
             schedule=None) -> StepOutput:
        """One step of Algorithm 3: ``StepOutput(prev_sample, denoised)`` in the engine's dtype.

        ``timestep``: int or integer tensor () / (B,) on the device (ignored when ``step_index`` is given);
        ``step_index``: int or integer tensor, the position in the schedule. ``noise`` (shaped like ``sample``) is
        drawn with ``generator`` when not given, except when the step is known on the host to be the last.
        ``schedule=`` (as ``reference.step`` takes it) first sets the schedule: host work, not for the hot path."""
        if schedule is not None:
            sched = schedule.tolist() if isinstance(schedule, torch.Tensor) else list(np.asarray(schedule).tolist())
            if sched != self._host_timesteps:
                self.set_schedule(sched)
        self._need_schedule()
        self._check_tensor("sample", sample, sample.shape)
        self._check_tensor("model_output", model_output, sample.shape)
        if noise is not None:
            self._check_tensor("noise", noise, sample.shape)
        if self.nonlinear:
            return self._step_nonlinear(model_output, timestep, sample, noise, step_index, generator)
        if self.fused:
            return self._step_fused(model_output, timestep, sample, noise, step_index, generator)
        (a, b, ca, cb, d), last = self._coefficients_for(self._rows, len(_LINEAR), timestep, step_index,
                                                         sample.dim())
        if last:
            denoised = torch.mul(sample, a).addcmul_(b, model_output).to(self.dtype)
            return StepOutput(denoised, denoised)
        if noise is not None:
            return StepOutput(*_affine_step(sample, model_output, noise, a, b, ca, cb, d, self.dtype))
        z = draw_noise(sample.shape, generator, self.device, self.dtype)
        return StepOutput(*_affine_step(sample, model_output, z, a, b, ca, cb, d, self.dtype, noise_is_scratch=True))

    def _step_fused(self, model_output, timestep, sample, noise, step_index, generator):
        """The linear step as one compiled kernel; rows are picked by an index tensor (cached per host step)."""
        if isinstance(step_index if step_index is not None else timestep, torch.Tensor):
            index = self._device_row(timestep, step_index)
        else:
            i = self._host_row(timestep, step_index)
            if i == len(self._host_timesteps) - 1:                             # last: denoised only, eagerly
                (a, b, *_), _ = self._coefficients_for(self._rows, len(_LINEAR), None, i, sample.dim())
                denoised = torch.mul(sample, a).addcmul_(b, model_output).to(self.dtype)
                return StepOutput(denoised, denoised)
            index = self._host_index_tensors[i]
        z = noise if noise is not None else draw_noise(sample.shape, generator, self.device, self.dtype)
        return StepOutput(*_compiled_step()(sample, model_output, z, self._rows, index, self.dtype))

    def _step_nonlinear(self, model_output, timestep, sample, noise, step_index, generator):
        """Clip / threshold: x0 = p·x + q·m, limited, then denoised = c_out·x0 + c_skip·x, prev = c·denoised + d·z,
        all in float64, rounded once to the sample dtype."""
        (p, q, c_skip, c_out, c, d), last = self._coefficients_for(self._rows64, len(_NONLINEAR), timestep,
                                                                   step_index, sample.dim())
        x, m = sample.double(), model_output.double()
        x0 = m if self.cfg.prediction_type == "sample" else p * x + q * m
        if self.cfg.thresholding:
            x0 = self._threshold(x0)
        else:
            x0 = x0.clamp(-self.cfg.clip_sample_range, self.cfg.clip_sample_range)
        denoised = c_out * x0 + c_skip * x
        if last:
            denoised = denoised.to(self.dtype)
            return StepOutput(denoised, denoised)
        z = noise if noise is not None else draw_noise(sample.shape, generator, self.device, self.dtype)
        prev = c * denoised + d * z.double()
        return StepOutput(prev.to(self.dtype), denoised.to(self.dtype))

    def _threshold(self, x0):
        """Dynamic thresholding per batch element: s = the ratio-quantile of |x0| (torch.quantile's linear
        interpolation, exact position), clamped to [1, sample_max_value]; x0 = clamp(x0, −s, s)/s."""
        if x0.dim() < 2:
            raise LCMRefError("sample.shape", tuple(x0.shape), "at least 2 dims (batch, ...) with thresholding")
        flat = x0.abs().reshape(x0.shape[0], -1)
        lo, hi, w = _quantile_position(flat.shape[1], *self._ratio)
        ordered = flat.sort(dim=1).values
        s = torch.lerp(ordered[:, lo], ordered[:, hi], w)
        s = s.clamp(1.0, self.cfg.sample_max_value).view(-1, *([1] * (x0.dim() - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    def _check_tensor(self, name, x, shape):
        """Host-side checks only (dtype, device, shape): no values are read."""
        if not isinstance(x, torch.Tensor):
            raise LCMRefError(name, type(x).__name__, f"a torch.Tensor ({self.dtype} on {self.device})")
        if x.dtype != self.dtype or x.device != self.device:
            raise LCMRefError(f"{name}", f"{x.dtype} on {x.device}", f"{self.dtype} on {self.device} (this engine's)")
        if x.shape != shape:
            raise StrictError(f"{name}.shape", tuple(x.shape), f"the shape of sample, {tuple(shape)}")

    # -- loops and the forward process ------------------------------------------------------------------------------
    def sample(self, model_fn, x_T, noises=None, *, generator=None):
        """Algorithm 3 (multistep consistency sampling), as ``reference.sample``: ``model_fn(x, t)`` (t an int) gives
        the model output; ``noises`` holds ``len(schedule) − 1`` tensors, or is None to draw them with
        ``generator``. Returns the final denoised sample. Only Python ints drive the loop, so it can be captured in
        a CUDA graph."""
        self._need_schedule()
        n = len(self._host_timesteps)
        if noises is not None and len(noises) != n - 1:
            raise LCMRefError("noises", f"{len(noises)} tensors", f"len(schedule) - 1 = {n - 1} tensors")
        x = x_T
        for i, t in enumerate(self._host_timesteps):
            z = noises[i] if noises is not None and i < n - 1 else None
            x = self.step(model_fn(x, t), t, x, z, step_index=i, generator=generator).prev_sample
        return x

    def _forward_coefficients(self, timesteps, like):
        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.as_tensor(np.asarray(timesteps, dtype=np.int64))
        cd = self._forward[timesteps.to(self.device).reshape(-1)]
        cd = cd.view(cd.shape[0], 2, *([1] * (like.dim() - 1)))
        return cd.unbind(1)

    def add_noise(self, x0, noise, timesteps):
        """Forward process: √ᾱ_t·x0 + √(1−ᾱ_t)·noise, one timestep per batch element (or one for all); no host
        synchronisation. Error ≤ 1.5 eps·Σ|terms| (0.5 + 2⁻¹³·1.5 for float16, computed in float32)."""
        self._check_tensor("x0", x0, x0.shape)
        self._check_tensor("noise", noise, x0.shape)
        c, d = self._forward_coefficients(timesteps, x0)
        return torch.mul(x0, c).addcmul_(d, noise).to(x0.dtype)

    def get_velocity(self, sample, noise, timesteps):
        """v-prediction target √ᾱ_t·noise − √(1−ᾱ_t)·sample (Salimans & Ho 2022), as ``reference.get_velocity``."""
        self._check_tensor("sample", sample, sample.shape)
        self._check_tensor("noise", noise, sample.shape)
        c, d = self._forward_coefficients(timesteps, sample)
        return torch.mul(noise, c).addcmul_(d, sample, value=-1).to(sample.dtype)


def _device(device):
    """torch.device with the index made explicit for CUDA ('cuda' -> 'cuda:<current>'), so that comparing it with a
    tensor's device is meaningful."""
    d = torch.device(device) if device is not None else torch.device("cpu")
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def python_int(v, name):
    """An int from an int, NumPy integer or a 0-d integer tensor on the CPU (reading it costs no device sync)."""
    if isinstance(v, torch.Tensor):
        if v.dim() != 0 or v.device.type != "cpu" or v.is_floating_point():
            raise LCMRefError(name, f"a {tuple(v.shape)} {v.dtype} tensor on {v.device}", "an int here")
        v = v.item()
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    raise LCMRefError(name, v, "an integer")
