"""lcm_ref.testbed.ui_samplers (docs/design.md §9.4): the ComfyUI-style and A1111-style LCM samplers behave as the
two UIs are documented to (schedules, level offsets, knobs, dtypes), and conform, through
``adapters.k_diffusion``, gives them the verdicts that behaviour implies. Small example counts: seconds."""

import dataclasses

import numpy as np
import pytest
import torch

from lcm_ref import LCMConfig
from lcm_ref import reference as ref
from lcm_ref.errors import LCMRefError
from lcm_ref.oracle import OracleMismatch
from lcm_ref.oracle.adapters import KDIFFUSION_OWN_SCHEDULE_CONCERNS, diffusers_noise, k_diffusion
from lcm_ref.oracle import canonical_cases
from lcm_ref.oracle.conform import conform, replay
from lcm_ref.testbed import ui_samplers as U

#: diffusers' LCM-SD config (T = 1000, orig 50, scaling 10, epsilon)
SD = LCMConfig()
#: the ComfyUI-style sampler on an SD checkpoint (T = 1000; other T refused): where `simple` is exact
COMFYUI_SD_SIMPLE = U.comfyui_lcm("simple", num_train_timesteps=1000)


def judge(factory, concerns, **kw):
    """conform with a handful of examples (seconds) and ``min_judged=1``: these small runs assert what the judged
    cases show, not coverage."""
    return conform(factory, concerns=concerns, shrink=False, min_judged=1, **kw)


def told(ms, n, schedule):
    """The timesteps the model is told on ``schedule``'s n-step sigma list."""
    sig = schedule(ms, n)
    return ms.timestep(torch.tensor(sig[:-1], dtype=torch.float32)).tolist()


def sd_case(T=1000, n=4, dtype=torch.float32):
    """The canonical LCM-SD case (batch 1, 4×4×4 latents) with another T and n."""
    comment, case = canonical_cases(dtype)[0]
    assert comment.startswith("LCM-SD/SDXL")
    config = dict(case.config, num_train_timesteps=T) if T != 1000 else dict(case.config)
    return dataclasses.replace(case, config=config, request=dict(case.request, num_inference_steps=n))


def verdicts(report):
    return {c.concern: c.verdict for c in report.concerns}


# ---------------------------------------------------------------------------------------------------------------
# The documented schedules (values measured on the UIs themselves; exact integers)
# ---------------------------------------------------------------------------------------------------------------

def test_comfyui_simple_is_diffusers_for_every_n():
    """Protects: ComfyUI ``simple`` tells the model diffusers' timesteps for n = 1…50 at T = 1000."""
    ms = U.comfyui_model_sampling(SD)
    for n in range(1, 51):
        assert told(ms, n, U.simple_sigmas) == ref.set_timesteps(SD, n).timesteps.tolist(), n


def test_comfyui_sgm_uniform_schedule():
    """Protects: sgm_uniform's documented n = 5 schedule and the set of n where it differs from diffusers."""
    ms = U.comfyui_model_sampling(SD)
    assert told(ms, 5, U.sgm_uniform_sigmas) == [999, 799, 599, 419, 219]
    assert ref.set_timesteps(SD, 5).timesteps.tolist() == [999, 799, 599, 399, 199]
    differs = {n for n in range(1, 51)
               if told(ms, n, U.sgm_uniform_sigmas) != ref.set_timesteps(SD, n).timesteps.tolist()}
    documented = {5, 10, 13, 14, 15, *range(17, 24), *range(25, 33), *range(34, 48), 50}
    assert differs == documented


