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
           "hex_floats", "hex_short", "from_hex", "from_hex_array", "TABLE_NAMES", "STEP_TIERS", "TABLE_TIERS",
           "ERROR_CATEGORIES", "RULE", "error_category", "passes", "encode_config", "decode_config", "encode_request",
           "decode_request", "header", "notes_for", "schema", "to_text", "load", "arrays_of"]

VECTOR_DIR = Path(__file__).with_name("data")   #: the committed vector files, shipped with the package
SCHEMA = "lcm_vectors.schema.json"
FILES = ("timesteps.json", "tables.json", "steps.json", "forward.json")
FORMAT_VERSION = 2
FLOAT_FIELDS = ("beta_start", "beta_end", "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value",
                "timestep_scaling")
TABLE_NAMES = ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "c_skip", "c_out")
#: the budget tiers of steps.json and forward.json: name -> (dtype the port computes in, table precision). "float64",
#: "float32", "float16" are the oracle's default budgets for that dtype (float32 tables allowed, as diffusers keeps
#: them); "float32_tables64" is float32 arithmetic on correctly rounded float64 tables (conform --tables float64), the
#: tighter tier for a port that claims it. float16 is offered only where its rule is finite (budgets.py).
STEP_TIERS = {"float64": ("float64", "float32"), "float32": ("float32", "float32"), "float16": ("float16", "float32"),
              "float32_tables64": ("float32", "float64")}
#: the budget tiers of tables.json: the table precision a port holds ("float32": diffusers' float32 tables;
#: "float64": correctly rounded float64 tables), also the dtype the tables are compared in
TABLE_TIERS = ("float32", "float64")
#: language-neutral error categories: invalid_argument (the request or config is refused), out_of_range (an index or
#: timestep beyond the schedule), internal (anything else a port reports)
ERROR_CATEGORIES = ("invalid_argument", "out_of_range", "internal")
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
    "Error": "the request must be refused: 'error' gives the language-neutral category (invalid_argument) and "
             "diffusers' Python class as a hint (StrictError: a ValueError naming 'parameter'): catches a port that "
             "accepts it",
    "Float32Grid": "a timestep selection decided by a tie, i·L/n an integer, that float32 arithmetic decides the "
                   "other way (step = fl32(L/n), index fl32(i·step)): catches a port that selects in float32 where "
                   "diffusers uses NumPy float64",
    "Float32Strength": "a strength whose grid length int(orig·strength) differs when the product is taken in float32 "
                       "(50 x 0.58f = 29, diffusers 28): catches a float32 strength product",
    "PerCallOriginalSteps": "original_inference_steps passed to set_timesteps for this call (the request's "
                            "'original_inference_steps'; the config's is the default): a port without the per-call "
                            "argument reports the case unsupported; config-level cases cover the same grids",
    "TwoCalls": "'prior_requests': set_timesteps called on the same scheduler before the request: catches a port "
                "that appends to or keeps state from the earlier schedule",
    "Strict": "profile 'strict' (docs/design.md §3): diffusers' results on valid input, a ValueError naming the "
              "parameter where diffusers mishandles the input",
    "Quirk1": "diffusers' quirk 1 (docs/design.md §6.Q1): custom timesteps with strength < 1 keep the untruncated "
              "num_inference_steps, so the last step re-noises",
    "Quirk2": "diffusers' quirk 2 (docs/design.md §6.Q2): negative custom timesteps wrap to ᾱ[T−1] and flip c_out; "
              "float ones are truncated",
    "Quirk4": "diffusers' quirk 4 (docs/design.md §6.Q4): strength > 1 is not range-checked, timesteps reach T "
              "and beyond",
    "Quirk5": "diffusers' quirk 5 (docs/design.md §6.Q5): a step past the end re-noises at the last level",
    "QuirkError": "diffusers raises an accidental class (ZeroDivisionError for n = 0 or orig = 0, IndexError for "
                  "empty custom timesteps) where a ValueError is due; a strict port raises ValueError",
}

