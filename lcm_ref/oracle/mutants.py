"""Fault injection: schedulers that each get one thing wrong, as real LCM implementations have.

Each mutant subclasses diffusers' ``LCMScheduler`` and changes one thing, and names in ``CONCERN`` the conformance
concern(s) it breaks (docs/design.md §9.2, §9.5); ``CONFORM`` holds the settings it needs to show (a dtype, a table
precision), if any.

- ``MUTANTS``: the classic bugs. ``check`` (conform's fail-fast mode) must raise ``OracleMismatch`` on every one
  (``tests/test_mutants.py``), and ``conform`` must fail each in exactly its ``CONCERN`` (``tests/test_conform.py``).
- ``CONFORM_MUTANTS``: bug classes ``check`` cannot see or cannot place (a port that ignores the generator, float32
  tables in a float64 port, the pre-0.32 ``previous_timestep``, object state, output dtype): ``conform`` must fail
  each in its ``CONCERN``.
- ``NEGATIVE_CONTROLS``: correct ports in an unusual shape (no ``denoised`` in the step output; float64 tables):
  ``conform`` must fail none of their concerns (``CONCERN = None``).

A mutant that survives is a bug in the oracle (a budget too loose, or a strategy that never draws the input that
exposes it), not in the mutant.

    python -m lcm_ref.oracle.mutants                # the kill table of check (markdown)
    python -m lcm_ref.oracle.mutants --concerns     # the mutant -> concern table of conform
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from diffusers import LCMScheduler

from .concerns import CONCERNS as CONCERN_NAMES
from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput

__all__ = ["MUTANTS", "CONFORM_MUTANTS", "NEGATIVE_CONTROLS", "ALL_MUTANTS", "kill_table", "concern_table",
           "format_concern_table", "expected_concerns", "design_table", "read_design_table", "write_design_table",
           "main"]


def _scalings(timestep, timestep_scaling, sigma_data):
    u = timestep * timestep_scaling
    return sigma_data ** 2 / (u ** 2 + sigma_data ** 2), u / (u ** 2 + sigma_data ** 2) ** 0.5


def _lcm_grid(scheduler, original_inference_steps, strength, L=None):
    """The descending origin grid (1..L)·k − 1, L = int(orig·strength) unless given."""
    T = scheduler.config.num_train_timesteps
    orig = original_inference_steps or scheduler.config.original_inference_steps
    L = int(orig * strength) if L is None else L
    return (np.arange(1, L + 1, dtype=np.int64) * (T // orig) - 1)[::-1].copy()


def _select(desc, n):
    """diffusers' selection: floor(linspace(0, L, n, endpoint=False))."""
    return desc[np.floor(np.linspace(0, len(desc), num=n, endpoint=False)).astype(np.int64)]


class _StepMutant(LCMScheduler):
    """Helper: find the step index as the real step will, so that a mutant can look ahead."""

    def _index(self, timestep):
        if self.step_index is None and self.num_inference_steps is not None:
            self._init_step_index(timestep)
        return self.step_index


class SigmaData(LCMScheduler):
    """σ_data = 1 in the boundary scalings instead of 0.5 (c_skip, c_out of the wrong consistency model)."""

    CONCERN = ("denoised", "clip_threshold", "tables")

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        return _scalings(timestep, self.config.timestep_scaling, 1.0)


class NoCSkip(LCMScheduler):
    """denoised = c_out·x0 (the skip connection c_skip·x is dropped)."""

    CONCERN = ("denoised", "clip_threshold", "tables")

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        c_skip, c_out = super().get_scalings_for_boundary_condition_discrete(timestep)
        return 0 * c_skip, c_out


class NoCOut(LCMScheduler):
    """denoised = x0 + c_skip·x (c_out taken as 1)."""

    CONCERN = ("denoised", "clip_threshold", "tables")

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        c_skip, c_out = super().get_scalings_for_boundary_condition_discrete(timestep)
        return c_skip, 0 * c_out + 1


class ScalingIgnored(LCMScheduler):
    """timestep_scaling ignored: the scalings always use the default 10."""

    CONCERN = ("tables", "denoised", "clip_threshold")

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        return _scalings(timestep, 10.0, 0.5)


class PrevOffByOne(_StepMutant):
    """The previous timestep is one less than the next scheduled one (ᾱ[prev − 1] for the re-noising)."""

    CONCERN = "prev_sample"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._index(timestep)
        saved = self.timesteps
        if i is not None and i + 1 < len(saved):
            self.timesteps = saved.clone()
            self.timesteps[i + 1] -= 1
        try:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        finally:
            self.timesteps = saved