def test_sgm_uniform_noise_levels_are_interpolated():
    """Protects: the σ used is log-interpolated, off the level of the timestep the model is told — at n = 4 (where
    the timesteps equal diffusers') by −2.1, +3.4, +1.8 % (measured on ComfyUI, to 0.1 %) — and exact only for
    n = 1, 7, 49 (those whose linspace lands on levels: n divides 49)."""
    ms = U.comfyui_model_sampling(SD)
    sig = U.sgm_uniform_sigmas(ms, 4)[:-1]
    t = ms.timestep(torch.tensor(sig))
    assert t.tolist() == [999, 759, 499, 259]
    grid = ms.sigma(t.numpy().astype(np.float64))           # the level of the told timestep
    assert [round(100 * (s / g - 1), 1) for s, g in zip(sig, grid)] == [0.0, -2.1, 3.4, 1.8]
    exact = [n for n in range(1, 51)
             if np.array_equal(U.sgm_uniform_sigmas(ms, n)[:-1],
                               ms.sigma(np.array(told(ms, n, U.sgm_uniform_sigmas), dtype=np.float64)))]
    assert exact == [1, 7, 49]


def test_a1111_automatic_schedule():
    """Protects: A1111's Automatic schedule (n = 4 → 999 679 339 19) and its last step at t = 19 for every n ≥ 2."""
    ms = U.a1111_model_sampling(SD)
    assert told(ms, 4, U.a1111_automatic_sigmas) == [999, 679, 339, 19]
    assert told(ms, 1, U.a1111_automatic_sigmas) == [999]
    assert all(told(ms, n, U.a1111_automatic_sigmas)[-1] == 19 for n in range(2, 51))


@pytest.mark.parametrize("T", [950, 1000, 1001, 1037])
def test_levels_sit_T_mod_50_above_the_told_timestep(T):
    """Protects: the 50 levels are counted down from T−1 while the lookup assumes they start at k−1, so level j
    (at T−1−(49−j)k) is told jk+k−1: an offset of T−1−49k−(k−1) = T−50k = T mod 50 (0 for 950 and 1000, 1 for
    1001, 37 for 1037)."""
    ms = U.comfyui_model_sampling(SD.replace(num_train_timesteps=T))
    assert set(ms.level_timesteps - ms.told_timesteps) == {T % 50}
    assert ms.told_timesteps[-1] == 50 * (T // 50) - 1 and ms.level_timesteps[-1] == T - 1


def test_refusals_name_the_key():
    """Protects: what the UIs have no setting for is refused as NotImplementedError (conform: unsupported), naming
    the key and the value."""
    bad = {"timestep_scaling": 0.1, "original_inference_steps": 30, "prediction_type": "v_prediction",
           "clip_sample": True, "thresholding": True, "rescale_betas_zero_snr": True, "num_train_timesteps": 40}
    for key, value in bad.items():
        with pytest.raises(NotImplementedError, match=f"{key}={value!r}"):
            U.comfyui_model_sampling(SD.replace(**{key: value}))
    with pytest.raises(NotImplementedError, match="num_train_timesteps=1001"):
        U.a1111_model_sampling(SD.replace(num_train_timesteps=1001))
    U.comfyui_model_sampling(SD.replace(num_train_timesteps=1001, beta_schedule="linear"))   # accepted
    with pytest.raises(NotImplementedError, match="num_train_timesteps=1001"):
        COMFYUI_SD_SIMPLE(**SD.replace(num_train_timesteps=1001).to_dict())
    with pytest.raises(LCMRefError, match="num_train_timesteps=10"):
        U.comfyui_lcm("simple", num_train_timesteps=10)
    with pytest.raises(LCMRefError, match="schedule='karras'"):
        U.comfyui_lcm("karras")


def test_concerns():
    """Protects: the factories declare the concerns a UI sampler can be judged on (the CLI's default)."""
    assert U.UI_CONCERNS == ("config", "timesteps", "denoised", "prev_sample", "final_step", "noise", "dtype")
    for f in (U.comfyui_simple, U.comfyui_sgm_uniform, U.a1111_automatic):
        assert f.concerns == U.UI_CONCERNS
    assert set(U.UI_CONCERNS) < set(KDIFFUSION_OWN_SCHEDULE_CONCERNS)


# ---------------------------------------------------------------------------------------------------------------
# One step through the facade
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [U.comfyui_simple, U.a1111_automatic], ids=["comfyui", "a1111"])
def test_float16_latents_give_float32(factory):
    """Protects: float32 c_skip/c_out make float16 latents give float32 denoised and prev_sample."""
    sched = factory(**SD.to_dict())
    sched.set_timesteps(num_inference_steps=4)
    x = torch.ones(1, 4, dtype=torch.float16)
    out = sched.step(torch.zeros_like(x), sched.timesteps[0], x, generator=torch.Generator().manual_seed(0))
    assert out.denoised.dtype == out.prev_sample.dtype == torch.float32


