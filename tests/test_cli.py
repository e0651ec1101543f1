"""``lcm-ref timesteps`` (values checked against diffusers and closed forms computed here, not against lcm_ref) and
the ``lcm-ref`` dispatch."""

import csv
import io
import json
import math

import numpy as np
import pytest
from diffusers import LCMScheduler

import lcm_ref.reference as ref
from lcm_ref import LCMConfig
from lcm_ref.cli import main as cli
from lcm_ref.numerics import eps

EPS64 = eps("float64")


def timesteps_csv(capsys, *argv):
    rc = cli(["timesteps", *argv, "--csv"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return list(csv.DictReader(io.StringIO(captured.out)))


def diffusers_timesteps(n, **kw):
    s = LCMScheduler()
    s.set_timesteps(n, **kw)
    return s.timesteps.tolist()


@pytest.mark.parametrize("n", range(1, 9))
def test_timesteps_are_diffusers(capsys, n):
    """The printed schedule for n = 1..8 is the one the installed diffusers chooses, and next_t chains them."""
    rows = timesteps_csv(capsys, "--steps", str(n))
    want = diffusers_timesteps(n)
    assert [int(r["t"]) for r in rows] == want
    assert [r["next_t"] for r in rows] == [str(t) for t in want[1:]] + [""]


@pytest.mark.parametrize("argv, kw", [
    (["--strength", "0.5"], {"strength": 0.5}),
    (["--original-steps", "30"], {"original_inference_steps": 30}),
    (["--original-steps", "4"], {"original_inference_steps": 4}),
    (["--strength", "0.58"], {"strength": 0.58}),
])
def test_options_reach_set_timesteps(capsys, argv, kw):
    """--strength and --original-steps act as set_timesteps' strength and original_inference_steps (n = 4)."""
    rows = timesteps_csv(capsys, "--steps", "4", *argv)
    assert [int(r["t"]) for r in rows] == diffusers_timesteps(4, **kw)


def test_values_match_closed_forms(capsys):
    """ᾱ, σ = √(1−ᾱ)/√ᾱ, c_skip and c_out per step equal independent float64 evaluations within their error bounds."""
    rows = timesteps_csv(capsys, "--steps", "8")
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    abar = np.cumprod(1.0 - betas)
    # A float64 product of 1000 rounded factors (each 1 − β also rounded, β from a rounded linspace squared) has
    # relative error ≤ (3·1000 + 2)·u, u = 2⁻⁵³ (first order); the printed value is correctly rounded (≤ 0.5 ulp).
    tol_abar = 3002 * 2.0 ** -53
    for r in rows:
        t = int(r["t"])
        a = abar[t]
        assert float(r["alpha_bar"]) == pytest.approx(a, rel=tol_abar)
        # σ² = (1−ᾱ)/ᾱ: dσ/σ = −dᾱ / (2ᾱ(1−ᾱ)), so ᾱ's relative error is amplified by 1/(2(1−ᾱ)).
        assert float(r["sigma"]) == pytest.approx(math.sqrt((1 - a) / a), rel=tol_abar / (2 * (1 - a)) + 4 * EPS64)
        u = t * 10.0
        # c_skip = 0.25/(u²+0.25) and c_out = u/√(u²+0.25): ≤ 3 roundings each in float64, plus 0.5 ulp printed.
        assert float(r["c_skip"]) == pytest.approx(0.25 / (u * u + 0.25), rel=4 * EPS64)
        assert float(r["c_out"]) == pytest.approx(u / math.sqrt(u * u + 0.25), rel=4 * EPS64)
        # 1 − c_out = σ²/(√(u²+σ²)(√(u²+σ²)+u)): no cancellation, a few roundings.
        r2 = math.sqrt(u * u + 0.25)
        assert float(r["one_minus_c_out"]) == pytest.approx(0.25 / (r2 * (r2 + u)), rel=6 * EPS64)


def test_csv_is_lossless(capsys):
    """--csv prints every float in full precision: it round-trips to the reference's float64 values bit for bit."""
    cfg = LCMConfig()
    rows = timesteps_csv(capsys, "--steps", "4")
    for r in rows:
        t = int(r["t"])
        assert float(r["alpha_bar"]) == ref.alphas_cumprod(cfg)[t]
        assert (float(r["c_skip"]), float(r["c_out"])) == ref.boundary_scalings(cfg, t)


def test_quirk_1_last_step_renoises(capsys):
    """Custom timesteps with strength < 1: the table says the last step re-noises to itself (diffusers' quirk 1)."""
    rows = timesteps_csv(capsys, "--timesteps", "999,759,499,259", "--strength", "0.5")
    assert [(int(r["t"]), r["next_t"]) for r in rows] == [(499, "259"), (259, "259")]
    rows = timesteps_csv(capsys, "--timesteps", "999,759,499,259", "--strength", "0.5", "--profile", "strict")
    assert rows[-1]["next_t"] == ""


def test_config_file(capsys, tmp_path):
    """--config reads a diffusers scheduler_config.json: its keys act, '_'-keys are skipped, unknown keys warned."""
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps({"_class_name": "LCMScheduler", "beta_schedule": "linear", "beta_start": 0.0001,
                                "beta_end": 0.02, "original_inference_steps": 30, "not_a_key": 1}))
    rc = cli(["timesteps", "--steps", "2", "--config", str(path)])
    out = capsys.readouterr()
    assert rc == 0
    assert "not_a_key" in out.err and "_class_name" not in out.err
    s = LCMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, original_inference_steps=30)
    s.set_timesteps(2)
    table = [line.split() for line in out.out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[1]) for row in table] == s.timesteps.tolist()
    # ᾱ of the linear schedule in float64 (relative error ≤ (3·1000 + 2)·u, as in test_values_match_closed_forms),
    # printed with 9 significant digits (.8e: ≤ 5e-9 relative); scaled_linear's ᾱ differs by far more
    abar = np.cumprod(1.0 - np.linspace(0.0001, 0.02, 1000))
    for row in table:
        assert float(row[2]) == pytest.approx(abar[int(row[1])], rel=5e-9 + 3002 * 2.0 ** -53)
    assert "σ = √(1−ᾱ)/√ᾱ" in out.out


