"""Documents named in code, tests and docs exist in the repository, and every ``docs/design.md §N`` they cite
is a section of it (a reader who has only the repository can follow every pointer)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("mirage_jax", "tests", "benchmarks", "configs", "launch", "docs")
DOCUMENT = re.compile(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b")
SECTION_CITE = re.compile(r"docs/design\.md ((?:§\d+(?:, )?)+)")


def _texts():
    files = [ROOT / "README.md", ROOT / "setup.py"]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".sh", ".sbatch")]
    return {path.relative_to(ROOT): path.read_text(encoding="utf-8") for path in files}


def test_named_documents_exist():
    missing = sorted({f"{name}: {doc}" for name, text in _texts().items() for doc in DOCUMENT.findall(text)
                      if not (ROOT / doc).is_file() and not (ROOT / name).parent.joinpath(doc).is_file()})
    assert not missing, "documents named but not in the repository:\n" + "\n".join(missing)


def test_design_sections_cited_exist():
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", (ROOT / "docs/design.md").read_text(), re.M)}
    assert sections == set(range(1, len(sections) + 1))
    cited = {int(n) for text in _texts().values() for group in SECTION_CITE.findall(text)
             for n in re.findall(r"\d+", group)}
    assert cited and cited <= sections, f"cited sections {sorted(cited - sections)} are not in docs/design.md"