class NoiseOnLastStep(_StepMutant):
    """The last step re-noises too (as the authors' original pipeline did) instead of returning denoised."""

    CONCERN = "final_step"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._index(timestep)
        last = i is not None and i == self.num_inference_steps - 1
        if last:
            self.num_inference_steps += 1
        try:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        finally:
            if last:
                self.num_inference_steps -= 1


class NoiseMissing(_StepMutant):
    """No noise between steps: prev = √ᾱ_prev·denoised (the noise is drawn, then not added)."""

    CONCERN = "prev_sample"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._index(timestep)
        prev, den = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
        if i is not None and i != self.num_inference_steps - 1:
            t_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else timestep
            abar = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
            prev = abar.sqrt() * den
        return LCMSchedulerOutput(prev_sample=prev, denoised=den) if return_dict else (prev, den)


class StrideSelection(LCMScheduler):
    """The original LCM pipeline's selection ``origin[::-(L//n)][:n]`` (n=4: 999, 759, 519, 279) instead of
    diffusers' floor(linspace) (999, 759, 499, 259)."""

    CONCERN = ("timesteps", "original_inference_steps", "strength")

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0):
        super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps, strength)
        if timesteps is None:
            desc = _lcm_grid(self, original_inference_steps, strength)
            sel = desc[:: len(desc) // num_inference_steps][:num_inference_steps]
            self.timesteps = torch.from_numpy(sel.copy()).to(device=device, dtype=torch.long)


class StrengthRounding(LCMScheduler):
    """round(orig·strength) instead of int(orig·strength) for the img2img grid length."""

    CONCERN = "strength"

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0):
        super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps, strength)
        if timesteps is None:
            orig = original_inference_steps or self.config.original_inference_steps
            desc = _lcm_grid(self, original_inference_steps, strength, L=round(orig * strength))
            self.timesteps = torch.from_numpy(_select(desc, num_inference_steps)).to(device=device,
                                                                                     dtype=torch.long)


class Float16Tables(LCMScheduler):
    """ᾱ stored in float16 (rounded from the float32 table)."""

    CONCERN = ("tables", "denoised", "prev_sample", "clip_threshold", "add_noise", "get_velocity")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.alphas_cumprod = self.alphas_cumprod.to(torch.float16).to(torch.float32)


class VPredictionSign(LCMScheduler):
    """v-prediction's x0 with the wrong sign: √ᾱ·x + √(1−ᾱ)·v."""

    CONCERN = ("denoised", "clip_threshold")

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.config.prediction_type == "v_prediction":
            model_output = -model_output
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


class BetaProdNoSqrt(_StepMutant):
    """epsilon's x0 = (x − (1−ᾱ)·ε)/√ᾱ: the square root of 1 − ᾱ forgotten."""

    CONCERN = ("denoised", "clip_threshold")

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.config.prediction_type == "epsilon":
            model_output = model_output * (1 - self.alphas_cumprod[timestep]).sqrt()
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


class ThresholdQuantileNearest(LCMScheduler):
    """Dynamic thresholding with the 'nearest' quantile instead of linear interpolation."""

    CONCERN = "clip_threshold"

    def _threshold_sample(self, sample):
        flat = sample.reshape(sample.shape[0], -1).abs()
        s = torch.quantile(flat, self.config.dynamic_thresholding_ratio, dim=1, interpolation="nearest")
        s = s.clamp(min=1, max=self.config.sample_max_value).reshape((-1,) + (1,) * (sample.ndim - 1))
        return torch.maximum(torch.minimum(sample, s), -s) / s


class ClipRangeIgnored(LCMScheduler):
    """clip_sample clamps x0 to ±1 whatever clip_sample_range says."""

    CONCERN = ("clip_threshold", "config")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_to_config(clip_sample_range=1.0)


class FinalAlphaAtZero(_StepMutant):
    """final_alpha_cumprod misused: a previous timestep of 0 is treated as 'no previous timestep' (prev > 0
    instead of prev >= 0), so the step to t = 0 re-noises with ᾱ = final_alpha_cumprod instead of ᾱ[0]."""

    CONCERN = "prev_sample"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._index(timestep)
        saved = self.alphas_cumprod
        if i is not None and i + 1 < len(self.timesteps) and int(self.timesteps[i + 1]) == 0:
            self.alphas_cumprod = saved.clone()
            self.alphas_cumprod[0] = self.final_alpha_cumprod
        try:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        finally:
            self.alphas_cumprod = saved


