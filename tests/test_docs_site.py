"""The documentation site: every design citation is a link to its section's anchor (that the cited sections
exist is tests/test_design_refs.py's); the docstrings are Markdown (what mkdocstrings renders them as); the built site has no broken internal link; and a real
browser (headless Chromium, Debian's package, which `make test` and .ci/run install) renders the guide and a report
page with their figures.

The site is built here with ``mkdocs build --strict`` (the ``docs`` extra) into a temporary folder, served over
HTTP on 127.0.0.1, and driven through the Chrome DevTools protocol (websocket-client, the ``dev`` extra).
"""

import ast
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import mkdocs_hooks  # noqa: E402  (the site's hook, tools/mkdocs_hooks.py)


def test_citations_link_to_their_anchor_and_nothing_else():
    """The hook links `docs/design.md §9.1` and a bare `§6.Q3` to their anchors, and leaves alone a report page's
    own section (`timestep_scaling §4`), headings, code blocks and existing links."""
    html = ('<p>see docs/design.md §9.1 and §6.Q3; budget (§8.B6). timestep_scaling §4</p><h2>§9 The oracle</h2>'
            '<pre><code>§8</code></pre><a href="x">§7</a>')
    out = mkdocs_hooks.link_citations(html, "../design/")
    assert '<a class="design-ref" href="../design/#s9.1">docs/design.md §9.1</a>' in out
    assert '<a class="design-ref" href="../design/#s6.Q3">§6.Q3</a>' in out
    assert '<a class="design-ref" href="../design/#s8.B6">§8.B6</a>' in out
    assert out.count("design-ref") == 3 and "timestep_scaling §4</p><h2>§9 The oracle</h2><pre><code>§8</code>" in out


def test_subscripts_are_escaped_outside_code():
    """`origin[::-(L//n)][:n]` in prose is not a reference link; links, images and code spans stay as they are."""
    md = "selects origin[::-(L//n)][:n] and `a[i][j]`, [a link](x.md), ![img](f.png)\n```\nb[0][1]\n```\n"
    out = mkdocs_hooks.escape_subscripts(md)
    assert out == ("selects origin\\[::-(L//n)]\\[:n] and `a[i][j]`, [a link](x.md), ![img](f.png)\n```\nb[0][1]\n"
                   "```\n")


def list_glued_to_paragraph(doc: str) -> bool:
    """A list item right under a paragraph line, with no blank line between: Markdown reads it as the
    paragraph's text ("... - a - b")."""
    lines, item = doc.splitlines(), re.compile(r"^\s*[-*] ")
    indent = lambda line: len(line) - len(line.lstrip())      # noqa: E731
    return any(item.match(b) and a.strip() and not item.match(a) and indent(a) <= indent(b)
               for a, b in zip(lines, lines[1:]))


