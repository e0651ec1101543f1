"""The reference's layout (docs/design.md §1): it stands on NumPy and mpmath alone, and its package exposes every
public name of its modules."""

import ast
import subprocess
import sys
from pathlib import Path

import lcm_ref.reference as ref

PACKAGE = Path(ref.__file__).parent


def test_reference_imports_neither_torch_nor_diffusers():
    code = ("import sys, lcm_ref.reference, lcm_ref.reference.exact; "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_exported_name_resolves_and_none_is_private():
    assert all(not name.startswith("_") for name in ref.__all__)
    assert all(hasattr(ref, name) for name in ref.__all__)
    assert callable(ref.step) and callable(ref.sample)    # the functions, not the modules


def test_no_private_name_is_imported_between_modules():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"]
                assert not private, f"{path.name} imports {private} from .{node.module}"
