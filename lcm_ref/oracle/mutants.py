"""Fault injection: schedulers that each get one thing wrong, as real LCM implementations have.

Each mutant subclasses diffusers' ``LCMScheduler`` and changes one thing; ``lcm_ref.oracle.check`` with its default
budget must raise ``OracleMismatch`` on every one (``tests/test_mutants.py``). A mutant that survives is a bug in
the oracle (a budget too loose, or a strategy that never draws the input that exposes it), not in the mutant.

    python -m lcm_ref.oracle.mutants        # prints the kill table (markdown)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from diffusers import LCMScheduler
from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput

__all__ = ["MUTANTS", "kill_table", "main"]


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

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        return _scalings(timestep, self.config.timestep_scaling, 1.0)


class NoCSkip(LCMScheduler):
    """denoised = c_out·x0 (the skip connection c_skip·x is dropped)."""

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        c_skip, c_out = super().get_scalings_for_boundary_condition_discrete(timestep)
        return 0 * c_skip, c_out


class NoCOut(LCMScheduler):
    """denoised = x0 + c_skip·x (c_out taken as 1)."""

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        c_skip, c_out = super().get_scalings_for_boundary_condition_discrete(timestep)
        return c_skip, 0 * c_out + 1


class ScalingIgnored(LCMScheduler):
    """timestep_scaling ignored: the scalings always use the default 10."""

    def get_scalings_for_boundary_condition_discrete(self, timestep):
        return _scalings(timestep, 10.0, 0.5)


class PrevOffByOne(_StepMutant):
    """The previous timestep is one less than the next scheduled one (ᾱ[prev − 1] for the re-noising)."""

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

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength=1.0):
        super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps, strength)
        if timesteps is None:
            desc = _lcm_grid(self, original_inference_steps, strength)
            sel = desc[:: len(desc) // num_inference_steps][:num_inference_steps]
            self.timesteps = torch.from_numpy(sel.copy()).to(device=device, dtype=torch.long)


class StrengthRounding(LCMScheduler):
    """round(orig·strength) instead of int(orig·strength) for the img2img grid length."""

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

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.alphas_cumprod = self.alphas_cumprod.to(torch.float16).to(torch.float32)


class VPredictionSign(LCMScheduler):
    """v-prediction's x0 with the wrong sign: √ᾱ·x + √(1−ᾱ)·v."""

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.config.prediction_type == "v_prediction":
            model_output = -model_output
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


class BetaProdNoSqrt(_StepMutant):
    """epsilon's x0 = (x − (1−ᾱ)·ε)/√ᾱ: the square root of 1 − ᾱ forgotten."""

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.config.prediction_type == "epsilon":
            model_output = model_output * (1 - self.alphas_cumprod[timestep]).sqrt()
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


class ThresholdQuantileNearest(LCMScheduler):
    """Dynamic thresholding with the 'nearest' quantile instead of linear interpolation."""

    def _threshold_sample(self, sample):
        flat = sample.reshape(sample.shape[0], -1).abs()
        s = torch.quantile(flat, self.config.dynamic_thresholding_ratio, dim=1, interpolation="nearest")
        s = s.clamp(min=1, max=self.config.sample_max_value).reshape((-1,) + (1,) * (sample.ndim - 1))
        return torch.maximum(torch.minimum(sample, s), -s) / s


