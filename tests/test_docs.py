"""The docs site: every page in mkdocs.yml's nav exists, links from README.md and between the pages
resolve (anchors included), the README parts the pages include are still marked, and
``mkdocs build --strict`` succeeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
SNIPPET = re.compile(r'^--8<-- "(?P<file>[^":]+):(?P<section>[\w-]+)"\s*$')


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml uses mkdocs' ``!relative`` tag; its value does not matter here."""


_MkdocsLoader.add_constructor("!relative", lambda loader, node: loader.construct_scalar(node))


def nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)

    def walk(items: object) -> Iterator[str]:
        if isinstance(items, str):
            yield items
        elif isinstance(items, list):
            for item in items:
                yield from walk(item)
        elif isinstance(items, dict):
            for value in items.values():
                yield from walk(value)

    return list(walk(config["nav"]))


def slugify(heading: str) -> str:
    """Python-Markdown's toc slug (mkdocs' default) of a heading's text: inline code, emphasis and
    link syntax dropped, NFKD to ASCII, punctuation removed, lowercase, spaces to '-'."""
    text = LINK.sub(lambda m: m.group("text"), heading)
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def markdown_lines(path: Path) -> list[str]:
    """A page's lines, with the README parts it includes (pymdownx.snippets) expanded."""
    lines = []
    for line in path.read_text().split("\n"):
        match = SNIPPET.match(line)
        if match:
            lines += snippet_section(ROOT / match["file"], match["section"])
        else:
            lines.append(line)
    return lines


def snippet_section(path: Path, name: str) -> list[str]:
    text = path.read_text()
    start, end = f"--8<-- [start:{name}]", f"--8<-- [end:{name}]"
    assert text.count(start) == 1 and text.count(end) == 1, (
        f"{path.name} must mark the section {name!r} once with {start!r} ... {end!r}"
    )
    return text.split(start, 1)[1].split(end, 1)[0].split("\n")[1:-1]


def outside_code(lines: list[str]) -> Iterator[str]:
    fence = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            yield re.sub(r"`[^`]*`", "", line) if not line.startswith("#") else line


def anchors(path: Path) -> set[str]:
    return {
        slugify(line.lstrip("#").strip())
        for line in outside_code(markdown_lines(path))
        if re.match(r"#{1,6} ", line)
    }


def relative_links(path: Path) -> Iterator[tuple[str, str]]:
    """(file part, anchor) of every relative Markdown link on the page, code excluded."""
    for line in outside_code(markdown_lines(path)):
        for match in LINK.finditer(line):
            target = match["target"]
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                continue
            file, _, anchor = target.partition("#")
            yield file, anchor


def broken_links(page: Path, base: Path) -> list[str]:
    broken = []
    for file, anchor in relative_links(page):
        target = (base / file).resolve() if file else page
        where = f"{page.relative_to(ROOT)}: link to {file}#{anchor}"
        if not target.is_file():
            broken.append(f"{where}: {target.relative_to(ROOT)} does not exist")
        elif target != README and not target.is_relative_to(DOCS):
            broken.append(f"{where}: a file outside docs/ breaks mkdocs; use a code span")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{where}: no heading with the slug {anchor!r} in {target.name}")
    return broken


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page is listed twice in mkdocs.yml's nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav lists pages that do not exist under docs/: {missing}"
    on_disk = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert on_disk == set(pages), f"pages not in the nav: {sorted(on_disk - set(pages))}"


def test_readme_links_into_docs_resolve_with_their_anchors() -> None:
    links = [(file, anchor) for file, anchor in relative_links(README) if file.startswith("docs/")]
    assert links, "README.md links no docs page"
    assert not broken_links(README, ROOT)


def test_readme_lists_every_docs_page() -> None:
    linked = {file.removeprefix("docs/") for file, _ in relative_links(README)}
    unlisted = [page for page in nav_pages() if page not in linked]
    assert not unlisted, f"README.md's Documentation section does not link: {unlisted}"


def test_links_between_docs_pages_resolve() -> None:
    broken = [b for page in sorted(DOCS.rglob("*.md")) for b in broken_links(page, page.parent)]
    assert not broken, "\n".join(broken)


def test_included_readme_sections_are_marked() -> None:
    included = [
        (match["file"], match["section"])
        for page in DOCS.rglob("*.md")
        for match in map(SNIPPET.match, page.read_text().split("\n"))
        if match
    ]
    assert ("README.md", "quick-start") in included
    for file, section in included:
        assert any(line.strip() for line in snippet_section(ROOT / file, section)), section


def test_slugify_follows_mkdocs() -> None:
    toc = pytest.importorskip("markdown.extensions.toc", reason="Python-Markdown not installed")
    for heading in [
        "Which strategy? The NB201 benchmark",
        "HAT: hardware-aware transformer search, one supernet, a model per latency budget",
        "Failures",
    ]:
        assert slugify(heading) == toc.slugify(heading, "-")
    code_in_heading = "ENAS: an RL controller (`strategy=enas`)"
    assert slugify(code_in_heading) == "enas-an-rl-controller-strategyenas"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    install = "pip install -e '.[docs]'"
    pytest.importorskip("mkdocs", reason=f"mkdocs is not installed ({install})")
    pytest.importorskip("material", reason=f"mkdocs-material is not installed ({install})")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in nav_pages():
        html = "index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html"
        assert (site / html).is_file(), html
    # The quick start is included from README.md, not copied.
    assert "nas-vision-digits" in (site / "getting-started/index.html").read_text()
