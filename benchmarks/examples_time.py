"""How long each sequence/topic example takes with its defaults, run as a user runs it.

    python benchmarks/examples_time.py      # -> benchmarks/results/examples_time.json

Runs ``python examples/NAME.py --out TMP`` for each example in a subprocess with one torch
thread (``OMP_NUM_THREADS=1``) and records wall and CPU seconds (the child's user + system
time) and the example's last printed lines. On a shared machine wall time depends on the load;
CPU seconds much less so. The examples' docstrings quote the CPU seconds.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("prodlda", "hmm_chorales", "pos_induction", "symbol_sequences", "sentence_vae")


def time_example(name: str, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out)],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": f"python examples/{name}.py", "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "last_lines": result.stdout.replace(str(out), "OUT").strip().splitlines()[-4:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "examples_time.json"))
    args = parser.parse_args()
    path = Path(args.json)
    # --examples re-times some and keeps the others' entries
    results = json.loads(path.read_text())["examples"] if path.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.examples:
            results[name] = time_example(name, Path(tmp) / name)
            print(name, {k: v for k, v in results[name].items() if k != "last_lines"}, flush=True)
    report = {"benchmark": "examples_time", "torch_threads": 1, "cpu_count": os.cpu_count(),
              "load_average_end": [round(x, 2) for x in os.getloadavg()],
              "note": "2 CPU cores shared with other jobs: wall seconds include waiting",
              "examples": {name: results[name] for name in EXAMPLES if name in results}}
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