class AddNoiseNoSqrt(LCMScheduler):
    """add_noise with ᾱ and 1 − ᾱ where √ᾱ and √(1 − ᾱ) belong."""

    CONCERN = "add_noise"

    def add_noise(self, original_samples, noise, timesteps):
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)[timesteps]
        abar = abar.flatten().reshape((-1,) + (1,) * (original_samples.ndim - 1))
        return abar * original_samples + (1 - abar) * noise


class VelocitySign(LCMScheduler):
    """get_velocity with the opposite sign: √(1−ᾱ)·x − √ᾱ·ε."""

    CONCERN = "get_velocity"

    def get_velocity(self, sample, noise, timesteps):
        return -super().get_velocity(sample, noise, timesteps)


class MissingStepCountCheck(LCMScheduler):
    """No error when num_inference_steps exceeds int(orig·strength): the selection repeats timesteps instead."""

    CONCERN = ("errors", "strength")

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0):
        orig = original_inference_steps or self.config.original_inference_steps
        n = num_inference_steps
        if timesteps is None and n is not None and orig <= self.config.num_train_timesteps \
                and n <= self.config.num_train_timesteps and int(orig * strength) < n:
            desc = _lcm_grid(self, original_inference_steps, strength)
            self.num_inference_steps = n
            self.timesteps = torch.from_numpy(_select(np.resize(desc, max(len(desc), 1)), n)).to(
                device=device, dtype=torch.long)
            self._step_index = self._begin_index = None
            return
        super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps, strength)


class ZeroSNRIgnored(LCMScheduler):
    """rescale_betas_zero_snr accepted but not applied."""

    CONCERN = ("tables", "denoised", "prev_sample", "clip_threshold", "add_noise", "get_velocity")

    def __init__(self, **kwargs):
        zero_snr = kwargs.pop("rescale_betas_zero_snr", False)
        super().__init__(**kwargs)
        self.register_to_config(rescale_betas_zero_snr=zero_snr)


# ---------------------------------------------------------------------------------------------------------------
# Bug classes that check() cannot see or place, and negative controls (conform)
# ---------------------------------------------------------------------------------------------------------------

class _OwnNoise(_StepMutant):
    """Helper: the step's own re-noising with the z that ``_noise`` returns (the parent step then only denoises)."""

    def _noise(self, shape, like, generator):
        raise NotImplementedError

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._index(timestep)
        n = self.num_inference_steps
        last = i is None or i == n - 1
        if not last:
            self.num_inference_steps = i + 1          # the parent then returns denoised and draws nothing
        try:
            _, den = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
        finally:
            self.num_inference_steps = n
        prev = den
        if not last:
            t_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else timestep
            abar = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
            z = self._noise(tuple(model_output.shape), den, generator)
            prev = abar.sqrt() * den + (1 - abar).sqrt() * z.to(den.dtype)
        return LCMSchedulerOutput(prev_sample=prev, denoised=den) if return_dict else (prev, den)


class GeneratorIgnored(_OwnNoise):
    """The generator passed to step is ignored: z from torch's global generator ("same seed, different image")."""

    CONCERN = "noise"

    def _noise(self, shape, like, generator):
        return torch.randn(shape, dtype=like.dtype, device=like.device)


class NumpyNoise(_OwnNoise):
    """z drawn with NumPy's global generator (a port with its own RNG): nothing torch draws, the generator unused."""

    CONCERN = "noise"

    def _noise(self, shape, like, generator):
        return torch.from_numpy(np.random.standard_normal(shape)).to(dtype=like.dtype, device=like.device)


class NoiseFloat32(_OwnNoise):
    """z drawn in float32 whatever the sample dtype, then cast (diffusers 0.22 did): another stream in float16."""

    CONCERN = "noise"
    CONFORM = {"dtype": "float16"}

    def _noise(self, shape, like, generator):
        from diffusers.utils.torch_utils import randn_tensor
        return randn_tensor(shape, generator=generator, device=like.device, dtype=torch.float32)


class OldPreviousTimestep(LCMScheduler):
    """previous_timestep(t) = t − T//n, diffusers' formula before 0.32, instead of the next scheduled timestep."""

    CONCERN = "previous_timestep"

    def previous_timestep(self, timestep):
        return timestep - self.config.num_train_timesteps // self.num_inference_steps


