"""Judge what a port in any language got on the golden vectors (docs/design.md §10): ``lcm-ref vectors judge
OUTPUTS.json``.

A port runs the cases of the vector files and writes, per file and tcId, what it got (format below; JSON Schema
``lcm_outputs.schema.json``, shipped beside the vectors). ``judge`` compares each result with the vectors by their
rules (integers and error categories exactly, floats by the budget rule of ``format.RULE`` with the tier the port
names, which gives the oracle's verdict for values of that dtype) and gives verdicts in conform's vocabulary:

- per case: ``pass``; ``fail`` (a wrong value, a wrong or missing error, an error where a value is due, a missing or
  misshapen array); ``unsupported`` (the port said so, with a reason: never counted as a pass); ``inconclusive``
  (no result given, or the case has no budget for the port's tier);
- per concern (the cases' ``concerns``, docs/design.md §9.2): ``fail`` if any output under it fails; else
  ``inconclusive`` if none was judged (all unsupported or missing: a concern with nothing judged is not a pass);
  else ``unsupported`` if some were unsupported; else ``inconclusive`` if some had no result; else ``pass``;
- the run: FAIL (exit 1) if a concern fails, INCOMPLETE (exit 3) if a concern is inconclusive, else PASS (exit 0;
  unsupported concerns are listed). A malformed outputs file is a usage error (exit 2).

Cases of the other profile (TimestepsTest ``profile``) are not part of the run. The outputs format:

    {"outputs": "lcm_ref vector outputs", "formatVersion": 1, "implementation": "my-port 1.0",
     "tier": "float32", "tables": "float32", "profile": "diffusers",
     "results": {"timesteps.json": {"1": {"timesteps": [999, 759, 499, 259], "num_inference_steps": 4},
                                    "40": {"error": {"category": "invalid_argument", "message": "..."}}},
                 "tables.json": {"1": {"alphas_cumprod": "0x1.ff22p-1", "c_skip": 1.0}},
                 "steps.json": {"1": {"denoised": [...], "prev_sample": [...]}, "7": {"unsupported": "v_prediction"}},
                 "forward.json": {"1": {"output": [...]}}}}

Floats are hex strings (C's ``%a``: "0x1.8p+1", "-0x0p+0", "inf", "-nan") or JSON numbers; ``tier`` picks the budgets
of steps.json and forward.json, ``tables`` those of tables.json. A TimestepsTest result may leave out
num_inference_steps, a StepTest result denoised, a TablesTest result any table it does not expose (a table result
may also give final_alpha_cumprod): what is left out is not judged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .format import (ERROR_CATEGORIES, FILES, STEP_TIERS, TABLE_NAMES, TABLE_TIERS, VECTOR_DIR, VectorFileError,
                     from_hex, load, passes)

__all__ = ["OUTPUTS_SCHEMA", "OUTPUTS_FORMAT_VERSION", "VERDICTS", "EXIT", "outputs_schema", "read_outputs", "judge",
           "Judgement"]

OUTPUTS_SCHEMA = "lcm_outputs.schema.json"
OUTPUTS_FORMAT_VERSION = 1
VERDICTS = ("pass", "fail", "unsupported", "inconclusive")
#: the run's exit codes, as lcm-ref conform's
EXIT = {"PASS": 0, "FAIL": 1, "usage": 2, "INCOMPLETE": 3}
#: a float as a port writes it: C's %a (any case, optional sign, with or without a fraction or exponent), inf, nan
LOOSE_HEX = re.compile(r"^[+-]?(0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*([pP][+-]?[0-9]+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?"
                       r"|[nN][aA][nN])$")


def outputs_schema() -> dict:
    """The JSON Schema (2020-12) of an outputs file."""
    num = {"oneOf": [{"type": "number"}, {"type": "string", "pattern": LOOSE_HEX.pattern}]}
    nums = {"type": "array", "items": {"$ref": "#/$defs/float"}}
    error = {"type": "object", "required": ["category"], "additionalProperties": False,
             "properties": {"category": {"enum": list(ERROR_CATEGORIES)}, "message": {"type": "string"}}}
    one_of = [
        {"type": "object", "required": ["unsupported"], "additionalProperties": False,
         "properties": {"unsupported": {"type": "string", "minLength": 1}}},
        {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": error}},
        {"type": "object", "required": ["timesteps"], "additionalProperties": False,
         "properties": {"timesteps": {"type": "array", "items": {"type": "integer"}},
                        "num_inference_steps": {"type": "integer"}}},
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": {k: {"$ref": "#/$defs/float"} for k in (*TABLE_NAMES, "final_alpha_cumprod")}},
        {"type": "object", "required": ["prev_sample"], "additionalProperties": False,
         "properties": {"prev_sample": nums, "denoised": nums}},
        {"type": "object", "required": ["output"], "additionalProperties": False, "properties": {"output": nums}},
    ]
    cases = {"type": "object", "propertyNames": {"pattern": "^[1-9][0-9]*$"},
             "additionalProperties": {"$ref": "#/$defs/result"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://lcm-ref/vectors/{OUTPUTS_SCHEMA}",
        "title": "What an LCM scheduler port got on lcm_ref's golden vectors (input of lcm-ref vectors judge)",
        "description": "results: per vector file, per tcId (as a string), one of: {'unsupported': reason}, "
                       "{'error': {'category', 'message'}}, a TimestepsTest result {'timesteps', "
                       "'num_inference_steps'?}, a TablesTest result {table: float, ...}, a StepTest result "
                       "{'prev_sample', 'denoised'?}, a ForwardTest result {'output'}. Floats: hex strings (C %a) "
                       "or JSON numbers. tier: the budgets of steps.json and forward.json; tables: those of "
                       "tables.json. docs/design.md §10 of lcm_ref.",
        "type": "object",
        "required": ["outputs", "formatVersion", "implementation", "tier", "results"],
        "additionalProperties": False,
        "properties": {
            "outputs": {"const": "lcm_ref vector outputs"},
            "formatVersion": {"const": OUTPUTS_FORMAT_VERSION},
            "implementation": {"type": "string"},
            "tier": {"enum": list(STEP_TIERS)},
            "tables": {"enum": list(TABLE_TIERS)},
            "profile": {"enum": ["diffusers", "strict"]},
            "results": {"type": "object", "additionalProperties": False,
                        "properties": {name: cases for name in FILES}},
        },
        "$defs": {"float": num, "result": {"oneOf": one_of}},
    }


def read_outputs(path) -> dict:
    """Read and validate an outputs file (``VectorFileError`` naming the problem, as for the vectors)."""
    import jsonschema

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VectorFileError(path, "", str(e), kind="cannot read outputs file") from None
    except json.JSONDecodeError as e:
        raise VectorFileError(path, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}",
                              kind="bad outputs file") from None
    errors = sorted(jsonschema.Draft202012Validator(outputs_schema()).iter_errors(doc),
                    key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        msg = e.message if len(e.message) < 200 else e.message[:200] + "..."
        raise VectorFileError(path, where, f"schema violation ({OUTPUTS_SCHEMA}): {msg}", kind="bad outputs file")
    return doc


def _float(v) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    s = v.strip().lower().lstrip("+")
    neg = s.startswith("-")
    body = s[1:] if neg else s
    if body.startswith("inf"):
        x = float("inf")
    elif body == "nan":
        return float("nan")
    else:
        x = float.fromhex(body)
    return -x if neg else x


def _floats(lst) -> np.ndarray:
    return np.array([_float(v) for v in lst], dtype=np.float64)


@dataclasses.dataclass
class _Outcome:
    """One case's verdict, and per concern what its outputs gave ("pass", "fail", "unsupported", "missing")."""
    verdict: str
    detail: str = ""
    per_concern: dict = dataclasses.field(default_factory=dict)