def test_a1111_denoised_is_read_before_its_in_place_add():
    """Protects: the adapter copies denoised when the callback sees it. A1111 then adds σ_next·z in place on that
    tensor; the denoised reported must be the value before the add: prev·√(1 + σ_next²) − σ_next·z, the VE
    re-noising undone (float32: a few roundings of values of size ≲ 10, within 1e-4; the add itself is
    σ_next·z with σ_19 ≈ 0.08 and |z| ~ 1, orders of magnitude larger)."""
    sched = U.a1111_automatic(**SD.to_dict())
    sched.set_timesteps(num_inference_steps=2)                  # 999 → 19, both on levels
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    m = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    out = sched.step(m, sched.timesteps[0], x, generator=gen)
    z = diffusers_noise(m, torch.Generator().manual_seed(3))
    s_next = sched.sigmas[1]
    before_add = out.prev_sample.double() * np.sqrt(1 + s_next ** 2) - s_next * z.double()
    assert torch.allclose(out.denoised.double(), before_add, atol=1e-4)
    assert (out.denoised.double() - before_add - s_next * z.double()).abs().max() > 1e-2


def test_comfyui_without_wrap_model_names_the_hook():
    """Protects: ComfyUI's sampler handed the bare model callable raises AttributeError inside step, and the
    message says what to do (wrap_model)."""
    bare = k_diffusion(U.comfyui_sample_lcm, U.comfyui_model_sampling, sigmas=U.simple_sigmas)
    sched = bare(**SD.to_dict())
    sched.set_timesteps(num_inference_steps=4)
    with pytest.raises(AttributeError, match=r"inner_model.*wrap_model=.*comfyui_model"):
        sched.step(torch.zeros(1, 4), sched.timesteps[0], torch.ones(1, 4), generator=torch.Generator())


def test_conform_fails_comfyui_without_wrap_model():
    """Protects: a crash inside step is a failure (run FAIL), never 'unsupported'; its detail names the hook and
    ends its traceback at the sampler's own line."""
    bare = k_diffusion(U.comfyui_sample_lcm, U.comfyui_model_sampling, sigmas=U.simple_sigmas)
    rep = judge(bare, ["denoised", "prev_sample"], examples=0)
    assert verdicts(rep) == {"denoised": "fail", "prev_sample": "fail"} and rep.status == "FAIL"
    detail = rep["denoised"].detail
    assert "AttributeError" in detail and "wrap_model" in detail
    assert "in comfyui_sample_lcm: ms = model.inner_model.model_patcher" in detail


# ---------------------------------------------------------------------------------------------------------------
# Verdicts: ComfyUI-style
# ---------------------------------------------------------------------------------------------------------------

def test_conform_comfyui_simple_float32_passes():
    """Protects: ComfyUI simple at T = 1000 is diffusers' LCM in float32 (the VE c_skip is below one rounding at
    scaling 10): every applicable concern passes, on judged examples, inside the region it accepts."""
    f = COMFYUI_SD_SIMPLE
    rep = judge(f, f.concerns, examples=3)
    v = verdicts(rep)
    assert {"timestep_scaling", "original_inference_steps", "prediction_type", "clip_sample", "thresholding",
            "num_train_timesteps"} <= set(rep.region.refused)           # left out of the judged region, by name
    assert set(v.values()) == {"pass"}, str(rep)
    assert all(rep[c].judged > 0 for c in v)


