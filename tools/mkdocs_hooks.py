"""mkdocs hooks of the documentation site (mkdocs.yml ``hooks:``).

- The repository's README becomes the page ``readme.md`` (not copied into ``docs/``).
- The executed report pages: ``reports/*.md`` and ``reports/figures/*.png``, as ``make report`` wrote them into the
  repository's ``reports/``, become the site's ``reports/`` section at build time (they are not copied into
  ``docs/``). A link of theirs that leaves the site (``../notebooks/x.ipynb``) becomes its plain text, so the pages
  build wherever the report generator points such links.
- The design document's numbered headings get stable anchors, the section number itself (``#s9.1``, ``#s6.Q3``,
  and ``#s8.B6`` for a numbered sub-point), so a citation links to its section however the title changes.
- A subscript in prose (``origin[::-(L//n)][:n]`` in a generated table) is escaped, so that ``][:n]`` is not read
  as a reference link (an unresolved cross-reference fails the strict build).
- Every citation of the design document (``docs/design.md §9.1`` or ``§9.1``, in page text and in the API pages'
  docstrings) becomes a link to that anchor.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

from lcm_ref import design_doc

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
#: the nav entry that the report pages fill (mkdocs.yml: ``- Reports: reports/README.md``)
REPORTS_INDEX = "reports/README.md"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
TAG = re.compile(r"(<[^>]*>)")
#: elements whose text is never linked: links themselves, code blocks, headings (a section's own number)
SKIP = {"a", "pre", "script", "style", "title", "textarea", "h1", "h2", "h3", "h4", "h5", "h6"}


def report_pages() -> list[str]:
    """The report pages, in the order of the index page's table (then any other page, by name)."""
    index = (REPORTS / "README.md").read_text(encoding="utf-8")
    listed = [t for _, _, t in LINK.findall(index) if t.endswith(".md") and (REPORTS / t).is_file()]
    others = sorted(p.name for p in REPORTS.glob("*.md") if p.name not in listed and p.name != "README.md")
    return [f"reports/{name}" for name in dict.fromkeys(listed + others)]


def on_config(config):
    """Fill the ``Reports`` nav entry with the index and every report page."""
    for i, item in enumerate(config.nav or []):
        if isinstance(item, dict) and item.get("Reports") == REPORTS_INDEX:
            config.nav[i] = {"Reports": [{"Index": REPORTS_INDEX}] + report_pages()}
    return config


def on_files(files, config):
    """Add the repository's README (as ``readme.md``), the report pages and their figures (from ``reports/``)."""
    files.append(File.generated(config, "readme.md", abs_src_path=str(ROOT / "README.md")))
    sources = [REPORTS / "README.md", *(ROOT / p for p in report_pages()), *sorted(REPORTS.glob("figures/*.png"))]
    for src in sources:
        files.append(File.generated(config, src.relative_to(ROOT).as_posix(), abs_src_path=str(src)))
    return files


def outside_links_as_text(markdown: str, page, files) -> str:
    """``[text](target)`` -> ``text`` where a relative target is no file of the site (``../notebooks/x.ipynb``)."""
    here = posixpath.dirname(page.file.src_uri)

    def keep_or_text(m):
        bang, text, target = m.groups()
        path = target.split("#", 1)[0]
        if bang or not path or re.match(r"^[a-z]+:", path):
            return m[0]
        resolved = posixpath.normpath(posixpath.join(here, path))
        if resolved.startswith("..") or (files.get_file_from_path(resolved) is None
                                          and files.get_file_from_path(resolved + "/index.md") is None
                                          and files.get_file_from_path(resolved + "/README.md") is None):
            return text
        return m[0]

    return LINK.sub(keep_or_text, markdown)


def design_anchors(markdown: str) -> str:
    """``## §9.1 Title`` -> ``## §9.1 Title {#s9.1}``; ``- **B6 ...`` in §8 -> an anchor ``s8.B6`` before it."""
    out, major = [], None
    for line in markdown.splitlines():
        if (m := design_doc.HEADING.match(line)):
            major = m["number"].split(".")[0]
            line = f"{line.rstrip()} {{#{design_doc.anchor(m['number'])}}}"
        elif major and (m := design_doc.SUBPOINT.match(line)):
            line = f'- <a id="{design_doc.anchor(major + "." + m["label"])}"></a>' + line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


SUBSCRIPT = re.compile(r"(?<=[\w)\]])\[")
CODE_SPAN = re.compile(r"(`+).*?\1")


def escape_subscripts(markdown: str) -> str:
    """``a[i][:n]`` -> ``a\\[i]\\[:n]`` outside code spans and fenced blocks (a link's ``[`` follows a space or
    punctuation, never a word, ``)`` or ``]``)."""
    out, fence = [], None
    for line in markdown.splitlines():
        opener = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence:
            fence = None if opener and opener[1][0] == fence[0] and len(opener[1]) >= len(fence) else fence
        elif opener:
            fence = opener[1]
        else:
            pos, parts = 0, []
            for m in CODE_SPAN.finditer(line):
                parts += [SUBSCRIPT.sub(r"\\[", line[pos:m.start()]), m[0]]
                pos = m.end()
            line = "".join(parts) + SUBSCRIPT.sub(r"\\[", line[pos:])
        out.append(line)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown, page, config, files):
    markdown = escape_subscripts(markdown)
    if page.file.src_uri == "design.md":
        return design_anchors(markdown)
    if page.file.src_uri == "readme.md":
        # the README links the docs as a repository file (docs/guide/index.md); in the site docs/ is the root
        markdown = LINK.sub(lambda m: m[0] if m[1] or not m[3].startswith("docs/") else f"[{m[2]}]({m[3][5:]})",
                            markdown)
    if page.file.src_uri.startswith("reports/") or page.file.src_uri == "readme.md":
        return outside_links_as_text(markdown, page, files)
    return markdown


def link_citations(html: str, design_url: str) -> str:
    """Every design citation in the text of ``html`` (outside links, code blocks and headings) as a link to
    ``design_url#sN``."""
    parts, depth, out = TAG.split(html), [], []
    for part in parts:
        if part.startswith("<"):
            m = re.match(r"<(/?)([a-zA-Z0-9]+)", part)
            if m and m[2].lower() in SKIP and not part.endswith("/>"):
                if m[1]:
                    if depth and depth[-1] == m[2].lower():
                        depth.pop()
                else:
                    depth.append(m[2].lower())
            out.append(part)
            continue
        if depth or "§" not in part:
            out.append(part)
            continue
        pos, text = 0, []
        for c in design_doc.citations(part):
            text += [part[pos:c.start()], f'<a class="design-ref" href="{design_url}#{design_doc.anchor(c["number"])}">'
                     f'{c[0]}</a>']
            pos = c.end()
        out.append("".join(text) + part[pos:])
    return "".join(out)


def on_page_content(html, page, config, files):
    design = files.get_file_from_path("design.md")
    url = "" if page.file is design else design.url_relative_to(page.file)
    return link_citations(html, url)
