"""The drop-in LCMScheduler inside diffusers' LCM pipelines (text2img at 1/2/4/8 steps and custom timesteps,
img2img with strength), against the same pipeline with diffusers' own LCMScheduler: tiny random UNet (with
time_cond_proj_dim) and VAE from lcm_ref.testbed.tiny_pipeline, prompt_embeds given, float32 on the CPU.

What must hold, and why each budget is what it is:
- exact: the schedule, the timesteps the UNet is called with, the number of steps, and the generator's state at
  every step (same draws in the same order: the drop-in uses diffusers' randn_tensor call);
- every step the drop-in takes inside the pipeline is within the derived float32 bounds of the reference (1.5 for
  denoised, 2 for prev_sample: lcm_ref.torch_impl.bounds) on the inputs the pipeline gave it, noise re-drawn from
  the generator state it saw;
- the images: two float32 pipelines whose schedulers differ by rounding (≤ 1.5–2 against ≈ 6–13 units of
  eps32·Σ|terms| per step) differ by rounding carried through the UNet and VAE, which has no closed-form bound
  for a random network. The budget is therefore the product requirement "the same image up to rounding": every
  pixel of the [0, 1] image within half an 8-bit level (0.5/255), so the saved 8-bit images differ by at most one
  level, and only at pixels that sit on a rounding boundary. Measured (CPU, torch 2.13, diffusers 0.42.1): images
  differ by ≤ 2.7e-7 (text2img) and ≤ 3.6e-7 (img2img); final latents (|x| ≤ 71) by ≤ 5.4e-5, about 7·eps32
  relative. The negative control below shows the budget still catches a real fault.
"""

import functools

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import lcm_ref.reference as ref
from lcm_ref import LCMConfig
from lcm_ref.testbed.tiny_pipeline import init_image, prompt_embeds, tiny_pipeline
from lcm_ref.torch_impl import LCMScheduler
from lcm_ref.torch_impl.bounds import check_scaled, step_bounds

IMAGE_BUDGET = 0.5 / 255

CASES = {
    "1 step": dict(num_inference_steps=1),
    "2 steps": dict(num_inference_steps=2),
    "4 steps": dict(num_inference_steps=4),
    "8 steps": dict(num_inference_steps=8),
    "custom timesteps": dict(timesteps=[999, 639, 379, 139]),
    "img2img strength 0.5": dict(num_inference_steps=4, strength=0.5, img2img=True),
    "img2img strength 0.7, 2 steps": dict(num_inference_steps=2, strength=0.7, img2img=True),
}


def recording(sched):
    """Wrap sched.step to record (timestep, step index, model_output, sample, generator state, prev, denoised)."""
    calls, step = [], sched.step

    @functools.wraps(step)
    def wrapped(model_output, timestep, sample, generator=None, return_dict=True):
        i = sched.step_index if sched.step_index is not None else None
        state = generator.get_state() if generator is not None else None
        out = step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        prev, den = (out.prev_sample, out.denoised) if return_dict else out
        calls.append(dict(t=int(timestep), i=sched.step_index - 1 if i is None else i, m=model_output.clone(),
                          x=sample.clone(), state=state, prev=prev.clone(), den=den.clone()))
        return out

    sched.step = wrapped
    return calls


def run(sched_cls, case):
    kw = dict(case)
    img2img = kw.pop("img2img", False)
    sched = sched_cls()
    pipe = tiny_pipeline(sched, img2img=img2img)
    calls = recording(sched)
    g = torch.Generator().manual_seed(0)
    if img2img:
        kw["image"] = init_image()
    image = pipe(prompt_embeds=prompt_embeds(), guidance_scale=8.0, generator=g, output_type="np", **kw).images
    return dict(image=image, calls=calls, timesteps=sched.timesteps.tolist(), state=g.get_state())


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_dropin_in_pipeline_matches_diffusers_scheduler(case):
    """The drop-in in LatentConsistencyModel(Img2Img)Pipeline: same schedule, UNet timesteps and noise draws as
    diffusers' scheduler, every step within the reference bounds, and the same image up to rounding."""
    ours, theirs = run(LCMScheduler, CASES[case]), run(diffusers.LCMScheduler, CASES[case])
    assert ours["timesteps"] == theirs["timesteps"]
    assert [c["t"] for c in ours["calls"]] == [c["t"] for c in theirs["calls"]] == ours["timesteps"]
    assert torch.equal(ours["state"], theirs["state"])
    for a, b in zip(ours["calls"], theirs["calls"]):
        assert (a["state"] is None) == (b["state"] is None) and (a["state"] is None or torch.equal(a["state"],
                                                                                                  b["state"]))
    if not CASES[case].get("img2img"):      # the first step's inputs come from the same draw and the same UNet
        assert torch.equal(ours["calls"][0]["x"], theirs["calls"][0]["x"])
        assert torch.equal(ours["calls"][0]["m"], theirs["calls"][0]["m"])

    cfg, sched = LCMConfig(), np.array(ours["timesteps"])
    for c in ours["calls"]:
        last = c["i"] == len(sched) - 1
        z = None if last else torch.randn(c["x"].shape, generator=torch.Generator().set_state(c["state"]))
        want = ref.step(cfg, c["m"], c["t"], c["x"], schedule=sched, noise=z, step_index=c["i"], profile="strict")
        terms = ref.step_terms(cfg, c["m"], c["t"], c["x"], schedule=sched, noise=z, step_index=c["i"])
        bound_den, bound_prev = step_bounds(torch.float32)
        check_scaled(c["den"], want.denoised, terms.denoised, torch.float32, bound_den, f"{case}: denoised at {c['t']}")
        check_scaled(c["prev"], want.prev_sample, terms.prev_sample, torch.float32, bound_prev,
                     f"{case}: prev at {c['t']}")

    diff = float(np.abs(ours["image"] - theirs["image"]).max())
    assert ours["image"].shape == theirs["image"].shape == (1, 32, 32, 3)
    assert diff <= IMAGE_BUDGET, f"{case}: images differ by {diff:.3g} > {IMAGE_BUDGET:.3g}"


def test_image_budget_catches_noise_on_the_last_step():
    """Negative control for the image budget: a scheduler that re-noises the last step (diffusers' quirk 1 / the
    authors' original sampler) changes the 4-step image by far more than 0.5/255."""
    class NoisyLast(LCMScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            last = self.step_index is not None and self.step_index == len(self.timesteps) - 1
            prev, den = super().step(model_output, timestep, sample, generator=generator, return_dict=False)
            if last:
                prev = den = 0.9 * den + 0.4 * torch.randn(den.shape, generator=generator)
            return (prev, den) if not return_dict else diffusers.schedulers.scheduling_lcm.LCMSchedulerOutput(prev,
                                                                                                            den)

    good, bad = run(LCMScheduler, CASES["4 steps"]), run(NoisyLast, CASES["4 steps"])
    assert float(np.abs(good["image"] - bad["image"]).max()) > IMAGE_BUDGET