def test_conform_comfyui_float16_fails_dtype_only():
    """Protects: float16 latents: values within the float16 budget, the float32 output fails dtype alone."""
    rep = judge(COMFYUI_SD_SIMPLE, ["timesteps", "denoised", "prev_sample", "final_step", "noise", "dtype"],
                dtype="float16", examples=2)
    assert verdicts(rep) == {"timesteps": "pass", "denoised": "pass", "prev_sample": "pass", "final_step": "pass",
                             "noise": "pass", "dtype": "fail"}
    assert "float32" in rep["dtype"].detail


@pytest.mark.parametrize("T", [1000, 950])
def test_comfyui_exact_where_T_is_a_multiple_of_50(T):
    """Protects: levels and told timesteps agree (T mod 50 = 0): denoised and prev_sample pass, judged."""
    for concern in ("timesteps", "denoised", "prev_sample"):
        res = replay(U.comfyui_simple, concern, sd_case(T=T, n=4))
        assert res.verdict == "pass" and res.values > 0


@pytest.mark.parametrize("T", [1001, 1037])
def test_comfyui_denoised_deviates_where_T_is_not_a_multiple_of_50(T):
    """Protects: the told schedule is diffusers' (timesteps pass), but every level sits T mod 50 steps above the
    timestep the model is told: denoised fails."""
    assert replay(U.comfyui_simple, "timesteps", sd_case(T=T, n=4)).verdict == "pass"
    with pytest.raises(OracleMismatch, match="denoised"):
        replay(U.comfyui_simple, "denoised", sd_case(T=T, n=4))


def test_conform_comfyui_simple_any_T_fails_denoised():
    """Protects: a conform run on ComfyUI simple with T from the config judges T that are not multiples of 50 and
    fails denoised there, naming the cause (the noise level is not the told timestep's)."""
    rep = judge(U.comfyui_simple, ["denoised"], examples=10)
    assert verdicts(rep) == {"denoised": "fail"}
    assert rep["denoised"].case["config"].get("num_train_timesteps", 1000) % 50 != 0
    assert rep["denoised"].likely_cause.startswith("the noise level used is not the level of the timestep")


def test_comfyui_sgm_uniform_n5_fails_timesteps():
    """Protects: the n = 5 case fails timesteps, showing the told schedule against diffusers'."""
    with pytest.raises(OracleMismatch, match=r"\[999, 799, 599, 419, 219\], want \[999, 799, 599, 399, 199\]"):
        replay(U.comfyui_sgm_uniform, "timesteps", sd_case(n=5))


def test_conform_comfyui_sgm_uniform_fails_timesteps():
    """Protects: a conform run on sgm_uniform fails timesteps, and shows the documented n = 5 case (the n-sweep of
    the default grid runs first, so the smallest failing n is the one shown, whatever hypothesis draws)."""
    rep = judge(U.comfyui_sgm_uniform, ["timesteps"], examples=10)
    assert verdicts(rep) == {"timesteps": "fail"}
    detail = rep["timesteps"].detail
    assert "set_timesteps(num_inference_steps=5)" in detail and "[999, 799, 599, 419, 219]" in detail, detail


def test_conform_comfyui_sgm_uniform_fails_on_its_noise_levels():
    """Protects: at n = 4 the told timesteps are diffusers' but the noise levels are 2–3 % off theirs: denoised and
    prev_sample fail, with evidence from an interpolated level (never from t = 999, where it is exact); the
    last step and the noise are right."""
    f = U.comfyui_sgm_uniform
    rep = judge(f, ["denoised", "prev_sample", "final_step", "noise"], examples=2)
    assert verdicts(rep) == {"denoised": "fail", "prev_sample": "fail", "final_step": "pass", "noise": "pass"}
    assert "t=999)" not in rep["denoised"].worst["where"]
    assert "-> 759" in rep["prev_sample"].worst["where"]        # re-noised to the −2.1 % level
    for c in ("denoised", "prev_sample"):
        assert rep[c].likely_cause.startswith("the noise level used is not the level of the timestep"), c