def test_docstrings_are_markdown():
    """mkdocstrings renders the docstrings as Markdown (mkdocs.yml): no reST-only table rules or `::` literal
    markers, which would show raw on the API pages, and no list glued to the paragraph above it."""
    bad = []
    for path in ROOT.glob("lcm_ref/**/*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                if re.search(r"^\s*={3,}(\s+={3,})+\s*$|::$", doc, re.M) or list_glued_to_paragraph(doc):
                    bad.append(f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}")
    assert not bad
    assert list_glued_to_paragraph("Two cases:\n- a\n- b") and not list_glued_to_paragraph("Two cases:\n\n- a\n  b\n- c")


# ---------------------------------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built with --strict into a temporary folder."""
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


class Page(HTMLParser):
    """The ids (anchors) of an HTML page and its links (href, src)."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.links = set(), []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None and tag != "link" or (key == "href" and tag == "link"
                                                                  and attrs.get("rel") == "stylesheet"):
                self.links.append(attrs[key])


def test_site_has_no_broken_internal_link(site):
    """Every href/src of every page of the built site that stays inside it leads to a file, and a #fragment to an
    id on that page (the design citations, the report figures, the guide's links included)."""
    pages = {p: Page(p.read_text(encoding="utf-8")) for p in site.rglob("*.html") if p.name != "404.html"}
    assert {"guide/index.html", "design/index.html", "readme/index.html", "reports/index.html",
            "reports/paper_figures/index.html"} <= {str(p.relative_to(site)) for p in pages}
    broken, checked = [], 0
    for path, page in pages.items():
        base = "/" + str(path.relative_to(site))
        for link in page.links:
            parts = urlsplit(urljoin(base, link))
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = site / unquote(parts.path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else Page(target.read_text(encoding="utf-8")).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no such anchor)")
    assert checked > 1000 and not broken, broken[:20]
    design_links = sum(p.links.count("../../design/#s9.1") for p in pages.values())
    assert design_links > 5          # citations of §9.1 from pages one level down (guide, reports, API) are links


# ------------------------------------------------------------------------------------------------ the browser


def chromium():
    """The Chromium executable, or a skip (a failure where LCM_REF_REQUIRE_BROWSER is set, as in CI)."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("LCM_REF_REQUIRE_BROWSER"):
            pytest.fail("Chromium is not installed (LCM_REF_REQUIRE_BROWSER is set): apt-get install chromium")
        pytest.skip("Chromium is not installed: `make test` installs it as root with apt-get (Debian's chromium)")
    return exe


class Browser:
    """Headless Chromium on a blank profile, one tab, driven over the DevTools protocol."""

    def __init__(self, exe, profile):
        websocket = pytest.importorskip("websocket", reason="websocket-client (the dev extra) is not installed")
        self.proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                      "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, deadline = None, time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m and m[1]
        assert url, f"Chromium did not start (exit {self.proc.poll()})"
        # keep reading its log, so that a full pipe never blocks it
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        port = urlsplit(url).port
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                tabs = json.loads(r.read())
            tabs = [t for t in tabs if t.get("type") == "page"]
            if tabs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert tabs, "Chromium has no tab"
        self.ws = websocket.create_connection(tabs[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def open(self, url):
        """Load ``url`` and wait until the page and every image in it have loaded (or failed)."""
        self.call("Page.navigate", url=url)
        return self.evaluate("""new Promise(done => {
            const settled = () => Promise.all([...document.images].map(i => i.complete ? null :
                new Promise(r => { i.onload = r; i.onerror = r; })));
            const go = () => settled().then(() => done({
                url: location.href,
                h1: document.querySelector('h1') ? document.querySelector('h1').textContent.replace('¶', '').trim() : null,
                headings: [...document.querySelectorAll('h2, h3')].map(h => h.textContent.replace('¶', '').trim()),
                images: [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]),
                designLinks: document.querySelectorAll('a[href*="design/#s"]').length}));
            if (document.readyState === 'complete' && location.href !== 'about:blank') go();
            else window.addEventListener('load', go);
        })""")

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on 127.0.0.1 (its base URL)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_guide_renders_in_a_browser(served, browser):
    """The guide's first page renders in Chromium: its title and its sections are in the DOM, and its design
    citations are links."""
    page = browser.open(served + "guide/")
    assert page["h1"] == "Check your scheduler in five minutes", page
    assert {"1. Install", "3. Read the report", "4. A failure, and how to replay it",
            "6. In your test suite: the pytest plugin"} <= set(page["headings"]), page["headings"]
    assert page["designLinks"] >= 5


@pytest.mark.parametrize("name", ["paper_figures", "reference_vs_gpu"])
def test_report_page_renders_with_its_figures(served, browser, name):
    """A report page, taken from reports/ at build time, renders in Chromium with its title, and every figure it
    shows loads (naturalWidth > 0): as many as the page's markdown links."""
    source = (ROOT / "reports" / f"{name}.md").read_text(encoding="utf-8")
    title = source.splitlines()[0].lstrip("# ").strip()
    page = browser.open(served + f"reports/{name}/")
    assert page["h1"] and page["h1"].replace("`", "") == title.replace("`", ""), page["h1"]
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", source)
    assert figures and len(page["images"]) == len(figures), page["images"]
    assert all(width > 0 for _, width in page["images"]), page["images"]
