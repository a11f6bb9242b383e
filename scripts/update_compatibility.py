"""Run the conformance zoo (every capability on every pair of tests/test_zoo.py) and write
docs/compatibility.md from the outcomes; the zoo's tests fail until the page matches the code.

    .venv/bin/python scripts/update_compatibility.py
"""

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_zoo():
    spec = importlib.util.spec_from_file_location("zoo", ROOT / "tests" / "test_zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    sys.modules["zoo"] = zoo  # dataclasses look their module up by name
    spec.loader.exec_module(zoo)
    return zoo


def main() -> None:
    torch.set_num_threads(1)
    zoo = load_zoo()
    outcomes = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(zoo.CASES):
            for j, capability in enumerate(zoo.CAPABILITIES):
                cell_dir = Path(tmp) / f"{i}_{j}"
                cell_dir.mkdir()
                t = time.perf_counter()
                outcomes[(name, capability)] = zoo.run_cell(name, capability, cell_dir)
                if "-v" in sys.argv:
                    print(f"  {capability}: {outcomes[(name, capability)][0]} ({time.perf_counter() - t:.2f} s)")
            print(f"{name}: {sum(outcomes[(name, c)][0] == 'works' for c in zoo.CAPABILITIES)}/"
                  f"{len(zoo.CAPABILITIES)} work ({time.perf_counter() - start:.0f} s)", flush=True)
    zoo.PAGE.write_text(zoo.matrix_markdown(outcomes))
    print(f"wrote {zoo.PAGE}")


if __name__ == "__main__":
    main()
