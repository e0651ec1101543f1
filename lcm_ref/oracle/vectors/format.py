"""The golden-vector file format (docs/design.md §10): hex-float encoding, the config and request codec, the flag
vocabulary, each file's header, the JSON Schema, the text layout, and ``load``, which validates a file.

Nothing here runs the reference or an implementation: ``generator`` writes files in this format, ``verify`` reads
them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...config import LCMConfig
from ...errors import LCMRefError

__all__ = ["VECTOR_DIR", "SCHEMA", "FILES", "FORMAT_VERSION", "HEX", "NOTES", "VectorFileError", "hex_float",
           "hex_floats", "from_hex", "from_hex_array", "encode_config", "decode_config", "encode_request",
           "decode_request", "header", "notes_for", "schema", "to_text", "load", "arrays_of"]

VECTOR_DIR = Path(__file__).with_name("data")   #: the committed vector files, shipped with the package
SCHEMA = "lcm_vectors.schema.json"
FILES = ("timesteps.json", "tables.json", "steps.json", "forward.json")
FORMAT_VERSION = 1
FLOAT_FIELDS = ("beta_start", "beta_end", "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value",
                "timestep_scaling")
HEX = re.compile(r"^(-?0x[01](\.[0-9a-f]+)?p[+-][0-9]+|-?inf|nan)$")

#: The flag glossary: each flag names what a group (by its config) or a case probes, and the bug it catches.
NOTES = {
    "Linear": "beta_schedule 'linear', β = linspace(beta_start, beta_end, T): catches a wrong β table",
    "ScaledLinear": "beta_schedule 'scaled_linear' (Stable Diffusion's), β = linspace(√beta_start, √beta_end, T)²: "
                    "catches squaring the wrong quantity",
    "Cosine": "beta_schedule 'squaredcos_cap_v2', β from the cosine ā(t) and capped at 0.999 (reached at t = T−1): "
              "catches a missing cap or a wrong offset",
    "TrainedBetas": "trained_betas given explicitly (T = 100): catches a port that ignores them or recomputes β",
    "ZeroSNR": "rescale_betas_zero_snr, √ᾱ shifted and scaled so that ᾱ[T−1] = 0: catches a wrong rescale or a "
               "clamped ᾱ[T−1]",
    "Epsilon": "prediction_type 'epsilon', x0 = (x − √(1−ᾱ)·m)/√ᾱ",
    "VPrediction": "prediction_type 'v_prediction', x0 = √ᾱ·x − √(1−ᾱ)·m: catches a swapped sign or coefficient",
    "Sample": "prediction_type 'sample', x0 = m",
    "Clip": "clip_sample: x0 clamped to ±clip_sample_range before the boundary condition: catches clipping "
            "denoised instead, or not at all",
    "Threshold": "dynamic thresholding of x0 (per-sample quantile of |x0| with torch.quantile's linear "
                 "interpolation, clamped to [1, sample_max_value]): catches another quantile rule or axis",
    "TimestepScalingEdge": "timestep_scaling at an edge (0, 1e-3, 1e3), or c_skip and c_out at t = 0 or a small t: "
                           "catches overflow, division by zero and lost precision in the boundary scalings",
    "CustomTimesteps": "custom timesteps passed to set_timesteps: catches a port that re-selects them from the grid",
    "Strength": "img2img strength < 1, the origin grid cut to its lowest int(orig·strength) points: catches a "
                "wrong cut or rounding (int() truncates)",
    "Tie": "an integer schedule decided by a near-tie in float64 (floor of NumPy's linspace, int(orig·strength)): "
           "catches exact or float32 arithmetic where diffusers uses NumPy float64",
    "OrigNotDividingT": "original_inference_steps does not divide num_train_timesteps, stride k = T // orig: "
                        "catches a rounded or fractional stride",
    "FirstStep": "the first step of a run",
    "LastStep": "the last step, prev_sample = denoised and no noise: catches a port that re-noises the final output",
    "PrevZero": "the step whose next timestep is 0, re-noised with ᾱ[0] (not final_alpha_cumprod): catches an "
                "off-by-one at the end of the schedule",
    "BeginIndex": "a run started mid-schedule with set_begin_index (img2img): catches a step index found by lookup",
    "NonFinite": "expected values include inf or nan (diffusers divides by ᾱ = 0); they compare exactly",
    "Error": "the request raises; 'error' names the exception class (StrictError: a ValueError naming "
             "'parameter'): catches a port that accepts it",
    "Strict": "profile 'strict' (docs/design.md §3): diffusers' results on valid input, a ValueError naming the "
              "parameter where diffusers mishandles the input",
    "Quirk1": "diffusers' quirk 1 (docs/design.md §6.Q1): custom timesteps with strength < 1 keep the untruncated "
              "num_inference_steps, so the last step re-noises",
    "Quirk2": "diffusers' quirk 2 (docs/design.md §6.Q2): negative custom timesteps wrap to ᾱ[T−1] and flip c_out; "
              "float ones are truncated",
    "Quirk3": "diffusers' quirk 3 (docs/design.md §6.Q3): zero-SNR with epsilon prediction divides by √ᾱ[T−1] = 0",
    "Quirk4": "diffusers' quirk 4 (docs/design.md §6.Q4): strength > 1 is not range-checked, timesteps reach T "
              "and beyond",
    "Quirk5": "diffusers' quirk 5 (docs/design.md §6.Q5): a step past the end re-noises at the last level",
    "QuirkError": "diffusers raises an accidental class (ZeroDivisionError for n = 0 or orig = 0, IndexError for "
                  "empty custom timesteps) where a ValueError is due; a strict port raises ValueError",
}

_HOLDS = {
    "timesteps.json": "This file holds TimestepsTest cases: a set_timesteps request (num_inference_steps, "
                      "original_inference_steps, timesteps, strength; null = not passed) under a 'profile' "
                      "('diffusers' or 'strict') gives 'expected' (the timesteps, and the num_inference_steps that "
                      "step uses to recognise the last step) or 'error'.",
    "tables.json": "This file holds TablesTest cases: at a probe timestep t, the tables β, ᾱ, √ᾱ, √(1−ᾱ) and the "
                   "boundary scalings c_skip, c_out; each group also gives final_alpha_cumprod (the ᾱ used after "
                   "the last timestep).",
    "steps.json": "This file holds StepTest groups, each a whole multistep run of its config and request (schedule "
                  "and num_inference_steps given): one case per step, with step_index, timestep, sample, "
                  "model_output and noise (null on the last step), gives denoised and prev_sample, with "
                  "terms_denoised and terms_prev_sample (Σ|terms| per element). Each step's sample is the previous "
                  "step's prev_sample rounded to float32.",
    "forward.json": "This file holds ForwardTest cases: add_noise (inputs original_samples, noise) or get_velocity "
                    "(inputs sample, noise), one timestep per row, gives 'expected', with 'terms' (Σ|terms| per "
                    "element).",
}

_COMPARE = {
    "timesteps.json": "Compare timesteps and num_inference_steps exactly. An 'error' case matches by class (a "
                      "subclass is fine); StrictError means any ValueError whose message names 'parameter'. A port "
                      "of one profile skips the other profile's cases.",
    "tables.json": "The values are within 1 ulp of exact: a float64 port with correctly rounded tables reproduces "
                   "them bit for bit; one with float32 tables compares within its budget (docs/design.md §8).",
    "steps.json": "Compare each element by the scaled error |got − want| / (eps(dtype)·terms) with the given terms: "
                  "the reference is within 4 eps64·terms of exact; 'lcm-ref vectors check --impl' applies lcm_ref's "
                  "budget for the dtype (docs/design.md §8).",
    "forward.json": "Compare each element by the scaled error |got − want| / (eps(dtype)·terms) with the given "
                    "terms; 'lcm-ref vectors check --impl' applies lcm_ref's budget for the dtype (docs/design.md §8).",
}


_ARRAYS = (" Arrays are flat in row-major (C) order, shaped by the group's 'shape'. Inputs are float32-exact: a "
           "float32 port loads them without rounding.")


def header(name: str) -> list:
    """The 'header' of vector file ``name``: what it holds, how its values are encoded and compared, what its flags
    mean, and where the format is defined."""
    return [
        "Golden vectors for diffusers' LCMScheduler (Luo et al. 2023, arXiv 2310.04378, Algorithm 3), generated by "
        "lcm_ref.reference: exact real arithmetic on diffusers' algorithm, rounded once to float64 "
        "(docs/design.md §2).",
        _HOLDS[name],
        "Every float, in configs too, is a float.hex string ('0x1.b4e81b4e81b4fp-11', 'inf', '-inf', 'nan'): an "
        "exact round trip with any hex-float parser (C strtod, Java Double.parseDouble, Python float.fromhex)."
        + (_ARRAYS if name in ("steps.json", "forward.json") else ""),
        _COMPARE[name],
        "'flags' on a group (from its config) or a case name what it probes; 'notes' gives the meaning of each "
        "flag used in this file. Cases flagged Quirk* reproduce diffusers' handling of inputs it mishandles "
        "(docs/design.md §6): a strict port skips them or expects a ValueError.",
        f"Format: docs/design.md §10 of lcm_ref; JSON Schema: {SCHEMA}.",
    ]


def notes_for(used) -> dict:
    """The glossary entries of the flags in ``used``, in glossary order."""
    return {k: v for k, v in NOTES.items() if k in set(used)}


class VectorFileError(LCMRefError):
    """A vector file that cannot be read: bad JSON, a schema violation or a malformed value."""

    def __init__(self, path, where, what, kind="corrupt vector file"):
        self.path, self.where, self.what = str(path), where, what
        self.parameter, self.value, self.allowed = "vector file", str(path), "a readable file matching the schema"
        ValueError.__init__(self, f"{path}: {kind}: {what}" + (f" (at {where})" if where else ""))


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------

def hex_float(x) -> str:
    """``x`` as a float.hex string."""
    return float(x).hex()


def hex_floats(a) -> list:
    """Every element of ``a``, flattened in row-major order, as float.hex strings."""
    return [float(v).hex() for v in np.asarray(a, dtype=np.float64).ravel()]


def from_hex(s, where="") -> float:
    """The float of a float.hex string; ValueError for anything else."""
    if not isinstance(s, str) or not HEX.match(s):
        raise ValueError(f"{s!r} is not a float.hex string{where}")
    return float.fromhex(s)


def from_hex_array(lst, shape=None) -> np.ndarray:
    """A float64 array from a list of float.hex strings, reshaped to ``shape`` if given."""
    a = np.array([from_hex(s) for s in lst], dtype=np.float64)
    return a.reshape(shape) if shape is not None else a


def encode_config(cfg: LCMConfig) -> dict:
    """The config as it appears in a file: its fields, floats as hex strings."""
    d = cfg.to_dict()
    for k in FLOAT_FIELDS:
        d[k] = hex_float(d[k])
    if d["trained_betas"] is not None:
        d["trained_betas"] = hex_floats(d["trained_betas"])
    return d


def decode_config(d: dict) -> LCMConfig:
    """The ``LCMConfig`` of a file's config (LCMRefError if it is invalid)."""
    d = dict(d)
    for k in FLOAT_FIELDS:
        if k in d:
            d[k] = from_hex(d[k])
    if d.get("trained_betas") is not None:
        d["trained_betas"] = tuple(from_hex_array(d["trained_betas"]))
    return LCMConfig(**d)


