"""Golden vectors: language-neutral JSON test cases for any LCM scheduler port (Wycheproof style; docs/design.md §10).

    lcm-ref vectors generate [--out DIR]            # write the files from the reference (default ./lcm_vectors)
    lcm-ref vectors check [--impl module:attr]      # the reference (bit for bit) or an implementation (budget)
    lcm-ref vectors judge OUTPUTS.json              # what a port in any language got: verdicts per case, concern

Four files, one schema (``lcm_vectors.schema.json``) beside them, shipped in ``data/``:

- ``timesteps.json``  ``TimestepsTest``: a ``set_timesteps`` request -> the timesteps (integers, exact) and the
  ``num_inference_steps`` that ``step`` uses to recognise the last step, or the error class;
- ``tables.json``     ``TablesTest``: β, ᾱ, √ᾱ, √(1−ᾱ), c_skip, c_out at probe timesteps (float64, ≤ 1 ulp of exact);
- ``steps.json``      ``StepTest``: whole multistep runs, one case per step: inputs (sample, model_output, noise)
  -> denoised and prev_sample, with Σ|terms| for the scaled error (docs/design.md §8);
- ``forward.json``    ``ForwardTest``: ``add_noise`` and ``get_velocity``.

Every float expected value carries its budget per tier (absolute, per element): a value passes when the budget is
inf, or got == want (NaN matches NaN), or |got − want| ≤ budget; for values of the tier's dtype this is exactly the
oracle's verdict (``budgets``). ``lcm_outputs.schema.json`` describes what a port writes for ``judge``.

Every float is a ``float.hex`` string (``"0x1.b4e81b4e81b4fp-11"``, ``"inf"``, ``"-inf"``, ``"nan"``): an exact
round trip in any language with a hex-float parser (C ``strtod``, Java ``Double.parseDouble``, Rust ``hexf``...).
Inputs are float32-exact, so a float32 port can load them without rounding. Arrays are flattened in row-major
(C) order; ``shape`` gives their shape. Each file's header says what it holds and how to compare it, and its
``notes`` what each of its flags probes.

Modules: ``format`` (encoding, header, flag glossary, schema, the budget rule, ``load``), ``traps`` (float32 grid and
strength arithmetic, the sweeps that pick those cases), ``catalogue`` (the cases and their flags), ``budgets`` (the
oracle's bounds as per-element budgets), ``generator`` (the reference over the catalogue, written to files),
``verify`` (``check_vectors``), ``judge`` (a port's outputs file -> verdicts). ``cpp/``: a C++17 reader and checker
with a small LCM scheduler, the worked example of docs/design.md §10.
"""

from __future__ import annotations

from .format import FILES, HEX, NOTES, SCHEMA, VECTOR_DIR, VectorFileError, load
from .generator import DEFAULT_OUT, generate, write
from .judge import OUTPUTS_SCHEMA, Judgement, judge, read_outputs
from .verify import check_vectors

__all__ = ["VECTOR_DIR", "FILES", "SCHEMA", "OUTPUTS_SCHEMA", "HEX", "NOTES", "DEFAULT_OUT", "VectorFileError",
           "Judgement", "generate", "write", "load", "check_vectors", "judge", "read_outputs"]
