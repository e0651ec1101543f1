"""Integer schedules: ref.timesteps / ref.set_timesteps against diffusers' LCMScheduler and ref.spaced_timesteps
against DDIMScheduler, exactly (docs/design.md §4, §7); hand-derived examples, NumPy's near-ties, errors and warnings."""

import logging
import math
import warnings
from fractions import Fraction

import diffusers
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

import lcm_ref.reference as ref
from lcm_ref import LCMConfig, LCMRefWarning

LCM_LOGGER = logging.getLogger("diffusers.schedulers.scheduling_lcm")


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record):
        self.n += 1


def diffusers_outcome(T, kwargs):
    """(timesteps, num_inference_steps, warning count) or the exception class diffusers raises."""
    sched = diffusers.LCMScheduler(num_train_timesteps=T)
    handler = _Count()
    LCM_LOGGER.addHandler(handler)
    try:
        sched.set_timesteps(**kwargs)
    except Exception as e:   # noqa: BLE001 - the class is what is compared
        return type(e)
    finally:
        LCM_LOGGER.removeHandler(handler)
    return sched.timesteps.numpy(), sched.num_inference_steps, handler.n


def ref_outcome(T, kwargs, profile="diffusers"):
    cfg = LCMConfig(num_train_timesteps=T)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s = ref.set_timesteps(cfg, **kwargs, profile=profile)
        except Exception as e:   # noqa: BLE001
            return type(e)
    assert all(issubclass(w.category, LCMRefWarning) for w in caught)
    return s.timesteps, s.num_inference_steps, len(caught)


def assert_same_outcome(T, kwargs):
    want, got = diffusers_outcome(T, kwargs), ref_outcome(T, kwargs)
    if isinstance(want, type):
        assert isinstance(got, type) and issubclass(got, want), f"{kwargs}: diffusers raises {want}, ref {got}"
        return
    assert not isinstance(got, type), f"{kwargs}: ref raises {got}, diffusers returns {want[0]}"
    assert got[0].dtype == np.int64 and got[0].tolist() == want[0].tolist(), kwargs
    assert got[1:] == want[1:], f"{kwargs}: (num_inference_steps, warnings) {got[1:]} != {want[1:]}"


# --- hypothesis: every draw equals diffusers ---------------------------------------------------------------------

@st.composite
def valid_lcm_args(draw):
    T = draw(st.integers(1, 2000), label="T")
    orig = draw(st.integers(1, T), label="original_inference_steps")
    strength = draw(st.one_of(st.just(1.0), st.floats(0.02, 1.0)), label="strength")
    L = int(orig * strength)
    if L < 1:
        strength, L = 1.0, orig
    n = draw(st.integers(1, L), label="num_inference_steps")
    return T, dict(num_inference_steps=n, original_inference_steps=orig, strength=strength)


@given(valid_lcm_args())
def test_timesteps_equal_diffusers_valid(args):
    """Every valid (T, original steps, n, strength) gives diffusers' timesteps exactly, descending on the grid."""
    T, kwargs = args
    assert_same_outcome(T, kwargs)
    ts = ref.timesteps(LCMConfig(num_train_timesteps=T), **kwargs)
    k = T // kwargs["original_inference_steps"]
    assert np.all(np.diff(ts) < 0) and np.all((ts + 1) % k == 0) and ts[0] < T and ts[-1] >= k - 1


@given(T=st.integers(1, 120), orig=st.one_of(st.none(), st.integers(-3, 150)),
       n=st.one_of(st.none(), st.integers(-3, 150)),
       strength=st.one_of(st.floats(-0.5, 2.0), st.sampled_from([0.0, 1.0, 1.5, math.nan, math.inf])))
def test_timesteps_any_draw_same_outcome(T, orig, n, strength):
    """Any draw, valid or not: the same timesteps, or an exception of the class diffusers raises."""
    assert_same_outcome(T, dict(num_inference_steps=n, original_inference_steps=orig, strength=strength))


@st.composite
def custom_args(draw):
    T = draw(st.integers(2, 1200), label="T")
    orig = draw(st.integers(1, min(T, 60)), label="original_inference_steps")
    k = T // orig
    on_grid = st.integers(1, orig).map(lambda i: i * k - 1)
    values = st.one_of(on_grid, st.integers(-3, T + 2))
    ts = draw(st.lists(values, min_size=0, max_size=8), label="timesteps")
    if draw(st.booleans(), label="sorted"):
        ts = sorted(set(ts), reverse=True)
    strength = draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)), label="strength")
    return T, dict(timesteps=ts, original_inference_steps=orig, strength=strength)


