"""A second testbed with learned networks on real data: the paper's pipeline, end to end, at the size of 8×8 digits
(docs/design.md §11.1).

- ``data``: scikit-learn's bundled handwritten digits (1,797 images 8×8, 10 classes, no download) in [−1, 1], with
  a fixed stratified split into ``train`` (the networks learn from it) and ``test`` (held out: the metrics' real
  reference);
- ``classifier``: a small CNN trained on ``train``; its penultimate features give the Fréchet distance (``fd``, the
  FID analog) and its probability of the requested class the class score (the CLIP-score analog), with bootstrap
  intervals;
- ``teacher``: a class-conditional ε-prediction ``diffusers.UNet2DConditionModel`` on Stable Diffusion's noise
  schedule, trained with ``DDPMScheduler.add_noise`` and 10 % label dropout (classifier-free guidance);
- ``lcd``: latent consistency distillation (the paper's Algorithm 1) of a student initialised from the teacher and
  conditioned on ω through LCM's guidance embedding (``time_cond_proj_dim``), with the DDIM, DPM-Solver and
  DPM-Solver++ teachers as one augmented-PF-ODE step;
- ``sampling``: LCM sampling through ``lcm_ref.torch_impl.LCMScheduler`` in a diffusers-style loop, and the
  teacher's baselines with diffusers' ``DDIMScheduler`` and ``DPMSolverMultistepScheduler``;
- ``checkpoint``: safetensors weights with a JSON record (the command and seed that made them) beside them; the
  committed ones live in ``weights/``, the curves of every training run in ``runs/``;
- ``models``: ``load(name)`` (also ``lcm_ref.testbed.digits.load``): a committed network by name ("teacher",
  "student" the main student, …) as the diffusers ``UNet2DConditionModel`` with its record (noise schedule,
  guidance convention, null class, ``time_cond_proj_dim``, the guidance-embedding recipe, role).
"""

from .models import load  # noqa: E402

__all__ = ["load"]
