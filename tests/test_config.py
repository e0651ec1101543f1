"""LCMConfig: diffusers' LCMScheduler fields and defaults, the three constructors, and validation."""

import dataclasses
import inspect
import json
import warnings

import diffusers
import numpy as np
import pytest

from lcm_ref import ConfigError, LCMConfig, LCMRefError, LCMRefWarning

# A real LCM scheduler_config.json as published with SD/SDXL LCM checkpoints: it carries keys of other schedulers.
REAL_CONFIG = {
    "_class_name": "LCMScheduler", "_diffusers_version": "0.22.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "original_inference_steps": 50, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0, "set_alpha_to_one": True, "skip_prk_steps": True, "steps_offset": 1,
    "thresholding": False, "timestep_scaling": 10.0, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
}


def _public(config):
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def test_fields_and_defaults_equal_diffusers():
    """LCMConfig() has exactly LCMScheduler's config keys and default values."""
    assert dataclasses.asdict(LCMConfig()) == _public(diffusers.LCMScheduler().config)


def test_field_order_follows_diffusers_signature():
    """Positional order matches LCMScheduler.__init__, so the two read alike."""
    params = list(inspect.signature(diffusers.LCMScheduler.__init__).parameters)[1:]
    assert [f.name for f in dataclasses.fields(LCMConfig)] == params


def test_to_dict_builds_the_same_diffusers_scheduler():
    """LCMScheduler(**cfg.to_dict()) round-trips every field, trained_betas included."""
    cfg = LCMConfig(num_train_timesteps=4, trained_betas=(0.1, 0.2, 0.3, 0.4), prediction_type="v_prediction",
                    timestep_scaling=0.5, steps_offset=1, set_alpha_to_one=False)
    back = LCMConfig.from_diffusers(diffusers.LCMScheduler(**cfg.to_dict()))
    assert back == cfg


def test_from_dict_real_config_warns_about_foreign_keys_only():
    """Unknown keys are named in one LCMRefWarning and ignored; `_`-prefixed keys are skipped silently."""
    with pytest.warns(LCMRefWarning) as record:
        cfg = LCMConfig.from_dict(REAL_CONFIG)
    assert len(record) == 1
    msg = str(record[0].message)
    for key in ("interpolation_type", "skip_prk_steps", "use_karras_sigmas"):
        assert key in msg
    assert "_class_name" not in msg and "_diffusers_version" not in msg
    assert cfg == LCMConfig(steps_offset=1)


def test_underscore_keys_are_silent():
    """A config with only known keys plus `_class_name` / `_diffusers_version` raises no warning at all."""
    d = dict(_public(diffusers.LCMScheduler().config), _class_name="LCMScheduler", _diffusers_version="0.26.3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LCMConfig.from_dict(d) == LCMConfig()


def test_from_json(tmp_path):
    """from_json reads a scheduler_config.json file like from_dict."""
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(REAL_CONFIG))
    with pytest.warns(LCMRefWarning):
        assert LCMConfig.from_json(path) == LCMConfig(steps_offset=1)


def test_from_diffusers_scheduler_and_config():
    """from_diffusers accepts a scheduler or its FrozenDict config (which carries `_use_default_values`)."""
    sched = diffusers.LCMScheduler(beta_schedule="linear", prediction_type="sample", rescale_betas_zero_snr=True)
    want = LCMConfig(beta_schedule="linear", prediction_type="sample", rescale_betas_zero_snr=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LCMConfig.from_diffusers(sched) == want
        assert LCMConfig.from_diffusers(sched.config) == want


def test_frozen_and_hashable():
    """Configs are immutable and hashable (tables are cached per config); replace() makes a changed copy."""
    cfg = LCMConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beta_start = 0.001
    assert hash(cfg) == hash(LCMConfig()) and cfg.replace(beta_start=0.001) != cfg


def test_trained_betas_normalised_to_tuple():
    """trained_betas from a list or ndarray is stored as a tuple of floats (hashable, equal either way)."""
    a = LCMConfig(num_train_timesteps=3, trained_betas=np.array([0.1, 0.2, 0.3]))
    b = LCMConfig(num_train_timesteps=3, trained_betas=[0.1, 0.2, 0.3])
    assert a == b and a.trained_betas == (0.1, 0.2, 0.3) and hash(a) == hash(b)


def test_extra_beta_schedules_accepted():
    """beta_schedule also accepts the sigmoid / exp / laplace schedules of DDPM and Heun."""
    for name in ("sigmoid", "exp", "laplace"):
        assert LCMConfig(beta_schedule=name).beta_schedule == name


BAD = [
    ("num_train_timesteps", 0), ("num_train_timesteps", 1000.0), ("num_train_timesteps", True),
    ("num_train_timesteps", "1000"), ("original_inference_steps", 0), ("original_inference_steps", -5),
    ("steps_offset", -1), ("steps_offset", 0.5), ("beta_start", "0.1"), ("beta_start", -0.1),
    ("beta_end", float("nan")), ("beta_end", float("inf")), ("beta_end", -1.0), ("beta_schedule", "cosine"),
    ("prediction_type", "v"), ("timestep_spacing", "uniform"), ("clip_sample", 1), ("clip_sample", "yes"),
    ("clip_sample_range", 0.0), ("clip_sample_range", -1.0), ("set_alpha_to_one", None),
    ("thresholding", 0), ("dynamic_thresholding_ratio", 1.5), ("dynamic_thresholding_ratio", -0.1),
    ("sample_max_value", 0.0), ("timestep_scaling", -1.0), ("timestep_scaling", float("inf")),
    ("rescale_betas_zero_snr", "false"), ("trained_betas", "abc"), ("trained_betas", ()),
    ("trained_betas", (0.1, float("nan"))),
]


@pytest.mark.parametrize("name,value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_bad_value_raises_config_error_naming_it(name, value):
    """Each wrong type or out-of-range value raises ConfigError (a ValueError) whose message names the field.
    (A negative beta_start / beta_end is refused only for scaled_linear, whose √ diffusers cannot take; degenerate
    but usable values are accepted with a warning: tests/test_degenerate_config.py.)"""
    with pytest.raises(ConfigError, match=name) as info:
        LCMConfig(**{name: value})
    assert info.value.parameter == name
    assert isinstance(info.value, LCMRefError) and isinstance(info.value, ValueError)


def test_bad_value_in_from_dict_names_it():
    """Validation also runs through from_dict (a bad real config fails loudly, not later in a table)."""
    with pytest.raises(ConfigError, match="prediction_type"):
        LCMConfig.from_dict({"prediction_type": "noise"})