@given(custom_args())
def test_custom_timesteps_same_outcome(args):
    """Custom timesteps: same truncated schedule, same num_inference_steps (quirk 1), same number of warnings, or
    the same exception class."""
    T, kwargs = args
    assert_same_outcome(T, kwargs)


def test_real_configs_sweep_equal_diffusers():
    """Exhaustive over the configs pipelines use: T = 1000, orig 50 / 30 / 4 (SSD-1B), img2img strengths, every n."""
    for orig in (50, 30, 4):
        for strength in (1.0, 0.9, 0.75, 0.6, 0.58, 0.5, 0.35, 0.3, 0.29, 0.2):
            for n in range(1, int(orig * strength) + 1):
                assert_same_outcome(1000, dict(num_inference_steps=n, original_inference_steps=orig,
                                               strength=strength))


# --- docs/design.md §4 examples, worked out by hand --------------------------------------------------------------------

@pytest.mark.parametrize("n,want", [(1, [999]), (2, [999, 499]), (4, [999, 759, 499, 259]),
                                    (8, [999, 879, 759, 639, 499, 379, 259, 139])])
def test_design_examples_orig50(n, want):
    """T = 1000, orig = 50 (k = 20): origin (1..50)·20 − 1 picked at floor(i·50/n)."""
    assert ref.timesteps(LCMConfig(), n).tolist() == want
    assert_same_outcome(1000, dict(num_inference_steps=n))


def test_design_example_orig30_never_999():
    """orig = 30: k = 1000 // 30 = 33, so the grid tops out at 30·33 − 1 = 989, for every n."""
    for n in range(1, 31):
        assert ref.timesteps(LCMConfig(), n, original_inference_steps=30)[0] == 989


def test_design_example_strength_half():
    """strength 0.5: origin (1..25)·20 − 1, n = 4 picks indices 0, 6, 12, 18 of it reversed."""
    assert ref.timesteps(LCMConfig(), 4, strength=0.5).tolist() == [499, 379, 259, 139]


@pytest.mark.parametrize("strength,length,want", [(0.58, 28, [559, 419, 279, 139]), (0.29, 14, [279, 219, 139, 79])])
def test_strength_truncation_ties(strength, length, want):
    """int(50·strength) truncates the product of binary64 values: 0.58 is 0.57999…, 50·0.58 = 28.999… → 28 (a
    port that rounds up or to nearest gets 29); 50·0.29 = 14.4999… → 14 (ceil: 15)."""
    assert int(50 * strength) == length and math.ceil(50 * strength) == length + 1
    assert Fraction(strength) * 50 < length + 1
    assert ref.timesteps(LCMConfig(), 4, strength=strength).tolist() == want
    assert_same_outcome(1000, dict(num_inference_steps=4, strength=strength))


@pytest.mark.parametrize("n", [3, 6, 7, 9, 11, 13])
@pytest.mark.parametrize("orig,strength", [(50, 1.0), (30, 1.0), (100, 1.0), (50, 0.58), (50, 0.29), (50, 0.6)])
def test_selection_ties_equal_diffusers(n, orig, strength):
    """n whose i·L/n land on or next to integers: floor(linspace) decided as NumPy does, equal to diffusers."""
    if n <= int(orig * strength):
        assert_same_outcome(1000, dict(num_inference_steps=n, original_inference_steps=orig, strength=strength))


def test_selection_follows_numpy_not_exact_arithmetic():
    """L = 30, n = 22: NumPy's linspace puts index 11 at 14.999… (exact: 15); the reference must take 14."""
    L, n = 30, 22
    assert math.floor(np.linspace(0, L, n, endpoint=False)[11]) == 14 and Fraction(11 * L, n) == 15
    ts = ref.timesteps(LCMConfig(), n, strength=0.6)           # origin length int(50·0.6) = 30
    origin_desc = (np.arange(1, 31) * 20 - 1)[::-1]
    assert ts[11] == origin_desc[14] != origin_desc[15]
    assert_same_outcome(1000, dict(num_inference_steps=n, strength=0.6))


# --- errors ----------------------------------------------------------------------------------------------------