class StaleStepIndex(LCMScheduler):
    """set_timesteps keeps the step index of the previous run: a second run on the object continues the first."""

    CONCERN = "state"

    def set_timesteps(self, *args, **kwargs):
        index = getattr(self, "_step_index", None)
        super().set_timesteps(*args, **kwargs)
        self._step_index = index


class OutputDtype(LCMScheduler):
    """step returns prev_sample and denoised in float64 whatever the sample dtype (computed in float64, not cast
    back)."""

    CONCERN = "dtype"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        prev, den = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
        prev, den = prev.double(), den.double()
        return LCMSchedulerOutput(prev_sample=prev, denoised=den) if return_dict else (prev, den)


class ScaleModelInputCIn(LCMScheduler):
    """scale_model_input applies k-diffusion's c_in = 1/√(σ² + 1) instead of returning the sample unchanged."""

    CONCERN = "interface"

    def scale_model_input(self, sample, timestep=None):
        t = int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)
        abar = float(self.alphas_cumprod[t])
        return sample * abar ** 0.5        # 1/√(σ² + 1) = √ᾱ


class InitNoiseSigmaVE(LCMScheduler):
    """init_noise_sigma is the VE σ_max = √((1 − ᾱ_T)/ᾱ_T) (as Euler-family schedulers set it) instead of 1."""

    CONCERN = "interface"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        abar = max(float(self.alphas_cumprod[-1]), 2.0 ** -24)     # zero-SNR: ᾱ_T = 0
        self.init_noise_sigma = ((1 - abar) / abar) ** 0.5


class OrderTwo(LCMScheduler):
    """order = 2 (a second-order solver's value): pipelines count the warm-up steps wrong, and diffusers' own
    strength truncation of custom timesteps (timesteps[t_start·order:]) cuts twice as many."""

    CONCERN = ("interface", "custom_timesteps")
    order = 2


class TupleWithoutDenoised(LCMScheduler):
    """step(..., return_dict=False) returns (prev_sample,) only, so the LCM pipelines' `latents, denoised = ...`
    breaks."""

    CONCERN = "interface"

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        out = super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        return out if return_dict else (out[0],)


class BeginIndexNotReported(LCMScheduler):
    """begin_index always reads None: set_begin_index is honoured by step, but a pipeline cannot see it."""

    CONCERN = "interface"

    @property
    def begin_index(self):
        return None

    def _init_step_index(self, timestep):
        if self._begin_index is None:
            super()._init_step_index(timestep)
        else:
            self._step_index = self._begin_index


class LenInferenceSteps(LCMScheduler):
    """len(scheduler) is the number of inference steps instead of num_train_timesteps."""

    CONCERN = "interface"

    def __len__(self):
        return self.num_inference_steps or 0


class Float64Tables(LCMScheduler):
    """A correct float64 port: ᾱ the reference's correctly rounded float64 table, c_skip and c_out in float64 from
    an integer timestep (negative control: passes under tables="float64")."""

    CONCERN = None
    CONFORM = {"dtype": "float64", "tables": "float64"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.alphas_cumprod = torch.tensor(self._abar64(), dtype=torch.float64)
        self.final_alpha_cumprod = (torch.tensor(1.0, dtype=torch.float64) if self.config.set_alpha_to_one
                                    else self.alphas_cumprod[0].clone())

    def _abar64(self):
        from .. import reference as ref
        from ..config import LCMConfig
        keys = LCMConfig().to_dict().keys()
        return ref.alphas_cumprod(LCMConfig(**{k: v for k, v in self.config.items() if k in keys}))

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        t = int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)
        return _scalings(t, self.config.timestep_scaling, 0.5)


class Float32Tables(Float64Tables):
    """A float64 port that keeps float32 tables: ᾱ, c_skip and c_out rounded to float32 (diffusers' own precision,
    allowed by tables="float32", wrong under tables="float64")."""

    CONCERN = ("tables", "denoised", "prev_sample", "clip_threshold", "add_noise", "get_velocity")
    CONFORM = {"dtype": "float64", "tables": "float64"}

    def _abar64(self):
        return np.float32(super()._abar64()).astype(np.float64)

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        c_skip, c_out = super().get_scalings_for_boundary_condition_discrete(timestep)
        return float(np.float32(c_skip)), float(np.float32(c_out))


