"""The results of conformance: ``ConcernResult`` (the verdict on one concern, with its evidence),
``ConformanceReport`` (a run: the status PASS / FAIL / INCOMPLETE, the region judged, JSON / markdown / table) and the
JSON schema shipped beside it (docs/design.md §9.1)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional

from .. import __version__
from ..numerics import markdown_table
from .concerns import STEP_CONCERNS

class OracleMismatch(AssertionError):
    """Raised by ``check`` (conform's fail-fast mode) and ``replay``: the implementation fails a concern. ``str()``
    is the concern's detail (config, step, timestep, worst element, got / want, the scaled error against the
    budget) with its likely cause and a ``replay(...)`` reproduction; ``quantity`` names the concern, ``case`` the
    failing case, ``result`` the ``ConcernResult``."""

    def __init__(self, message, *, quantity, case=None, repro=None, result=None):
        super().__init__(message)
        self.quantity, self.case, self.repro, self.result = quantity, case, repro, result


VERDICTS = ("pass", "fail", "inconclusive", "unsupported", "not_observable")
#: the verdict of a whole run: PASS (exit 0), FAIL (exit 1), INCOMPLETE (exit 3; 2 is a usage error)
STATUSES = ("PASS", "FAIL", "INCOMPLETE")
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 3}

SCHEMA_PATH = Path(__file__).with_name("conformance.schema.json")


def schema() -> dict:
    """The JSON Schema (2020-12) of ``ConformanceReport.to_dict()``, shipped as ``conformance.schema.json``."""
    return json.loads(SCHEMA_PATH.read_text())


@dataclasses.dataclass
class ConcernResult:
    """The verdict on one concern, with its evidence. ``examples``: examples run (canonical and drawn);
    ``canonical`` + ``drawn`` = ``examples`` (the report's top-level ``examples`` is what was asked of hypothesis per
    concern: ``drawn`` is at most that, as a case drawn twice runs once and a timeout stops the draws);
    ``judged``: those compared with the reference that did not fail (a pass needs ``min_judged`` of them);
    ``failing_examples``: those that failed; ``skipped``: why the others were not judged (reason -> count);
    ``reason``: one line saying why the verdict is not pass (empty for pass); ``reproduce``: a pasteable
    ``replay(...)`` of the smallest failing case (None unless the verdict is fail); ``worst``: the worst value of
    that case (got, want, scaled error, budget, where); ``max_error``: of the values within budget, the one nearest
    its budget (``max_ratio`` = its scaled error / its budget); ``refused``: what the implementation refused."""
    concern: str
    verdict: str
    detail: str
    failing_examples: int = 0
    reproduce: Optional[str] = None
    description: str = ""
    examples: int = 0
    canonical: int = 0
    drawn: int = 0
    judged: int = 0
    min_judged: int = 0
    reason: str = ""
    skipped: dict = dataclasses.field(default_factory=dict)
    values: int = 0
    max_ratio: Optional[float] = None
    max_error: Optional[dict] = None
    likely_cause: Optional[str] = None
    refused: list = dataclasses.field(default_factory=list)
    worst: Optional[dict] = None
    case: Optional[dict] = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("worst", "max_error"):
            v = getattr(self, key)
            d[key] = None if v is None else {k: _json_float(x) if isinstance(x, float) else x for k, x in v.items()}
        d["max_ratio"] = _json_float(self.max_ratio)
        d["seconds"] = round(self.seconds, 3)
        return d


def error_text(e: dict, within: bool) -> str:
    """A scaled error beside its budget, and which side of it: "3.1 eps(float32) (budget 8.03, within)"."""
    return (f"{e['scaled_error']:.3g} {e.get('unit', 'eps')} (budget {e['budget']:.3g}, "
            f"{'within' if within else 'OVER'})")


def _json_float(v):
    """A float as JSON allows it: finite as a number, else the string "inf", "-inf" or "nan"."""
    if v is None or not isinstance(v, float) or math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


class ConformanceReport:
    """One verdict per concern (``concerns``: ``ConcernResult`` in ``CONCERNS`` order). ``ok``: no concern fails.
    ``str()`` is the human verdict table ending in PASS or FAIL; ``to_dict``/``to_json`` follow
    ``conformance.schema.json``; ``to_markdown`` is the table for a report page."""

    def __init__(self, implementation, dtype, device, tables, profile, examples, timeout_s):
        self.implementation, self.dtype, self.device = implementation, dtype, device
        self.tables, self.profile, self.examples, self.timeout_s = tables, profile, examples, timeout_s
        self.lcm_ref_version = __version__
        self.region = None          # support.Support: what the implementation accepts, the region drawn from
        self.implementation_info = {"package": None, "version": None}   # compare.implementation_info
        self.concerns: list[ConcernResult] = []
        self.seconds = 0.0

    @property
    def status(self) -> str:
        """PASS: no concern fails, none is inconclusive, and the step was judged; FAIL: a concern fails;
        INCOMPLETE: nothing fails but something could not be judged (``incomplete_reasons``)."""
        if any(c.verdict == "fail" for c in self.concerns):
            return "FAIL"
        return "INCOMPLETE" if self.incomplete_reasons() else "PASS"

    def incomplete_reasons(self) -> list:
        """Why the run is not PASS although no concern fails (empty when it is PASS or FAIL)."""
        if any(c.verdict == "fail" for c in self.concerns):
            return []
        out = [f"{c.concern}: {c.reason}" for c in self.concerns if c.verdict == "inconclusive"]
        if not any(c.verdict == "pass" for c in self.concerns):
            out.append("no concern passed: nothing was judged")
        steps = [c for c in self.concerns if c.concern in STEP_CONCERNS]
        if steps and not any(c.verdict == "pass" for c in steps):
            out.append("no step concern (" + ", ".join(c.concern for c in steps) + ") passed: the scheduler's step "
                       "was not judged")
        return out

    @property
    def ok(self) -> bool:
        """The run is PASS."""
        return self.status == "PASS"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def __getitem__(self, concern) -> ConcernResult:
        for c in self.concerns:
            if c.concern == concern:
                return c
        raise KeyError(concern)

    def verdicts(self) -> dict:
        return {c.concern: c.verdict for c in self.concerns}

    def to_dict(self) -> dict:
        return {"implementation": self.implementation,
                "implementation_package": self.implementation_info.get("package"),
                "implementation_version": self.implementation_info.get("version"), "status": self.status,
                "incomplete_reasons": self.incomplete_reasons(), "dtype": self.dtype, "device": self.device,
                "lcm_ref_version": self.lcm_ref_version, "tables": self.tables, "profile": self.profile,
                "examples": self.examples, "timeout_s": self.timeout_s, "seconds": round(self.seconds, 3),
                "region": self.region.to_dict() if self.region is not None else None,
                "concerns": [c.to_dict() for c in self.concerns]}

    def to_json(self, indent=2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

    def _summary(self) -> str:
        counts = {v: sum(c.verdict == v for c in self.concerns) for v in VERDICTS}
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        judged = sum(c.judged for c in self.concerns)
        return (f"{self.status} ({len(self.concerns)} concerns: {parts}; {judged} examples judged; "
                f"{self.seconds:.1f} s)")

    def _header(self) -> str:
        pkg, ver = self.implementation_info.get("package"), self.implementation_info.get("version")
        what = f" ({pkg} {ver})" if pkg and ver else ""
        head = (f"lcm_ref {self.lcm_ref_version} conformance of {self.implementation or 'the implementation'}{what}: "
                f"dtype {self.dtype}, device {self.device}, tables {self.tables}, profile {self.profile}")
        if self.region is not None:
            head += "\njudged region (what the implementation accepts; draws stay inside):\n" + "\n".join(
                "  " + line for line in self.region.describe().splitlines())
        return head

    def _rows(self):
        def error(c):
            if c.verdict == "fail" and c.worst and "scaled_error" in c.worst:
                return error_text(c.worst, within=False)
            return error_text(c.max_error, within=True) if c.max_error and c.verdict != "fail" else "—"
        return [{"concern": c.concern, "verdict": c.verdict.upper() if c.verdict == "fail" else c.verdict,
                 "judged": f"{c.judged}/{c.examples}", "run": f"{c.canonical} + {c.drawn}", "min": c.min_judged,
                 "failing": c.failing_examples, "largest error (its budget)": error(c), "why": c.reason}
                for c in self.concerns]

    def legend(self) -> str:
        """What the table's columns count, and why they differ from the requested examples."""
        asked = sorted(set(self.examples.values())) if isinstance(self.examples, dict) else [self.examples]
        return ("judged/examples: examples compared with the reference, without failing / examples run; run: "
                "canonical cases + distinct drawn cases (hypothesis was asked for "
                + " or ".join(str(a) for a in asked) + " per concern: a case drawn twice runs once); min: judged "
                "examples a pass needs; largest error: the value nearest its budget, in units of eps of the "
                "compared dtype (a fail: its worst value, over the budget)")

    def __str__(self):
        lines = [self._header(), "", markdown_table(self._rows(), floatfmt=".3g").rstrip()]
        for c in self.concerns:
            if c.verdict != "fail":
                continue
            lines += ["", f"--- {c.concern}: FAIL ({c.failing_examples} of {c.examples} examples) ---", c.detail]
            if c.likely_cause:
                lines.append(f"likely cause: {c.likely_cause}")
            if c.reproduce:
                lines += ["reproduce (paste into a file and run):", c.reproduce]
        lines += ["", self.legend()]
        lines += [f"INCOMPLETE: {r}" for r in self.incomplete_reasons()]
        lines += ["", self._summary()]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [f"# Conformance: {self.implementation or 'implementation'}", "", self._header(), "",
               markdown_table(self._rows(), floatfmt=".3g"), self.legend(), ""]
        for c in self.concerns:
            if c.verdict == "fail":
                out += [f"## {c.concern}: fail", "", f"{c.failing_examples} of {c.examples} examples fail.", "",
                        "```", c.detail, "```", ""]
                if c.likely_cause:
                    out += [f"Likely cause: {c.likely_cause}", ""]
                if c.reproduce:
                    out += ["```python", c.reproduce, "```", ""]
        out += [f"- incomplete: {r}" for r in self.incomplete_reasons()]
        out += ["", f"**{self._summary()}**", ""]
        return "\n".join(out)


