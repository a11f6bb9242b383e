"""Which KL-control remedy keeps the sentence VAE's code, at the showcase's budget (issue 21).

Trains, with the options of ``pyro-lvm train sentence_vae`` (defaults: the showcase, on the
embedded Wikipedia sample's simple sentences), the LSTM language model once and the VAE once
per remedy; reports test NLL (importance sampling), KL, active units and MI; and applies the
rule that picks the task's default remedy: **the best NLL among the rows that keep a code
(KL >= 3 nats and AU >= 5)**. The PTB counterpart is ``benchmarks/sentence_vae_ptb.py``.

Rows: lm, vae (no remedy), vae+anneal, vae+anneal+wdrop (Bowman et al.: annealing and word
dropout), vae+free-bits, vae+free-bits+wdrop, vae+aggressive (He et al.: aggressive encoder
training with the same annealing). Word dropout keeps 75% of the decoder's input words.

    python benchmarks/sentence_vae_remedies.py                       # every row at the showcase's settings
    python benchmarks/sentence_vae_remedies.py --rows lm vae+free-bits -- --epochs 4
    python benchmarks/sentence_vae_remedies.py --render benchmarks/results/sentence_vae_remedies.json
    python benchmarks/sentence_vae_remedies.py --merge a.json b.json --out all.json   # rows run in parallel

Options after ``--`` go to the task (``pyro-lvm train sentence_vae --help``) and apply to every row.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_lvm.tasks import sentence_vae as task

WORD_KEEP = 0.75  # word dropout's keep rate, as in the PTB table
ROWS = {  # name: (model kind, remedy, word-keep rate)
    "lm": ("lm", "none", 1.0),
    "vae": ("vae", "none", 1.0),
    "vae+anneal": ("vae", "anneal", 1.0),
    "vae+anneal+wdrop": ("vae", "anneal", WORD_KEEP),
    "vae+free-bits": ("vae", "free-bits", 1.0),
    "vae+free-bits+wdrop": ("vae", "free-bits", WORD_KEEP),
    "vae+aggressive": ("vae", "anneal+aggressive", 1.0),
}
KEEPS_A_CODE = {"kl": 3.0, "active_units": 5}
NAMES = {"vae": "VAE"}


def task_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pyro-lvm train sentence_vae")
    task.add_arguments(p)
    return p.parse_args(argv)


def run_row(name: str, base: argparse.Namespace, folder: Path) -> dict:
    kind, remedy, keep = ROWS[name]
    args = argparse.Namespace(**{**vars(base), "models": [kind], "remedy": remedy, "out": str(folder / name),
                                 "word_keep": keep})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation and unknown-word notes: the same for every row
        metrics = task.main(args)
    m = metrics["models"][kind]
    history = json.loads((folder / name / kind / "history.json").read_text())["epochs"]
    row = {"remedy": remedy, "word_keep": m["config"]["word_keep"], "epochs": m["epochs"],
           "train_seconds": m["train_seconds"], "train_cpu_seconds": m["train_cpu_seconds"],
           "eval_seconds": m["eval_seconds"], "seconds": round(time.perf_counter() - t0, 1),
           "best_valid_loss": m["best_valid_loss"], "test": m["test"],
           "history": [{k: e[k] for k in ("epoch", "train_loss", "valid_loss", "kl_weight", "aggressive") if k in e}
                       for e in history],
           "samples": metrics["text"].get(f"{kind}_samples"), "homotopy": metrics["text"]["homotopy"].get("VAE")}
    print(f"[{name}] {json.dumps({k: row[k] for k in ('epochs', 'train_seconds', 'eval_seconds')})} "
          f"{json.dumps({k: v for k, v in m['test'].items() if k in ('nll', 'kl', 'active_units', 'mi')})}",
          file=sys.stderr, flush=True)
    return {**row, "data": metrics["data"]}


def rows_from_run(run: Path, base: argparse.Namespace) -> dict:
    """Rows of a finished ``pyro-lvm train sentence_vae`` run with the same options (the
    showcase trains the LM and a VAE with its remedy: no need to train them twice)."""
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    ignore = {"out", "progress", "remedy", "word_keep", "models", "resume"}
    mine = {k: v for k, v in vars(base).items() if k not in ignore}
    theirs = {k: v for k, v in config.get("options", {}).items() if k not in ignore}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--from-run {run}: the run was made with other options ({diff})")
    rows = {}
    for kind, m in metrics["models"].items():
        key = (kind, m["remedy"], m["config"].get("word_keep", 1.0))
        name = next((n for n, r in ROWS.items() if r == key), None)
        if name is None:
            continue
        history = json.loads((run / kind / "history.json").read_text())["epochs"]
        rows[name] = {"remedy": m["remedy"], "word_keep": key[2], "epochs": m["epochs"],
                      "train_seconds": m["train_seconds"], "train_cpu_seconds": m["train_cpu_seconds"],
                      "eval_seconds": m["eval_seconds"], "best_valid_loss": m["best_valid_loss"], "test": m["test"],
                      "history": [{k: e[k] for k in ("epoch", "train_loss", "valid_loss", "kl_weight") if k in e}
                                  for e in history],
                      "samples": metrics["text"].get(f"{kind}_samples"),
                      "homotopy": metrics["text"]["homotopy"].get(NAMES.get(kind, "")), "from_run": str(run)}
    return rows


def keeps_a_code(test: dict) -> bool:
    return test.get("kl", 0.0) >= KEEPS_A_CODE["kl"] and (test.get("active_units") or 0) >= KEEPS_A_CODE["active_units"]


def choose(rows: dict) -> dict:
    """The issue's rule: best test NLL among the VAE rows that keep a code."""
    kept = {k: r["test"]["nll"] for k, r in rows.items() if k != "lm" and keeps_a_code(r["test"])}
    return {"rule": f"best test NLL among VAE rows with KL >= {KEEPS_A_CODE['kl']} nats and "
                    f"AU >= {KEEPS_A_CODE['active_units']}",
            "keep_a_code": sorted(kept, key=kept.get), "chosen": min(kept, key=kept.get) if kept else None}