_HOLDS = {
    "timesteps.json": "This file holds TimestepsTest cases: the group's 'config' builds the scheduler; a case's "
                      "'request' is one set_timesteps call (num_inference_steps, original_inference_steps, timesteps, "
                      "strength; null = not passed; a non-null original_inference_steps is the per-call argument, "
                      "flagged PerCallOriginalSteps), made after the calls in 'prior_requests' (if any) on the same "
                      "scheduler, under a 'profile' ('diffusers' or 'strict'); it gives 'expected' (the timesteps, "
                      "and the num_inference_steps that step uses to recognise the last step) or 'error'.",
    "tables.json": "This file holds TablesTest cases: at a probe timestep t, the tables β, ᾱ, √ᾱ, √(1−ᾱ) and the "
                   "boundary scalings c_skip, c_out; each group also gives final_alpha_cumprod (the ᾱ used after "
                   "the last timestep).",
    "steps.json": "This file holds StepTest groups, each a whole multistep run of its config and request (after "
                  "'prior_requests', if any; schedule and num_inference_steps given): one case per step, with "
                  "step_index, timestep, sample, model_output and noise (null on the last step), gives denoised and "
                  "prev_sample, with terms_denoised and terms_prev_sample (Σ|terms| per element, for scaled errors). "
                  "Each case stands alone: build the scheduler, make the requests, start at step_index "
                  "(set_begin_index), step once with the given noise. Each step's sample is the previous step's "
                  "prev_sample rounded to float32.",
    "forward.json": "This file holds ForwardTest cases: add_noise (inputs original_samples, noise) or get_velocity "
                    "(inputs sample, noise), one timestep per row, gives 'expected', with 'terms' (Σ|terms| per "
                    "element).",
}

#: the budget rule every float expected value is judged by, in every file (docs/design.md §10)
RULE = ("Floats: a value passes when its budget is inf, or got == want (NaN matches NaN, inf matches the same inf), "
        "or |got − want| ≤ budget, evaluated in float64; nothing else passes (a NaN or an infinity against a finite "
        "want fails). Budgets are absolute, per element, from lcm_ref.oracle.budget (docs/design.md §8): for the "
        "values of the tier's dtype this rule gives the verdict of lcm-ref's oracle (lcm-ref vectors judge), except that "
        "where want ± budget lie in binades of different spacing it admits one more value next to the narrow end "
        "(docs/design.md §10.1).")

_COMPARE = {
    "timesteps.json": "Compare timesteps and num_inference_steps exactly. An 'error' case passes when the port refuses "
                      "the request with an error of 'error.category' (invalid_argument: the request or config is "
                      "not allowed); 'error.python' is diffusers' class, a hint; Python ports match it (a subclass is "
                      "fine), and StrictError means any ValueError whose message names 'error.parameter'. A port of "
                      "one profile skips the other profile's cases.",
    "tables.json": "'budget' gives per table and tier the budget: tier 'float32' for a port with float32 tables as "
                   "diffusers builds them, 'float64' for correctly rounded float64 tables; final_alpha_cumprod has "
                   "'final_alpha_cumprod_budget'.",
    "steps.json": "'budget' gives, per tier, the budgets of denoised and prev_sample. Tiers: 'float64', 'float32', "
                  "'float16' (the dtype the port computes in, with float32 tables allowed as diffusers keeps them; "
                  "float16 only where the float16 rule is finite) and 'float32_tables64' (float32 arithmetic on "
                  "correctly rounded float64 tables: the tighter tier for a port that claims it).",
    "forward.json": "'budget' gives, per tier, the budgets of 'expected' (tiers as in steps.json).",
}


_ARRAYS = (" Arrays are flat in row-major (C) order, shaped by the group's 'shape'. Inputs are float32-exact: a "
           "float32 port loads them without rounding.")


