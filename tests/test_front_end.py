"""What a user of the command line and the reports meets besides the verdicts: files written with the umask's
permissions, IMPL imported from the current directory by every command, long arrays abbreviated in messages, and
the package and version of the implementation a report judged."""

import functools
import os
import stat
import sys
import textwrap
from importlib import metadata

import diffusers
import numpy as np
import pytest
import torch

import lcm_ref
from lcm_ref.cli import main as cli
from lcm_ref.numerics import file_mode, umask, write_atomic, write_csv
from lcm_ref.oracle import adapters
from lcm_ref.oracle.compare import ABBREVIATE_OVER, abbreviate, implementation_info, load_factory


# ---------------------------------------------------------------------------------------------------------------
# Files honour the umask
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def with_umask():
    """Set the process umask for one test, restoring it after (umask is per process: pytest-xdist workers are
    separate processes)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, with_umask, mask, want):
    """A file written atomically gets 0666 without the umask's bits, as open(path, "w") gives it (mkstemp's 0600
    made every report unreadable to the group and others)."""
    with_umask(mask)
    assert umask() == mask
    for path in (write_atomic(tmp_path / "a.json", "{}\n"), write_csv([{"x": 1}], tmp_path / "b.csv")):
        assert stat.S_IMODE(path.stat().st_mode) == want, (oct(mask), oct(path.stat().st_mode))


def test_rewriting_a_file_gives_it_the_umask_mode(tmp_path, with_umask):
    """A file an earlier version left 0600 becomes 0644 (umask 022) when it is written again, and no temporary file
    is left beside it."""
    with_umask(0o022)
    path = tmp_path / "conformance.md"
    path.write_text("old\n")
    path.chmod(0o600)
    assert file_mode() == 0o644
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["conformance.md"]


# ---------------------------------------------------------------------------------------------------------------
# IMPL from the current directory
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def port_in_cwd(tmp_path, monkeypatch):
    """A folder holding a port module, made the current directory, with neither it nor "" on sys.path (as when a
    console script runs)."""
    name = f"my_port_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from diffusers import LCMScheduler as MyLCM
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def test_load_factory_imports_from_the_current_directory(port_in_cwd):
    """module:attr is found in the current directory, which load_factory puts first on sys.path."""
    assert load_factory(f"{port_in_cwd}:MyLCM") is diffusers.LCMScheduler
    assert sys.path[0] == os.getcwd()


def test_check_imports_from_the_current_directory(port_in_cwd, capsys):
    """`lcm-ref check module:attr` imports from the current directory, as `lcm-ref conform` does."""
    assert cli(["check", f"{port_in_cwd}:MyLCM", "--concerns", "timesteps", "--no-shrink"]) == 0
    assert cli(["check", f"{port_in_cwd}:NoSuchAttr", "--examples", "1"]) == 2
    assert "NoSuchAttr" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Long arrays in messages
# ---------------------------------------------------------------------------------------------------------------

BETAS = [1e-4 + 2e-6 * i for i in range(1000)]          # a trained_betas of 1,000 entries
SHORT = "[0.0001, 0.000102, … 1000 values]"               # its first two (6 significant digits) and its count


@pytest.mark.parametrize("value", [
    BETAS, np.array(BETAS), torch.tensor(BETAS, dtype=torch.float64), tuple(BETAS)],
    ids=["list", "ndarray", "tensor", "tuple"])
def test_a_long_array_value_is_abbreviated(value):
    """A 1,000-entry array given as a value becomes its first two entries and its count."""
    text = abbreviate(value)
    assert text in (SHORT, SHORT.replace("[", "(").replace("]", ")")), text


@pytest.mark.parametrize("printed", [
    str(BETAS), str(np.array(BETAS)), str([np.float64(b) for b in BETAS]), repr(torch.tensor(BETAS[:500]))],
    ids=["list", "numpy-str", "numpy-scalars", "torch-repr"])
def test_a_long_array_quoted_in_a_message_is_abbreviated(printed):
    """An exception message quoting the array (as Python, NumPy and torch print it) keeps its words and loses the
    entries: a 2-concern report embedded whole 1,000-entry arrays (226 KB)."""
    text = abbreviate(f"ValueError: trained_betas={printed} must be increasing")
    assert text.startswith("ValueError: trained_betas=") and text.endswith(" must be increasing"), text
    n = 500 if "tensor" in printed else 1000
    assert f"… {n} values" in text and len(text) < 120, text


def test_short_runs_and_other_text_stay():
    """A run of up to ABBREVIATE_OVER numbers (a schedule, the evidence of a failure) stays whole; words in brackets
    and nested structures stay; the whole is cut at ``limit``."""
    schedule = list(range(999, 0, -50))
    assert len(schedule) == ABBREVIATE_OVER
    message = f"scheduler.timesteps = {schedule}, want [999, 759, 499, 259] (n=4); config (a, b)"
    assert abbreviate(message) == message
    longer = list(range(999, 0, -47))
    assert abbreviate(longer) == f"[999, 952, … {len(longer)} values]"
    assert abbreviate({"trained_betas": BETAS, "beta_start": 0.5}) == f"{{'trained_betas': {SHORT}, 'beta_start': 0.5}}"
    text = abbreviate("x" * 1000, limit=50)
    assert len(text) == 50 and text.endswith("…")


# ---------------------------------------------------------------------------------------------------------------
# The implementation's package and version
# ---------------------------------------------------------------------------------------------------------------

def test_implementation_info_names_the_judged_package():
    """A report names the package and installed version of what it judged, also through lcm_ref's adapters and
    functools.partial (the adapter is lcm_ref's code; the implementation is the class it drives)."""
    want = {"package": "diffusers", "version": metadata.version("diffusers")}
    assert want["version"] == diffusers.__version__
    for factory in (diffusers.LCMScheduler, "diffusers:LCMScheduler",
                    adapters.diffusers_compat(diffusers.LCMScheduler), functools.partial(diffusers.LCMScheduler),
                    adapters.port(diffusers.LCMScheduler, step=lambda s, *a, **k: s.step(*a, **k))):
        assert implementation_info(factory) == want, factory
    from lcm_ref.torch_impl import LCMScheduler
    assert implementation_info(LCMScheduler) == {"package": "lcm_ref", "version": lcm_ref.__version__}
    # the version matrix runs lcm_ref from a path, where no distribution provides it: still lcm_ref's own version
    def no_distribution(name):
        raise metadata.PackageNotFoundError(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metadata, "version", no_distribution)
        assert implementation_info(LCMScheduler) == {"package": "lcm_ref", "version": lcm_ref.__version__}
        assert implementation_info(diffusers.LCMScheduler) == {"package": "diffusers", "version": None}
    from lcm_ref.testbed import ksamplers
    k = adapters.k_diffusion(ksamplers.sample_lcm, ksamplers.lcm_model_sampling())
    assert implementation_info(k) == {"package": "lcm_ref", "version": lcm_ref.__version__}


def test_implementation_info_distribution_and_local_modules(port_in_cwd):
    """The version is the distribution's that provides the top-level package, also when their names differ (yaml
    is PyYAML's); a module that no distribution provides (a port in the current directory, __main__) has none."""
    yaml = pytest.importorskip("yaml")
    assert implementation_info(yaml.YAMLObject) == {"package": "yaml", "version": metadata.version("PyYAML")}
    port = load_factory(f"{port_in_cwd}:MyLCM")
    assert implementation_info(port)["package"] == "diffusers"              # what it re-exports is diffusers'
    mine = type("Mine", (), {"__module__": port_in_cwd})
    assert implementation_info(mine) == {"package": port_in_cwd, "version": None}
    assert implementation_info(type("Main", (), {"__module__": "__main__"})) == {"package": "__main__",
                                                                                 "version": None}
