"""Tiny random LCM pipelines for tests and notebooks: no weights downloaded, no tokenizer or text encoder.

``tiny_pipeline(scheduler)`` builds diffusers' ``LatentConsistencyModelPipeline`` (or the img2img one) around a
randomly initialised ``UNet2DConditionModel`` with ``time_cond_proj_dim`` (LCM's guidance embedding) and a tiny
``AutoencoderKL``; the caller passes ``prompt_embeds`` (``prompt_embeds(...)``) instead of a prompt. Everything is
seeded, so two builds with the same seed hold identical weights: swapping only the scheduler compares schedulers.
Sizes: latents 4×16×16, images 3×32×32; one UNet call takes about a millisecond on a CPU.
"""

from __future__ import annotations

import torch

__all__ = ["CROSS_ATTENTION_DIM", "TIME_COND_PROJ_DIM", "tiny_unet", "tiny_vae", "tiny_pipeline", "prompt_embeds",
           "init_image"]

CROSS_ATTENTION_DIM = 32
TIME_COND_PROJ_DIM = 32


def tiny_unet(seed: int = 0):
    """A two-level ``UNet2DConditionModel`` (4 → 8 channels, one cross-attention block each way) taking a guidance
    embedding of size ``TIME_COND_PROJ_DIM``; latents 4×16×16."""
    from diffusers import UNet2DConditionModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(4, 8),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=CROSS_ATTENTION_DIM, norm_num_groups=2, time_cond_proj_dim=TIME_COND_PROJ_DIM).eval()


def tiny_vae(seed: int = 0):
    """A two-level ``AutoencoderKL`` (images 3×32×32 ↔ latents 4×16×16)."""
    from diffusers import AutoencoderKL
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 8), norm_num_groups=2,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()


def tiny_pipeline(scheduler, *, img2img: bool = False, seed: int = 0, dtype=torch.float32, device="cpu"):
    """``LatentConsistencyModelPipeline`` (or ``…Img2ImgPipeline``) with the tiny UNet and VAE and ``scheduler``;
    no tokenizer, text encoder or safety checker (pass ``prompt_embeds``)."""
    from diffusers import LatentConsistencyModelImg2ImgPipeline, LatentConsistencyModelPipeline
    cls = LatentConsistencyModelImg2ImgPipeline if img2img else LatentConsistencyModelPipeline
    pipe = cls(vae=tiny_vae(seed), text_encoder=None, tokenizer=None, unet=tiny_unet(seed), scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device) != torch.device("cpu") or dtype != torch.float32:
        pipe = pipe.to(device=device, dtype=dtype)
    return pipe


def prompt_embeds(batch: int = 1, tokens: int = 4, seed: int = 0, dtype=torch.float32, device="cpu"):
    """Stand-in text embeddings, N(0, 1) of shape (batch, tokens, CROSS_ATTENTION_DIM)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, CROSS_ATTENTION_DIM, generator=g).to(device=device, dtype=dtype)


def init_image(batch: int = 1, seed: int = 0, dtype=torch.float32, device="cpu"):
    """An img2img input: a smooth random 3×32×32 image in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear").to(device=device, dtype=dtype)