def markdown(result: dict) -> str:
    lines = ["| row | test NLL | PPL | KL | MI | AU | rec. acc. | keeps a code | train s | eval s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p=2: "–" if v is None else f"{v:.{p}f}" if isinstance(v, float) else str(v)  # noqa: E731
    for name, r in result["rows"].items():
        t = r["test"]
        code = "–" if name == "lm" else ("yes" if keeps_a_code(t) else "no")
        lines.append(f"| {name} | {fmt(t['nll'])} | {fmt(t['ppl'], 1)} | {fmt(t.get('kl'), 3)} | {fmt(t.get('mi'))} | "
                     f"{fmt(t.get('active_units'), 0)} | {fmt(t.get('reconstruction_accuracy'), 3)} | {code} | "
                     f"{r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    c = result["choice"]
    lines.append(f"\nRule: {c['rule']}. Keep a code: {', '.join(c['keep_a_code']) or 'none'}. Chosen: {c['chosen']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    p.add_argument("--out", default="benchmarks/results/sentence_vae_remedies.json")
    p.add_argument("--render", default=None, help="print the table of a results JSON and exit")
    p.add_argument("--merge", nargs="+", default=None, help="results JSONs of the same settings: one table, one choice")
    p.add_argument("--from-run", nargs="+", default=[], type=Path,
                   help="finished task runs with the same options whose models stand for their rows")
    opts = p.parse_args(own)
    if opts.render:
        print(markdown(json.loads(Path(opts.render).read_text())))
        return {}
    if opts.merge:
        parts = [json.loads(Path(f).read_text()) for f in opts.merge]
        if any(p["task_options"] != parts[0]["task_options"] for p in parts):
            raise ValueError("--merge: the files were run with different task options")
        rows = {k: r for name in ROWS for p in parts for k, r in p["rows"].items() if k == name}
        result = {**parts[0], "command": [p["command"] for p in parts], "rows": rows, "choice": choose(rows)}
        Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
        print(markdown(result))
        return result
    torch.set_num_threads(opts.threads)
    base = task_args(rest)
    reused = {k: r for run in opts.from_run for k, r in rows_from_run(run, base).items() if k in opts.rows}
    data = json.loads((opts.from_run[0] / "metrics.json").read_text())["data"] if opts.from_run else None
    with tempfile.TemporaryDirectory() as tmp:
        trained = {name: run_row(name, base, Path(tmp)) for name in opts.rows if name not in reused}
    for r in trained.values():
        data = r.pop("data")
    rows = {name: reused.get(name) or trained[name] for name in opts.rows}
    result = {"benchmark": "sentence_vae_remedies", "command": "python benchmarks/sentence_vae_remedies.py " + " ".join(argv),
              "task_options": {k: v for k, v in vars(base).items() if k not in ("out", "progress")},
              "data": data, "rows": rows, "choice": choose(rows), "threads": opts.threads,
              "notes": "NLL in nats per sentence (VAE: importance sampling with --samples proposals); PPL = "
                       "exp(total NLL / (words + <eos>)); KL analytic, per sentence; AU: Var_x E_q[z_u|x] > 0.01",
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