class _PrevOnlyOutput:
    """A step output with prev_sample only (as many ports return)."""

    def __init__(self, prev_sample):
        self.prev_sample = prev_sample


class NoDenoised(LCMScheduler):
    """step returns prev_sample only (no denoised), otherwise diffusers bit for bit (negative control: no fail;
    concern denoised is not_observable, judged through the last step)."""

    CONCERN = None

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        prev, _ = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
        return _PrevOnlyOutput(prev) if return_dict else (prev,)


#: name -> mutant class (docstring: what it gets wrong)
MUTANTS = {cls.__name__: cls for cls in (
    SigmaData, NoCSkip, NoCOut, ScalingIgnored, PrevOffByOne, NoiseOnLastStep, NoiseMissing, StrideSelection,
    StrengthRounding, Float16Tables, VPredictionSign, BetaProdNoSqrt, ThresholdQuantileNearest, ClipRangeIgnored,
    FinalAlphaAtZero, AddNoiseNoSqrt, VelocitySign, MissingStepCountCheck, ZeroSNRIgnored)}
#: bug classes only conform places (name -> class)
CONFORM_MUTANTS = {cls.__name__: cls for cls in (
    GeneratorIgnored, NumpyNoise, NoiseFloat32, OldPreviousTimestep, StaleStepIndex, OutputDtype, Float32Tables,
    ScaleModelInputCIn, InitNoiseSigmaVE, OrderTwo, TupleWithoutDenoised, BeginIndexNotReported, LenInferenceSteps)}
#: correct ports in an unusual shape: conform must fail none of their concerns
NEGATIVE_CONTROLS = {cls.__name__: cls for cls in (NoDenoised, Float64Tables)}
ALL_MUTANTS = {**MUTANTS, **CONFORM_MUTANTS, **NEGATIVE_CONTROLS}


def _kill(cls, dtype, examples):
    """(killed, concern, failing examples / examples, seconds) of one ``check`` run without shrinking."""
    from .conform import OracleMismatch, check

    t0 = time.perf_counter()
    try:
        check(cls, dtype=dtype, examples=examples, shrink=False)
        return False, "-", "survived", time.perf_counter() - t0
    except OracleMismatch as e:
        r = e.result
        return True, e.quantity, f"{r.failing_examples}/{r.examples} examples", time.perf_counter() - t0


def kill_table(examples=None, *, dtype=torch.float32, names=None):
    """Run ``check`` (conform's fail-fast mode, default examples, no shrinking) on each mutant of ``MUTANTS``.
    Rows: (name, killed, concern, failing examples, seconds)."""
    return [(name,) + _kill(MUTANTS[name], dtype, examples) for name in names or MUTANTS]