ERRORS = [
    (dict(), ValueError),                                                    # neither n nor timesteps
    (dict(num_inference_steps=4, timesteps=[999, 499]), ValueError),         # both
    (dict(num_inference_steps=4, original_inference_steps=1001), ValueError),  # orig > T
    (dict(num_inference_steps=1001, original_inference_steps=1000), ValueError),  # n > T
    (dict(num_inference_steps=51), ValueError),                              # len(origin) // n < 1
    (dict(num_inference_steps=10, strength=0.1), ValueError),                # worded in terms of strength
    (dict(num_inference_steps=60, strength=1.5), ValueError),                # n > orig (reachable with s > 1)
    (dict(num_inference_steps=0), ZeroDivisionError),
    (dict(num_inference_steps=4, original_inference_steps=0), ZeroDivisionError),
    (dict(timesteps=[]), IndexError),
    (dict(timesteps=[499, 999]), ValueError),                                # not descending
    (dict(timesteps=[999, 999]), ValueError),
    (dict(timesteps=[1000, 499]), ValueError),                               # timesteps[0] >= T
]


@pytest.mark.parametrize("kwargs,exc", ERRORS, ids=[str(k) for k, _ in ERRORS])
def test_errors_same_class_as_diffusers(kwargs, exc):
    """Each documented error: diffusers raises exc, and so does the reference (diffusers profile)."""
    assert diffusers_outcome(1000, kwargs) is exc
    with pytest.raises(exc):
        ref.set_timesteps(LCMConfig(), **kwargs)


def test_strength_above_one_reproduced():
    """Quirk 4: strength 1.5 is not checked and gives timesteps ≥ T, as in diffusers (strict refuses it)."""
    ts = ref.timesteps(LCMConfig(), 4, strength=1.5)
    assert ts[0] == 75 * 20 - 1 >= 1000
    assert_same_outcome(1000, dict(num_inference_steps=4, strength=1.5))


# --- custom timesteps ------------------------------------------------------------------------------------------

def test_custom_timesteps_with_strength_quirk1():
    """Quirk 1: strength truncates the custom schedule from the front but num_inference_steps stays at its full
    length (diffusers profile); strict records the truncated length."""
    kwargs = dict(timesteps=[999, 759, 499, 259], strength=0.5)
    with pytest.warns(LCMRefWarning, match=r"\[759\] are not on the origin grid"):   # grid ends at 499 now
        s = ref.set_timesteps(LCMConfig(), **kwargs)
    assert s.timesteps.tolist() == [499, 259] and s.num_inference_steps == 4
    with pytest.warns(LCMRefWarning):
        assert ref.set_timesteps(LCMConfig(), **kwargs, profile="strict").num_inference_steps == 2
    assert_same_outcome(1000, kwargs)


@pytest.mark.parametrize("kwargs,n_warnings", [
    (dict(timesteps=[999, 759, 499, 259]), 0),
    (dict(timesteps=[998, 759, 499]), 1),               # first is not T − 1
    (dict(timesteps=[998, 759, 499], strength=0.9), 0),  # ... only checked at strength 1
    (dict(timesteps=[999, 760, 499, 258]), 1),          # off-grid values (one warning naming both)
    (dict(timesteps=list(range(999, 939, -1))), 2),     # off-grid and longer than original_inference_steps
])
def test_custom_timesteps_warnings(kwargs, n_warnings):
    """Custom timesteps warn (LCMRefWarning), never raise, where diffusers logs a warning; as many as diffusers."""
    assert ref_outcome(1000, kwargs)[2] == n_warnings
    assert_same_outcome(1000, kwargs)


def test_custom_float_timesteps_truncated():
    """Quirk 2 (diffusers profile): float custom timesteps are truncated to int64, as np.array(..., int64) does."""
    with pytest.warns(LCMRefWarning):
        assert ref.timesteps(LCMConfig(), timesteps=[999.9, 500.5, 0.7]).tolist() == [999, 500, 0]
    assert_same_outcome(1000, dict(timesteps=[999.9, 500.5, 0.7]))


# --- DDIM-family spacing -----------------------------------------------------------------------------------------

def ddim_timesteps(T, n, mode, offset):
    s = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=mode, steps_offset=offset)
    s.set_timesteps(n)
    return s.timesteps.numpy()


@given(T=st.integers(1, 1500), data=st.data(), mode=st.sampled_from(["leading", "linspace", "trailing"]),
       offset=st.integers(0, 3))
def test_spaced_timesteps_equal_ddim(T, data, mode, offset):
    """ref.spaced_timesteps equals DDIMScheduler.set_timesteps in all three modes, steps_offset included."""
    n = data.draw(st.integers(1, T), label="n")
    got = ref.spaced_timesteps(T, n, mode, offset)
    assert got.dtype == np.int64 and got.tolist() == ddim_timesteps(T, n, mode, offset).tolist()