def _floats_verdict(name, got, want, budget):
    """(ok, detail) of one float array by the vectors' rule."""
    if len(got) != len(want):
        return False, f"{name}: {len(got)} values, want {len(want)}"
    ok = passes(got, want, budget)
    if ok.all():
        return True, ""
    j = int(np.argmax(~ok))
    g, w = float(got[j]), float(want[j])
    return False, (f"{name}[{j}] = {g!r}, want {w!r} (|got − want| = {abs(g - w):.3g}, budget {float(budget[j]):.3g}); "
                   f"{int((~ok).sum())} of {len(ok)} over")


def _judge_timesteps(t, res):
    if "timesteps" in res:
        if t["result"] == "error":
            return False, f"want an {t['error']['category']} error ({t['error']['python']}), got timesteps " \
                          f"{res['timesteps']}"
        exp = t["expected"]
        if res["timesteps"] != exp["timesteps"]:
            return False, f"timesteps {res['timesteps']}, want {exp['timesteps']}"
        n = res.get("num_inference_steps")
        if n is not None and n != exp["num_inference_steps"]:
            return False, f"num_inference_steps {n}, want {exp['num_inference_steps']}"
        return True, ""
    if "error" not in res:
        return False, f"a {sorted(res)} result for a TimestepsTest case"
    got = res["error"]
    if t["result"] != "error":
        return False, f"want timesteps {t['expected']['timesteps']}, got a {got['category']} error: " \
                      f"{got.get('message', '')}"
    want = t["error"]
    if got["category"] != want["category"] and "QuirkError" not in t["flags"]:
        return False, f"a {got['category']} error, want {want['category']}"
    param = want.get("parameter")
    if param and param.split(".")[0].split("[")[0].lower() not in got.get("message", "").lower():
        return False, f"the error message does not name the parameter {param!r}: {got.get('message', '')!r}"
    return True, ""