def header(name: str, extra=()) -> list:
    """The 'header' of vector file ``name``: what it holds, how its values are encoded and compared, what its flags
    and concerns mean, and where the format is defined; ``extra``: lines the generator derives (budget widths)."""
    return [
        "Golden vectors for diffusers' LCMScheduler (Luo et al. 2023, arXiv 2310.04378, Algorithm 3), generated by "
        "lcm_ref.reference: exact real arithmetic on diffusers' algorithm, rounded once to float64 "
        "(docs/design.md §2).",
        _HOLDS[name],
        "Every float, in configs too, is a float.hex string ('0x1.b4e81b4e81b4fp-11', 'inf', '-inf', 'nan'): an "
        "exact round trip with any hex-float parser (C strtod, Java Double.parseDouble, Python float.fromhex)."
        + (_ARRAYS if name in ("steps.json", "forward.json") else ""),
        _COMPARE[name],
        *( [RULE] if name != "timesteps.json" else []),
        *extra,
        "'concerns' on a case name the conformance concerns (docs/design.md §9.2) its outputs are judged under, in "
        "the order of its expected values. 'flags' on a group (from its config) or a case name what it probes; "
        "'notes' gives the meaning of each flag used in this file. Cases flagged Quirk* reproduce diffusers' "
        "handling of inputs it mishandles (docs/design.md §6): a strict port skips them or expects a ValueError. "
        "A port that lacks what a case needs reports it unsupported (lcm-ref vectors judge): it is not a pass.",
        f"Format: docs/design.md §10 of lcm_ref; JSON Schema: {SCHEMA}.",
    ]


def error_category(exc) -> str:
    """The category of an exception the reference raises at set_timesteps: every such error refuses the request
    (ValueError; diffusers' accidental ZeroDivisionError and IndexError for n = 0, orig = 0 and empty custom
    timesteps included), so invalid_argument."""
    return "invalid_argument"


def passes(got, want, budget):
    """The vectors' rule (``RULE``), elementwise: budget inf, or got == want (NaN matches NaN), or
    |got − want| ≤ budget in float64."""
    g, w, b = (np.asarray(v, dtype=np.float64) for v in (got, want, budget))
    with np.errstate(invalid="ignore", over="ignore"):
        return (b == np.inf) | (g == w) | (np.isnan(g) & np.isnan(w)) | (np.abs(g - w) <= b)


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


