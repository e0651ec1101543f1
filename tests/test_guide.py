"""The user guide (docs/guide/*.md) shows what lcm_ref does now: every command of its ``console`` blocks runs and
prints the excerpt shown under it, and every ``python`` block runs and prints what its comments say.

An excerpt line matches an output line when it equals it with each ``…`` standing for any text; a line that is
only ``…`` stands for lines left out; the excerpt's lines must appear in the output in their order. In a
``python`` block, the comment after a ``print(...)`` (or on the line below it) is that print's output. ``bash``
blocks (the install) are not run here: tests/test_wheel.py installs a wheel and runs from it.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = sorted((ROOT / "docs" / "guide").glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
PROGRAMS = {"lcm-ref": [sys.executable, "-m", "lcm_ref.cli"],
            "pytest": [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]}

pytestmark = pytest.mark.slow


def blocks(lang):
    """(page:line, text) of every fenced block of language ``lang`` in the guide."""
    found = []
    for page in GUIDE:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m[1] == lang:
                found.append((f"{page.name}:{text[:m.start()].count(chr(10)) + 1}", m[2]))
    return found


def console_commands():
    """(where, command line, excerpt lines) for every ``$ `` line of the guide's console blocks."""
    out = []
    for where, text in blocks("console"):
        for chunk in re.split(r"^(?=\$ )", text, flags=re.M):
            if chunk.startswith("$ "):
                line, *excerpt = chunk.rstrip("\n").split("\n")
                out.append((where, line[2:], excerpt))
    return out


def matches(excerpt, output_lines):
    """The first excerpt line not found (in order) in ``output_lines``, or None when every line is."""
    pos = 0
    for want in excerpt:
        if want.strip() in ("…", ""):
            continue
        pattern = re.compile(".*".join(re.escape(p) for p in want.rstrip().split("…")))
        while pos < len(output_lines) and not pattern.fullmatch(output_lines[pos].rstrip()):
            pos += 1
        if pos == len(output_lines):
            return want
        pos += 1
    return None


def run_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "120"}


def test_the_guide_has_commands_and_snippets():
    """The parsing below finds the guide's commands and snippets (so the tests that run them cannot pass empty)."""
    assert len(console_commands()) >= 6 and len(blocks("python")) >= 5
    programs = {next(w for w in shlex.split(c) if "=" not in w) for _, c, _ in console_commands()}
    assert programs <= set(PROGRAMS), programs


@pytest.mark.parametrize("where,command,excerpt", console_commands(), ids=[c[:60] for _, c, _ in console_commands()])
def test_guide_command_prints_its_excerpt(where, command, excerpt, tmp_path):
    """Each command of the guide runs (exit code as the page says: 1 where it shows a failing concern, else 0) and
    prints its excerpt."""
    words = shlex.split(command)
    env = run_env()
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    argv = PROGRAMS[words[0]] + words[1:]
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = (r.stdout + r.stderr).splitlines()
    shows_failure = any(line.startswith("FAIL (") or "| FAIL |" in line for line in excerpt)
    assert r.returncode == (1 if shows_failure else 0), f"{where}: {command}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    missing = matches(excerpt, out)
    assert missing is None, f"{where}: `{command}` does not print\n  {missing}\nit printed:\n" + "\n".join(out)


def expected_prints(code):
    """What the snippet's prints should print, in order: the comment after (or below) each ``print(`` line."""
    lines, want = code.splitlines(), []
    for i, line in enumerate(lines):
        if "print(" not in line:
            continue
        comment = line.split("  # ", 1)[1] if "  # " in line else None
        if comment is None and i + 1 < len(lines) and lines[i + 1].startswith("# "):
            comment = lines[i + 1][2:]
        want.append(comment)
    return want


@pytest.mark.parametrize("where,code", blocks("python"), ids=[w for w, _ in blocks("python")])
def test_guide_snippet_runs_and_prints_what_it_says(where, code, tmp_path):
    """Each python snippet of the guide runs as shown, and each print's output is the one its comment gives."""
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=run_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{where}:\n{r.stderr[-3000:]}"
    want = expected_prints(code)
    got = r.stdout.splitlines()
    assert len(got) == len(want), f"{where}: {len(want)} prints, output:\n{r.stdout}"
    for w, g in zip(want, got):
        assert w is None or matches([w], [g]) is None, f"{where}: printed\n  {g}\nthe page says\n  {w}"
