"""The documentation the code cites exists: every docs/method.md section number and datasets.md section
name cited in the sources is a heading of ``docs/``, and the links between the guides resolve."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = [
    p
    for folder in ("src", "tests", "benchmarks", "scripts", "configs", "docs")
    for p in sorted((ROOT / folder).rglob("*"))
    if p.suffix in {".py", ".yaml", ".md"}
]


def _headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.lower())
    return kept.replace(" ", "-")


def _citations(pattern: str) -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in re.finditer(pattern, line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group(1)))
    return found


def test_method_sections_cited_in_the_code_exist():
    sections = {m.group(1) for h in _headings(DOCS / "method.md") if (m := re.match(r"(\d+)\. ", h))}
    citations = _citations(r"method\.md §(\d+)") + _citations(r"method\.md §\d+(?:,| and) §(\d+)")
    assert citations, "no method.md citation found; the pattern no longer matches the sources"
    missing = [(where, n) for where, n in citations if n not in sections]
    assert not missing, f"method.md has no section for: {missing}"


def test_datasets_sections_cited_in_the_code_exist():
    headings = set(_headings(DOCS / "datasets.md"))
    citations = _citations(r'datasets\.md, "([^"]+)"')
    assert citations, "no datasets.md citation found; the pattern no longer matches the sources"
    missing = [(where, name) for where, name in citations if name not in headings]
    assert not missing, f"datasets.md has no heading for: {missing}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")) + [ROOT / "README.md"], ids=lambda p: p.name)
def test_links_between_guides_resolve(page):
    for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)", page.read_text()):
        linked = (page.parent / target).resolve()
        assert linked.is_file(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            anchors = {_anchor(h) for h in _headings(linked)}
            assert anchor in anchors, f"{page.name} links to {target}#{anchor}, which has no such heading"