class ClipRangeIgnored(LCMScheduler):
    """clip_sample clamps x0 to ±1 whatever clip_sample_range says."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_to_config(clip_sample_range=1.0)


class FinalAlphaAtZero(_StepMutant):
    """final_alpha_cumprod misused: a previous timestep of 0 is treated as 'no previous timestep' (prev > 0
    instead of prev >= 0), so the step to t = 0 re-noises with ᾱ = final_alpha_cumprod instead of ᾱ[0]."""

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

    def add_noise(self, original_samples, noise, timesteps):
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)[timesteps]
        abar = abar.flatten().reshape((-1,) + (1,) * (original_samples.ndim - 1))
        return abar * original_samples + (1 - abar) * noise


class VelocitySign(LCMScheduler):
    """get_velocity with the opposite sign: √(1−ᾱ)·x − √ᾱ·ε."""

    def get_velocity(self, sample, noise, timesteps):
        return -super().get_velocity(sample, noise, timesteps)


class MissingStepCountCheck(LCMScheduler):
    """No error when num_inference_steps exceeds int(orig·strength): the selection repeats timesteps instead."""

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

    def __init__(self, **kwargs):
        zero_snr = kwargs.pop("rescale_betas_zero_snr", False)
        super().__init__(**kwargs)
        self.register_to_config(rescale_betas_zero_snr=zero_snr)


#: name -> mutant class (docstring: what it gets wrong)
MUTANTS = {cls.__name__: cls for cls in (
    SigmaData, NoCSkip, NoCOut, ScalingIgnored, PrevOffByOne, NoiseOnLastStep, NoiseMissing, StrideSelection,
    StrengthRounding, Float16Tables, VPredictionSign, BetaProdNoSqrt, ThresholdQuantileNearest, ClipRangeIgnored,
    FinalAlphaAtZero, AddNoiseNoSqrt, VelocitySign, MissingStepCountCheck, ZeroSNRIgnored)}


def _kill(cls, dtype, max_examples, explicit):
    """(killed, quantity, at which example, seconds) of one ``check`` run without shrinking."""
    from .check import DEFAULT_MAX_EXAMPLES, OracleMismatch, check

    t0 = time.perf_counter()
    try:
        report = check(cls, dtype=dtype, max_examples=max_examples or DEFAULT_MAX_EXAMPLES, shrink=False,
                       explicit=explicit)
        return False, "-", f"survived {report.examples}", time.perf_counter() - t0
    except OracleMismatch as e:
        at = e.examples if isinstance(e.examples, str) else f"example {e.examples}"
        return True, e.quantity, at, time.perf_counter() - t0


def kill_table(max_examples=None, *, dtype=torch.float32, names=None, hypothesis_only=True):
    """Run ``check`` (default budget, no shrinking) on each mutant. Rows: (name, killed, quantity, where,
    seconds) and, with ``hypothesis_only``, the same for the hypothesis draws alone (``explicit=False``): how
    much the canonical examples are needed."""
    rows = []
    for name in names or MUTANTS:
        row = (name,) + _kill(MUTANTS[name], dtype, max_examples, True)
        if hypothesis_only:
            row += _kill(MUTANTS[name], dtype, max_examples, False)
        rows.append(row)
    return rows


def format_table(rows) -> str:
    killed = sum(r[1] for r in rows)
    alone = sum(r[5] for r in rows if len(r) > 5)
    lines = [f"kill rate: {killed}/{len(rows)} with check()'s default budget"
             + (f"; {alone}/{len(rows)} by the hypothesis draws alone (explicit=False)" if len(rows[0]) > 5 else ""),
             "", "| mutant | what it gets wrong | killed | by | at | hypothesis alone |", "|---|---|---|---|---|---|"]
    for r in rows:
        doc = " ".join((MUTANTS[r[0]].__doc__ or "").split()).split(". ")[0].rstrip(".")
        alone = (f"{r[7]}" if r[5] else "survived") if len(r) > 5 else ""
        lines.append(f"| {r[0]} | {doc} | {'yes' if r[1] else '**NO**'} | {r[2]} | {r[3]} | {alone} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_ref.oracle.mutants", description="kill table of the oracle's mutants")
    p.add_argument("--examples", type=int, default=None)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    rows = kill_table(args.examples, dtype=getattr(torch, args.dtype))
    print(format_table(rows))
    return 0 if all(r[1] for r in rows) else 1  # a survivor is an oracle bug


if __name__ == "__main__":
    sys.exit(main())
