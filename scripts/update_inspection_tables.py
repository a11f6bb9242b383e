"""Rewrite the inspection tables in docs/inspection.md from the code (run after adding a model).

    .venv/bin/python scripts/update_inspection_tables.py
"""

import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_lvm.tasks.inspect_task import markdown_tables  # noqa: E402

START, END = "<!-- inspection-tables:start -->\n", "<!-- inspection-tables:end -->\n"


def main() -> None:
    torch.set_num_threads(1)
    page = ROOT / "docs" / "inspection.md"
    text = page.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: markers {START.strip()} ... {END.strip()} not found")
    page.write_text(pattern.sub(lambda _: START + markdown_tables() + "\n" + END, text))
    print(f"updated {page}")


if __name__ == "__main__":
    main()