def encode_request(req: dict) -> dict:
    """A set_timesteps request as it appears in a file: all four arguments, null where not passed."""
    out = {}
    for k in ("num_inference_steps", "original_inference_steps", "timesteps", "strength"):
        v = req.get(k)
        if k == "strength" and v is not None:
            v = hex_float(v)
        if k == "timesteps" and v is not None:
            v = [t if isinstance(t, int) else hex_float(t) for t in v]
        out[k] = v
    return out


def decode_request(d: dict) -> dict:
    """A file's request as set_timesteps arguments (None where not passed)."""
    out = dict(d)
    if out.get("strength") is not None:
        out["strength"] = from_hex(out["strength"])
    if out.get("timesteps") is not None:
        out["timesteps"] = [t if isinstance(t, int) else from_hex(t) for t in out["timesteps"]]
    return out


def to_text(obj, indent=0) -> str:
    """JSON with one key per line and arrays of scalars on one line (compact, diffable, deterministic)."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {to_text(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(f"{pad} {to_text(v, indent + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------------------

def schema() -> dict:
    """The JSON Schema (2020-12) every vector file satisfies."""
    hexf = {"type": "string", "pattern": HEX.pattern}
    hexes = {"type": "array", "items": {"$ref": "#/$defs/hex"}}
    flags = {"type": "array", "items": {"type": "string", "enum": sorted(NOTES)}}
    int_or_none = {"type": ["integer", "null"]}
    config = {"type": "object", "required": ["num_train_timesteps", "beta_schedule", "prediction_type"],
              "properties": {"num_train_timesteps": {"type": "integer", "minimum": 1},
                             "original_inference_steps": {"type": "integer", "minimum": 1},
                             "trained_betas": {"oneOf": [{"type": "null"}, hexes]},
                             **{k: {"$ref": "#/$defs/hex"} for k in FLOAT_FIELDS}}}
    request = {"type": "object", "required": ["num_inference_steps", "original_inference_steps", "timesteps",
                                              "strength"],
               "properties": {"num_inference_steps": int_or_none, "original_inference_steps": int_or_none,
                              "timesteps": {"oneOf": [{"type": "null"}, {"type": "array", "items": {
                                  "oneOf": [{"type": "integer"}, {"$ref": "#/$defs/hex"}]}}]},
                              "strength": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/hex"}]}},
               "additionalProperties": False}
    base_test = {"tcId": {"type": "integer", "minimum": 1}, "comment": {"type": "string"}, "flags": flags}

    def test(props, required):
        return {"type": "object", "required": ["tcId", "comment", "flags"] + required,
                "properties": {**base_test, **props}}

    timesteps_test = test({"profile": {"enum": ["diffusers", "strict"]}, "request": {"$ref": "#/$defs/request"},
                           "result": {"enum": ["valid", "error"]},
                           "expected": {"type": "object", "required": ["timesteps", "num_inference_steps"],
                                        "properties": {"timesteps": {"type": "array", "items": {"type": "integer"}},
                                                       "num_inference_steps": {"type": "integer"}}},
                           "error": {"type": "string"}, "parameter": {"type": "string"}},
                          ["profile", "request", "result"])
    timesteps_test["oneOf"] = [{"properties": {"result": {"const": "valid"}}, "required": ["expected"]},
                               {"properties": {"result": {"const": "error"}}, "required": ["error"]}]
    table_names = ["betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "c_skip",
                   "c_out"]
    tables_test = test({"t": {"type": "integer"}, "expected": {
        "type": "object", "required": table_names, "properties": {k: {"$ref": "#/$defs/hex"} for k in table_names}}},
        ["t", "expected"])
    step_names = ["denoised", "prev_sample", "terms_denoised", "terms_prev_sample"]
    step_test = test({"step_index": {"type": "integer", "minimum": 0}, "timestep": {"type": "integer"},
                      "sample": hexes, "model_output": hexes, "noise": {"oneOf": [{"type": "null"}, hexes]},
                      "expected": {"type": "object", "required": step_names,
                                   "properties": {k: hexes for k in step_names}}},
                     ["step_index", "timestep", "sample", "model_output", "noise", "expected"])
    forward_test = test({"function": {"enum": ["add_noise", "get_velocity"]},
                         "timesteps": {"type": "array", "items": {"type": "integer"}},
                         "inputs": {"type": "object", "additionalProperties": hexes},
                         "expected": hexes, "terms": hexes},
                        ["function", "timesteps", "inputs", "expected", "terms"])

    def group(kind, test_schema, props, required):
        return {"type": "object", "required": ["type", "config", "flags", "tests"] + required,
                "properties": {"type": {"const": kind}, "config": {"$ref": "#/$defs/config"}, "flags": flags,
                               "tests": {"type": "array", "items": test_schema}, **props}}

    shape = {"type": "array", "items": {"type": "integer", "minimum": 1}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://lcm-ref/vectors/lcm_vectors.schema.json",
        "title": "lcm_ref golden vectors for the LCM multistep scheduler",
        "description": "float.hex strings for every float; arrays flat in row-major order; each file's 'header' "
                       "says what it holds and how to compare, its 'notes' what each flag means; the format is "
                       "docs/design.md §10 of lcm_ref.",
        "type": "object",
        "required": ["algorithm", "schema", "formatVersion", "generatorVersion", "numberOfTests", "header", "notes",
                     "testGroups"],
        "properties": {
            "algorithm": {"const": "LCMScheduler"}, "schema": {"const": SCHEMA},
            "formatVersion": {"const": FORMAT_VERSION}, "generatorVersion": {"type": "string"},
            "numberOfTests": {"type": "integer", "minimum": 0},
            "header": {"type": "array", "items": {"type": "string"}},
            "notes": {"type": "object", "additionalProperties": {"type": "string"}},
            "testGroups": {"type": "array", "items": {"oneOf": [
                group("TimestepsTest", timesteps_test, {}, []),
                group("TablesTest", tables_test, {"final_alpha_cumprod": {"$ref": "#/$defs/hex"}},
                      ["final_alpha_cumprod"]),
                group("StepTest", step_test, {"comment": {"type": "string"}, "request": {"$ref": "#/$defs/request"},
                                              "schedule": {"type": "array", "items": {"type": "integer"}},
                                              "num_inference_steps": {"type": "integer"}, "shape": shape},
                      ["request", "schedule", "num_inference_steps", "shape"]),
                group("ForwardTest", forward_test, {"shape": shape}, ["shape"]),
            ]}},
        },
        "$defs": {"hex": hexf, "config": config, "request": request},
    }


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

def arrays_of(kind, t) -> dict:
    """{name: list of hex strings} of the arrays of a StepTest or ForwardTest case (a step's noise may be None)."""
    if kind == "StepTest":
        return {"sample": t["sample"], "model_output": t["model_output"], "noise": t["noise"],
                **{k: v for k, v in t["expected"].items()}}
    return {**t["inputs"], "expected": t["expected"], "terms": t["terms"]}


def _short(err):
    msg = err.message
    return msg if len(msg) < 200 else msg[:200] + "..."


def load(path) -> dict:
    """Read and validate one vector file; ``VectorFileError`` names what is wrong and where."""
    import jsonschema

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VectorFileError(path, "", str(e), kind="cannot read vector file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise VectorFileError(path, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}") from None
    schema_path = path.with_name(SCHEMA)
    rules = json.loads(schema_path.read_text(encoding="utf-8")) if schema_path.exists() else schema()
    errors = sorted(jsonschema.Draft202012Validator(rules).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        raise VectorFileError(path, where, f"schema violation: {_short(e)}")
    ids = [t["tcId"] for g in doc["testGroups"] for t in g["tests"]]
    if len(ids) != doc["numberOfTests"]:
        raise VectorFileError(path, "numberOfTests", f"says {doc['numberOfTests']}, the file has {len(ids)} tests")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise VectorFileError(path, f"tcId {dup[0]}", "duplicate tcId")
    for gi, g in enumerate(doc["testGroups"]):
        try:
            decode_config(g["config"])
        except LCMRefError as e:
            raise VectorFileError(path, f"testGroups/{gi}/config", f"invalid config: {e}") from None
        if g["type"] in ("StepTest", "ForwardTest"):
            n = int(np.prod(g["shape"]))
            for t in g["tests"]:
                for name, arr in arrays_of(g["type"], t).items():
                    if arr is not None and len(arr) != n:
                        raise VectorFileError(path, f"tcId {t['tcId']}/{name}",
                                              f"{len(arr)} values for shape {g['shape']} ({n} values)")
    return doc
