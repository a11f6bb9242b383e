"""Every ```python block in docs/*.md and README.md runs (blocks of one page share a namespace),
so the documentation cannot drift from the code."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = BLOCK.findall(page.read_text())
    monkeypatch.chdir(tmp_path)  # pages may write files
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # report which block of which page broke
            raise AssertionError(f"{page.name}, python block {i} failed: {type(e).__name__}: {e}") from e


def test_no_path_of_our_machines_in_what_we_ship():
    """Docs, code and committed results name data as the user's copy, never our folders."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    offenders = []
    for name in tracked.stdout.splitlines():
        path = root / name
        if path.suffix not in {".py", ".md", ".json", ".toml", ".yml", ".txt"} or name.startswith("tests/"):
            continue
        if "/work/" in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(name)
    assert not offenders, offenders


def test_benchmarks_page_is_what_the_results_say():
    """docs/benchmarks.md is generated from benchmarks/results/*.json; a result added or changed
    without re-running the summary would leave the page behind."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks" / "summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    assert (ROOT / "docs" / "benchmarks.md").read_text() == summarize.page(), \
        "docs/benchmarks.md is out of date: run python benchmarks/summarize.py"