def _judge_tables(t, res, group, tables):
    budget = {k: from_hex(v) for k, v in t["budget"][tables].items()}
    wrong = []
    for k in TABLE_NAMES:
        if k in res:
            ok, why = _floats_verdict(f"{k}[{t['t']}]", _floats([res[k]]), np.array([from_hex(t["expected"][k])]),
                                      np.array([budget[k]]))
            wrong += [] if ok else [why]
    if "final_alpha_cumprod" in res:
        ok, why = _floats_verdict("final_alpha_cumprod", _floats([res["final_alpha_cumprod"]]),
                                  np.array([from_hex(group["final_alpha_cumprod"])]),
                                  np.array([from_hex(group["final_alpha_cumprod_budget"][tables])]))
        wrong += [] if ok else [why]
    if not set(res) & {*TABLE_NAMES, "final_alpha_cumprod"}:
        return False, f"a {sorted(res)} result for a TablesTest case"
    return not wrong, "; ".join(wrong)


def _float_outputs(kind, t, tier):
    """[(result key, want, budget, concern)] of a StepTest or ForwardTest case at ``tier`` (hex lists)."""
    if kind == "StepTest":
        return [(k, t["expected"][k], t["budget"][tier][k], c)
                for k, c in zip(("denoised", "prev_sample"), t["concerns"])]
    return [("output", t["expected"], t["budget"][tier], t["concerns"][0])]


def _judge_case(kind, t, group, res, run):
    """The ``_Outcome`` of one case given the port's result (None: no result)."""
    concerns = t["concerns"]
    everywhere = lambda v: {c: v for c in concerns}  # noqa: E731
    if res is None:
        return _Outcome("inconclusive", "no result", everywhere("missing"))
    if "unsupported" in res:
        return _Outcome("unsupported", res["unsupported"], everywhere("unsupported"))
    if kind == "TimestepsTest":
        ok, why = _judge_timesteps(t, res)
        return _Outcome("pass" if ok else "fail", why, everywhere("pass" if ok else "fail"))
    if "error" in res:
        return _Outcome("fail", f"raised a {res['error']['category']} error: {res['error'].get('message', '')}",
                        everywhere("fail"))
    if kind == "TablesTest":
        ok, why = _judge_tables(t, res, group, run["tables"])
        return _Outcome("pass" if ok else "fail", why, everywhere("pass" if ok else "fail"))
    needed = "prev_sample" if kind == "StepTest" else "output"
    if needed not in res:
        return _Outcome("fail", f"a {sorted(res)} result for a {kind} case: '{needed}' is due", everywhere("fail"))
    if run["tier"] not in t["budget"]:
        return _Outcome("inconclusive", f"no {run['tier']} budget for this case (its rule is not finite there)",
                        everywhere("missing"))
    per, wrong = {}, []
    for key, want, budget, concern in _float_outputs(kind, t, run["tier"]):
        if key not in res:
            continue                                  # denoised not exposed: not judged
        ok, why = _floats_verdict(key, _floats(res[key]), np.array([from_hex(v) for v in want]),
                                  np.array([from_hex(v) for v in budget]))
        per[concern] = "fail" if (not ok or per.get(concern) == "fail") else "pass"
        wrong += [] if ok else [why]
    return _Outcome("fail" if wrong else "pass", "; ".join(wrong), per)