def hex_short(x) -> str:
    """``x`` as the shortest float.hex string with the same value (trailing zero hex digits dropped: "0x1.4p-17");
    used for the budgets, which are chosen short."""
    h = float(x).hex()
    if "p" not in h:
        return h
    mant, exp = h.split("p")
    return (mant.rstrip("0").rstrip(".") if "." in mant else mant) + "p" + exp


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
    from ..conform import CONCERNS

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
               "additionalProperties": False,
               "properties": {"num_inference_steps": int_or_none, "original_inference_steps": int_or_none,
                              "timesteps": {"oneOf": [{"type": "null"}, {"type": "array", "items": {
                                  "oneOf": [{"type": "integer"}, {"$ref": "#/$defs/hex"}]}}]},
                              "strength": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/hex"}]}}}
    prior = {"type": "array", "items": {"$ref": "#/$defs/request"}, "minItems": 1}
    concerns = {"type": "array", "minItems": 1, "items": {"enum": list(CONCERNS)}}
    base_test = {"tcId": {"type": "integer", "minimum": 1}, "comment": {"type": "string"}, "flags": flags,
                 "concerns": concerns}

    def test(props, required):
        return {"type": "object", "required": ["tcId", "comment", "flags", "concerns"] + required,
                "properties": {**base_test, **props}}

    def tiers(names, value):
        return {"type": "object", "minProperties": 1, "additionalProperties": False,
                "properties": {k: value for k in names}}

    error = {"type": "object", "required": ["category", "python"], "additionalProperties": False,
             "properties": {"category": {"enum": list(ERROR_CATEGORIES)}, "python": {"type": "string"},
                            "parameter": {"type": "string"}}}
    timesteps_test = test({"profile": {"enum": ["diffusers", "strict"]}, "request": {"$ref": "#/$defs/request"},
                           "prior_requests": prior, "result": {"enum": ["valid", "error"]},
                           "expected": {"type": "object", "required": ["timesteps", "num_inference_steps"],
                                        "properties": {"timesteps": {"type": "array", "items": {"type": "integer"}},
                                                       "num_inference_steps": {"type": "integer"}}},
                           "error": error},
                          ["profile", "request", "result"])
    timesteps_test["oneOf"] = [{"properties": {"result": {"const": "valid"}}, "required": ["expected"]},
                               {"properties": {"result": {"const": "error"}}, "required": ["error"]}]
    table_values = {"type": "object", "required": list(TABLE_NAMES), "additionalProperties": False,
                    "properties": {k: {"$ref": "#/$defs/hex"} for k in TABLE_NAMES}}
    tables_test = test({"t": {"type": "integer"}, "expected": table_values,
                        "budget": tiers(TABLE_TIERS, table_values)}, ["t", "expected", "budget"])
    step_names = ["denoised", "prev_sample", "terms_denoised", "terms_prev_sample"]
    step_budget = {"type": "object", "required": ["denoised", "prev_sample"], "additionalProperties": False,
                   "properties": {"denoised": hexes, "prev_sample": hexes}}
    step_test = test({"step_index": {"type": "integer", "minimum": 0}, "timestep": {"type": "integer"},
                      "sample": hexes, "model_output": hexes, "noise": {"oneOf": [{"type": "null"}, hexes]},
                      "expected": {"type": "object", "required": step_names,
                                   "properties": {k: hexes for k in step_names}},
                      "budget": tiers(STEP_TIERS, step_budget)},
                     ["step_index", "timestep", "sample", "model_output", "noise", "expected", "budget"])
    forward_test = test({"function": {"enum": ["add_noise", "get_velocity"]},
                         "timesteps": {"type": "array", "items": {"type": "integer"}},
                         "inputs": {"type": "object", "additionalProperties": hexes},
                         "expected": hexes, "terms": hexes, "budget": tiers(STEP_TIERS, hexes)},
                        ["function", "timesteps", "inputs", "expected", "terms", "budget"])

    def group(kind, test_schema, props, required):
        return {"type": "object", "required": ["type", "config", "flags", "tests"] + required,
                "properties": {"type": {"const": kind}, "config": {"$ref": "#/$defs/config"}, "flags": flags,
                               "tests": {"type": "array", "items": test_schema}, **props}}

    shape = {"type": "array", "items": {"type": "integer", "minimum": 1}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://lcm-ref/vectors/lcm_vectors.schema.json",
        "title": "lcm_ref golden vectors for the LCM multistep scheduler",
        "description": "float.hex strings for every float; arrays flat in row-major order; every float expected "
                       "value has a budget per tier (pass: budget inf, or got == want, or |got − want| ≤ budget); "
                       "each file's 'header' says what it holds and how to compare, its 'notes' what each flag "
                       "means; the format is docs/design.md §10 of lcm_ref.",
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
                group("TablesTest", tables_test, {"final_alpha_cumprod": {"$ref": "#/$defs/hex"},
                                                  "final_alpha_cumprod_budget": tiers(TABLE_TIERS,
                                                                                      {"$ref": "#/$defs/hex"})},
                      ["final_alpha_cumprod", "final_alpha_cumprod_budget"]),
                group("StepTest", step_test, {"comment": {"type": "string"}, "request": {"$ref": "#/$defs/request"},
                                              "prior_requests": prior,
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
                **{k: v for k, v in t["expected"].items()},
                **{f"budget/{tier}/{k}": v for tier, b in t["budget"].items() for k, v in b.items()}}
    return {**t["inputs"], "expected": t["expected"], "terms": t["terms"],
            **{f"budget/{tier}": v for tier, v in t["budget"].items()}}


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