# ---------------------------------------------------------------------------------------------------------------
# Verdicts: A1111-style
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 8, 50])
def test_a1111_exact_where_every_level_is_on_the_grid(n):
    """Protects: the in-place add is no deviation: where linspace(999, 19, n) lands on levels (n − 1 divides 49),
    denoised and prev_sample pass on every step, judged."""
    for concern in ("denoised", "prev_sample"):
        res = replay(U.a1111_automatic, concern, sd_case(n=n))
        assert res.verdict == "pass" and res.values > 0


def test_conform_a1111_verdicts():
    """Protects: A1111 fails timesteps (n = 4: 999 679 339 19), and denoised / prev_sample only through its
    interpolated levels (evidence at t = 679 or 339, never at 999 or 19 where it is exact); final_step, noise and
    float32 dtype pass."""
    f = U.a1111_automatic
    rep = judge(f, f.concerns, examples=2)
    assert verdicts(rep) == {"config": "pass", "timesteps": "fail", "denoised": "fail", "prev_sample": "fail",
                             "final_step": "pass", "noise": "pass", "dtype": "pass"}
    assert "[999, 679, 339, 19]" in rep["timesteps"].detail
    where = rep["denoised"].worst["where"]
    assert "t=679)" in where or "t=339)" in where
    for c in ("denoised", "prev_sample"):
        assert rep[c].likely_cause.startswith("the noise level used is not the level of the timestep"), c


@pytest.mark.parametrize("schedule", ["sgm_uniform", "a1111"])
def test_told_timesteps_agree_with_the_float32_emulation_off_ties(schedule):
    """Protects: the subjects' selection agrees with lcm_ref.studies.behaviour's float32 emulation of the UIs (code
    written separately) for n = 1…50 at T = 1000, at every step whose position among the levels is not a
    half-way point (there float32 rounding decides; the subject takes the lower level)."""
    from lcm_ref.studies import behaviour as B
    ms = U.comfyui_model_sampling(SD)
    sigmas, emulated = {"sgm_uniform": (U.sgm_uniform_sigmas, B.comfyui_sgm_uniform_timesteps),
                        "a1111": (U.a1111_automatic_sigmas, B.a1111_timesteps)}[schedule]
    halfway = 0
    for n in range(1, 51):
        t = np.linspace(999, 19, n + 1)[:-1] if schedule == "sgm_uniform" else np.linspace(999, 19, n)
        pos = (t - 19) / 20
        off_tie = np.abs(pos - np.floor(pos) - 0.5) > 1e-6
        halfway += int((~off_tie).sum())
        mine, theirs = np.array(told(ms, n, sigmas)), np.array(emulated(SD, n))
        assert np.array_equal(mine[off_tie], theirs[off_tie]), n
    assert halfway > 0


def test_comfyui_T_offsets_in_float16():
    """Protects the float16 picture docs/design.md §9.4 quotes: one step of offset (T = 1001) stays inside the
    float16 budget at 0.91 of it (n = 4; 0.05 at T = 1000), while 37 steps (T = 1037) fail."""
    at_1001 = replay(U.comfyui_simple, "denoised", sd_case(T=1001, dtype=torch.float16), dtype="float16")
    at_1000 = replay(U.comfyui_simple, "denoised", sd_case(T=1000, dtype=torch.float16), dtype="float16")
    assert at_1001.verdict == at_1000.verdict == "pass"
    assert (round(at_1001.max_ratio, 2), round(at_1000.max_ratio, 2)) == (0.91, 0.05)
    with pytest.raises(OracleMismatch, match="denoised"):
        replay(U.comfyui_simple, "denoised", sd_case(T=1037, dtype=torch.float16), dtype="float16")