@dataclasses.dataclass
class Judgement:
    """The verdicts of one outputs file: ``cases`` [(file, tcId, verdict, detail)], ``concerns`` {concern: (verdict,
    counts, detail)}, ``skipped`` (cases of the other profile), ``verdict`` (PASS, FAIL, INCOMPLETE) and
    ``exit_code``."""
    implementation: str
    tier: str
    tables: str
    profile: str
    cases: list
    concerns: dict
    skipped: int

    @property
    def verdict(self) -> str:
        v = {c[0] for c in self.concerns.values()}
        return "FAIL" if "fail" in v else ("INCOMPLETE" if "inconclusive" in v else "PASS")

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def to_text(self, all_cases=False) -> str:
        lines = [f"lcm-ref vectors judge: {self.implementation} (tier {self.tier}, tables {self.tables}, profile "
                 f"{self.profile})"]
        for name, tc, verdict, detail in self.cases:
            if all_cases or verdict != "pass":
                lines.append(f"  {verdict:<12} {name} tcId {tc}" + (f": {detail}" if detail else ""))
        lines.append("concerns:")
        for concern, (verdict, counts, detail) in self.concerns.items():
            tally = ", ".join(f"{counts[k]} {k}" for k in ("pass", "fail", "unsupported", "missing") if counts[k])
            lines.append(f"  {concern:<26} {verdict:<12} {tally}" + (f"; {detail}" if detail else ""))
        n = defaultdict(int)
        for c in self.cases:
            n[c[2]] += 1
        lines.append(f"{self.verdict}: {len(self.cases)} cases: " + ", ".join(f"{n[v]} {v}" for v in VERDICTS)
                     + (f"; {self.skipped} of the other profile not run" if self.skipped else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"implementation": self.implementation, "tier": self.tier, "tables": self.tables,
                "profile": self.profile, "verdict": self.verdict, "exit_code": self.exit_code,
                "cases": [dict(file=f, tcId=tc, verdict=v, detail=d) for f, tc, v, d in self.cases],
                "concerns": {k: dict(verdict=v, counts=c, detail=d) for k, (v, c, d) in self.concerns.items()},
                "skipped": self.skipped}


def _concern_verdict(counts, reasons):
    if counts["fail"]:
        return "fail", ""
    if not counts["pass"]:
        why = "nothing judged"
        if counts["unsupported"]:
            why += f": {counts['unsupported']} unsupported ({'; '.join(sorted(reasons)[:3])})"
        if counts["missing"]:
            why += f"; {counts['missing']} without a result or budget"
        return "inconclusive", why
    if counts["unsupported"]:
        return "unsupported", f"unsupported: {'; '.join(sorted(reasons)[:3])}"
    if counts["missing"]:
        return "inconclusive", f"{counts['missing']} without a result or budget"
    return "pass", ""


def judge(outputs, directory=None) -> Judgement:
    """Judge ``outputs`` (a path or the parsed document) against the vector files in ``directory`` (default: the
    shipped copy). ``VectorFileError`` for a malformed outputs file or a result for a tcId that does not exist."""
    doc = read_outputs(outputs) if not isinstance(outputs, dict) else outputs
    directory = Path(directory) if directory is not None else VECTOR_DIR
    run = {"tier": doc["tier"], "tables": doc.get("tables", "float32"), "profile": doc.get("profile", "diffusers")}
    cases, skipped = [], 0
    counts = defaultdict(lambda: {"pass": 0, "fail": 0, "unsupported": 0, "missing": 0})
    reasons = defaultdict(set)
    for name in FILES:
        vec = load(directory / name)
        results = dict(doc["results"].get(name, {}))
        for g in vec["testGroups"]:
            for t in g["tests"]:
                res = results.pop(str(t["tcId"]), None)
                if g["type"] == "TimestepsTest" and t["profile"] != run["profile"]:
                    skipped += 1
                    continue
                o = _judge_case(g["type"], t, g, res, run)
                cases.append((name, t["tcId"], o.verdict, o.detail))
                for concern, v in o.per_concern.items():
                    counts[concern][v] += 1
                    if v == "unsupported":
                        reasons[concern].add(o.detail)
        if results:
            raise VectorFileError(outputs if not isinstance(outputs, dict) else "outputs", f"results/{name}",
                                  f"tcId {sorted(results, key=int)[0]} is not a case of {name}",
                                  kind="bad outputs file")
    from ..conform import CONCERNS

    concerns = {}
    for c in (c for c in CONCERNS if c in counts):
        verdict, detail = _concern_verdict(counts[c], reasons[c])
        concerns[c] = (verdict, dict(counts[c]), detail)
    return Judgement(doc["implementation"], run["tier"], run["tables"], run["profile"], cases, concerns, skipped)