def format_table(rows) -> str:
    killed = sum(r[1] for r in rows)
    lines = [f"kill rate: {killed}/{len(rows)} with check() (conform's fail-fast mode, default budget)", "",
             "| mutant | what it gets wrong | killed | first failing concern | failing examples |",
             "|---|---|---|---|---|"]
    for r in rows:
        doc = " ".join((MUTANTS[r[0]].__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"| {r[0]} | {doc} | {'yes' if r[1] else '**NO**'} | {r[2]} | {r[3]} |")
    return "\n".join(lines)


def expected_concerns(cls) -> tuple:
    """The concerns ``cls`` must fail in (its ``CONCERN`` as a tuple; () for a negative control)."""
    c = getattr(cls, "CONCERN", None)
    return () if c is None else ((c,) if isinstance(c, str) else tuple(c))


def concern_table(names=None, *, examples=None, all_concerns=True):
    """Run ``conform`` on each mutant (default: ``ALL_MUTANTS``) with its ``CONFORM`` settings (dtype, tables;
    default float32 / float32) and return one row per mutant, a dict: ``mutant``, ``bug`` (the docstring's first
    sentence), ``expected`` (its ``CONCERN``, "none" for a negative control), ``settings``, ``failing`` (the
    concerns that fail: with ``all_concerns`` every concern is run, else only the expected ones), ``caught`` (the
    failing concerns are exactly the expected ones: none for a negative control), ``likely_cause`` (of the first
    expected concern), ``failing_examples`` (failing / run, in the first expected concern) and ``seconds``."""
    from .conform import conform

    rows = []
    names = list(names or ALL_MUTANTS)
    try:
        from tqdm import tqdm
        names = tqdm(names, desc="mutants", unit="mutant", leave=False)
    except ImportError:
        pass
    for name in names:
        cls = ALL_MUTANTS[name]
        expected = expected_concerns(cls)
        settings = dict(getattr(cls, "CONFORM", None) or {})
        t0 = time.perf_counter()
        report = conform(cls, examples=examples, concerns=None if all_concerns or not expected else list(expected),
                         impl=f"{__name__}:{name}", **settings)
        failing = [c.concern for c in report.concerns if c.verdict == "fail"]
        caught = set(failing) == set(expected)       # its concerns, and no other (one deviation, one concern)
        cause = next((report[c].likely_cause for c in expected if c in failing), None)
        first = report[expected[0]] if expected else None
        rows.append({"mutant": name, "bug": " ".join((cls.__doc__ or "").split()).split(". ")[0].rstrip("."),
                     "expected": ", ".join(expected) or "none (negative control)",
                     "settings": ", ".join(f"{k}={v}" for k, v in settings.items()) or "",
                     "failing": ", ".join(failing) or "none", "caught": caught, "likely_cause": cause or "",
                     "failing_examples": f"{first.failing_examples}/{first.examples}" if first else "",
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def format_concern_table(rows) -> str:
    """The rows of ``concern_table`` as markdown, with the catch rate."""
    caught = sum(r["caught"] for r in rows)
    lines = [f"caught in exactly the expected concerns: {caught}/{len(rows)} (negative controls: no concern fails)",
             "",
             "| mutant | what it gets wrong | expected concern | settings | failing concerns | failing examples "
             "| likely cause reported |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r["caught"] else " **(not caught)**"
        lines.append(f"| {r['mutant']} | {r['bug']} | {r['expected']}{mark} | {r['settings']} | {r['failing']} | "
                     f"{r['failing_examples']} | {r['likely_cause']} |")
    return "\n".join(lines)


#: the markers around the generated table in docs/design.md §9.5
DESIGN_BEGIN = "<!-- mutant table: generated by python -m lcm_ref.oracle.mutants --concerns --design docs/design.md -->"
DESIGN_END = "<!-- end of mutant table -->"


def design_table(rows) -> str:
    """The rows of ``concern_table`` (every concern, default examples) as docs/design.md §9.5's table."""
    lines = [DESIGN_BEGIN, "", f"Measured by `concern_table()`: all {len(CONCERN_NAMES)} concerns, default example "
             "counts, each mutant with its settings. `caught` means the failing concerns are exactly `CONCERN`.", "",
             "| mutant | bug | settings | fails (= `CONCERN`) | caught | likely cause reported |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mutant']} | {r['bug']} | {r['settings']} | {r['failing']} | "
                     f"{'yes' if r['caught'] else '**no**'} | {r['likely_cause'] or '—'} |")
    return "\n".join(lines + ["", DESIGN_END])


def read_design_table(text: str) -> dict:
    """mutant -> the set of concerns docs/design.md's generated table says it fails (test_conform holds it to
    ``CONCERN``)."""
    body = text[text.index(DESIGN_BEGIN):text.index(DESIGN_END)]
    out = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ALL_MUTANTS:
            out[cells[0]] = set() if cells[3] == "none" else set(cells[3].split(", "))
    return out


def write_design_table(path, rows) -> None:
    """Replace the generated table in the design document ``path`` (atomically)."""
    from ..numerics import write_atomic

    text = open(path, encoding="utf-8").read()
    a, b = text.index(DESIGN_BEGIN), text.index(DESIGN_END) + len(DESIGN_END)
    write_atomic(path, text[:a] + design_table(rows) + text[b:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_ref.oracle.mutants",
                                description="kill table of the oracle's mutants (check), or with --concerns the "
                                            "mutant -> concern table (conform)")
    p.add_argument("--examples", type=int, default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--concerns", action="store_true", help="the mutant -> concern table of conform")
    p.add_argument("--design", metavar="FILE", default=None,
                   help="with --concerns: also write the table into FILE (docs/design.md §9.5, between its markers)")
    args = p.parse_args(argv)
    if args.concerns:
        rows = concern_table(examples=args.examples)
        print(format_concern_table(rows))
        if args.design:
            write_design_table(args.design, rows)
        return 0 if all(r["caught"] for r in rows) else 1
    rows = kill_table(args.examples, dtype=getattr(torch, args.dtype))
    print(format_table(rows))
    return 0 if all(r[1] for r in rows) else 1  # a survivor is an oracle bug


if __name__ == "__main__":
    sys.exit(main())