@pytest.mark.parametrize("T,n,mode,want", [
    (1000, 4, "leading", [751, 501, 251, 1]),          # (0..3)·250 reversed, + steps_offset 1
    (1000, 4, "linspace", [999, 666, 333, 0]),          # round(999·i/3)
    (1000, 4, "trailing", [999, 749, 499, 249]),        # round(1000 − 250 i) − 1
    (7, 6, "trailing", [6, 5, 4, 2, 1, 0]),             # np.arange(7, 0, −7/6)[3] = 3.4999… → 3 (exact: 3.5 → 4)
    (15, 13, "trailing", [14, 13, 12, 11, 9, 8, 7, 6, 5, 4, 2, 1, 0, -1]),   # arange's float step gives n + 1 points
])
def test_spaced_timesteps_examples(T, n, mode, want):
    """Hand-derived schedules, including two where NumPy's float64 evaluation differs from exact arithmetic."""
    assert ref.spaced_timesteps(T, n, mode, steps_offset=1).tolist() == want
    assert ddim_timesteps(T, n, mode, 1).tolist() == want


@given(orig=st.integers(1, 200), m=st.integers(1, 20))
def test_lcm_grid_is_trailing_when_divisible(orig, m):
    """When T % orig == 0 the LCM origin grid (1..orig)·k − 1 equals the trailing grid with orig points."""
    T = orig * m
    full = ref.timesteps(LCMConfig(num_train_timesteps=T), orig, original_inference_steps=orig)
    assert full.tolist() == ref.spaced_timesteps(T, orig, "trailing").tolist()


def test_lcm_grid_differs_from_trailing_when_not_divisible():
    """Counterexample: T = 1000, orig = 30 starts at 989 (k = 33), trailing at 999."""
    full = ref.timesteps(LCMConfig(), 30, original_inference_steps=30)
    trailing = ref.spaced_timesteps(1000, 30, "trailing")
    assert full[0] == 989 and trailing[0] == 999


# --- spacing= opt-in ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,want", [
    # leading grid (0..49)·20 + 1 reversed = 981, 961, ...; picks 0, 12, 25, 37
    (dict(spacing="leading", steps_offset=1), [981, 741, 481, 241]),
    # linspace grid round(999·j/49); picks j = 49, 37, 24, 12
    (dict(spacing="linspace"), [999, 754, 489, 245]),
    # trailing, orig 30: round(1000 − 100i/3) − 1 at i = 0, 7, 15, 22
    (dict(spacing="trailing", orig=30), [999, 766, 499, 266]),
    # ... strength 0.5 keeps the lowest 15 points (i = 15..29); picks 0, 3, 7, 11 of them
    (dict(spacing="trailing", orig=30, strength=0.5), [499, 399, 266, 132]),
])
def test_spacing_opt_in_examples(kwargs, want):
    """spacing= builds the original_inference_steps-point grid with that DDIM mode, then selects as diffusers."""
    kwargs = dict(kwargs)
    cfg = LCMConfig(steps_offset=kwargs.pop("steps_offset", 0))
    orig = kwargs.pop("orig", 50)
    assert ref.timesteps(cfg, 4, original_inference_steps=orig, **kwargs).tolist() == want


def test_spacing_none_ignores_timestep_spacing():
    """diffusers ignores timestep_spacing and steps_offset (inert): so does spacing=None."""
    base = ref.timesteps(LCMConfig(), 4)
    for mode in ("leading", "linspace", "trailing"):
        assert ref.timesteps(LCMConfig(timestep_spacing=mode, steps_offset=1), 4).tolist() == base.tolist()


def test_spacing_trailing_equals_lcm_when_divisible():
    """With T % orig == 0, spacing='trailing' reproduces the default LCM schedule for every n."""
    for n in range(1, 51):
        assert ref.timesteps(LCMConfig(), n, spacing="trailing").tolist() == ref.timesteps(LCMConfig(), n).tolist()


def test_spacing_bad_value():
    """An unknown spacing is refused, naming the parameter."""
    with pytest.raises(ValueError, match="spacing"):
        ref.timesteps(LCMConfig(), 4, spacing="uniform")


def test_previous_timestep():
    """previous_timestep: the next entry of the schedule, −1 after the last (diffusers >= 0.32)."""
    sched = [999, 759, 499, 259]
    assert [ref.previous_timestep(sched, t) for t in sched] == [759, 499, 259, -1]
    d = diffusers.LCMScheduler()
    d.set_timesteps(4)
    if Version(diffusers.__version__) < Version("0.32"):
        pytest.skip("diffusers < 0.32 computes previous_timestep as t − T // n (quirk 6)")
    assert [int(d.previous_timestep(t)) for t in d.timesteps] == [759, 499, 259, -1]
