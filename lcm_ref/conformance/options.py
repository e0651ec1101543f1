"""The conformance suite's command line options, as a pytest plugin:

    pytest --pyargs lcm_ref.conformance --lcm-impl=pkg.mod:MyLCM --lcm-dtype=float64

(loaded through lcm_ref's ``pytest11`` entry point when lcm_ref is installed)

(the same as the LCM_REF_* environment variables of ``lcm_ref.conformance``, which win when no option is given)."""

from lcm_ref.conformance import OPTIONS


def pytest_addoption(parser):
    group = parser.getgroup("lcm_ref conformance")
    for name, (env, default) in OPTIONS.items():
        group.addoption(f"--lcm-{name.replace('_', '-')}", default=None,
                        help=f"same as ${env} (default: {default or 'none'})")