def test_human_table_shows_every_step(capsys):
    """The default (non-CSV) table has one line per step with 8 columns and names the σ convention."""
    assert cli(["timesteps", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[1]) for row in table] == [999, 759, 499, 259]
    assert all(len(row) == 8 for row in table)
    assert "σ = √(1−ᾱ)/√ᾱ" in out


@pytest.mark.parametrize("argv, names", [
    (["--steps", "4", "--strength", "1.5", "--profile", "strict"], "strength=1.5"),
    (["--steps", "9", "--original-steps", "4"], "num_inference_steps=9"),
    (["--timesteps", "500,999"], "descending"),
    (["--steps", "2", "--config", "/nonexistent/scheduler_config.json"], "/nonexistent"),
])
def test_bad_input_is_a_clear_error(capsys, argv, names):
    """Bad input exits with status 2 and a one-line message naming the offending value; no traceback."""
    assert cli(["timesteps", *argv]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err


@pytest.mark.parametrize("argv, names", [(["--steps", "0"], "--steps='0'"), (["--steps", "x"], "--steps='x'"),
                                         (["--timesteps", "9a9"], "--timesteps='9a9'"), ([], "--steps")])
def test_argument_errors(capsys, argv, names):
    """Malformed arguments are refused by the parser (exit 2) with the option and its allowed values."""
    with pytest.raises(SystemExit) as e:
        cli(["timesteps", *argv])
    assert e.value.code == 2
    assert names in capsys.readouterr().err


def test_quirk_4_marks_out_of_range(capsys):
    """strength > 1 (diffusers profile) prints timesteps ≥ T with undefined ᾱ and a note instead of crashing."""
    assert cli(["timesteps", "--steps", "4", "--strength", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "1499" in out and "IndexError" in out


def test_dispatch_help(capsys):
    """`lcm-ref` alone lists the subcommands; `lcm-ref report --help` shows report's options."""
    assert cli([]) == 0
    assert "timesteps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli(["report", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--fast", "--only", "--out"))


def test_docs_prints_the_cited_section(capsys):
    """`lcm-ref docs` names the design document and lists its sections; `lcm-ref docs §N` prints section N (a
    sub-point: the section holding it, saying so); an unknown section is a usage error naming the sections."""
    assert cli(["docs"]) == 0
    out = capsys.readouterr().out
    assert "design.md" in out and "§9.1" in out and "§14" in out
    assert cli(["docs", "§6.Q3"]) == 0
    out = capsys.readouterr().out
    assert "\n### §6.Q3 Zero-SNR" in out and "### §6.Q4" not in out
    assert cli(["docs", "8.B6"]) == 0
    assert "(§8.B6, Underflow, is a point of §8.3)" in capsys.readouterr().out
    assert cli(["docs", "§99"]) == 2
    assert "section='§99' is not allowed" in capsys.readouterr().err


def test_every_help_that_cites_the_design_document_says_how_to_read_it(capsys):
    """Protects the pip-install reader: a command whose --help cites "docs/design.md §N" (docs/ is not installed)
    also says that `lcm-ref docs §N` prints the section."""
    from lcm_ref.cli import COMMANDS
    citing = 0
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            cli([name, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        if "design.md §" in out and name != "docs":
            citing += 1
            assert "lcm-ref docs §N" in out, name
    assert citing >= 3          # conform, check and report cite sections today: the test must see some
