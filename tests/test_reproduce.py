"""``pyro-lvm reproduce``: the registry, its budgets (the full one is the benchmark's committed
command), the printed table, and small runs of every entry on the embedded data."""

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_lvm.cli import main
from pyro_lvm.reproduce import BUDGETS, ENTRIES, listing, load, reproduce

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# What each entry's full budget reproduces: the committed result file of that command.
FULL_RESULTS = {"vae-mnist": "vae_mnist_quality.json", "collapse-synthetic": "collapse_synthetic.json",
                "collapse-he": "collapse_synthetic_he.json", "ptb-table": "sentence_vae_ptb.json",
                "prodlda-20ng": "topic_20ng.json", "vae-overhead": "vae_overhead.json",
                "sentence-vae-speed": "sentence_vae_speed.json", "ddp-throughput": "ddp_throughput.json",
                "gumbel-mnist": "discrete_mnist_gumbel_long.json", "hmm-speed": "hmm_speed.json",
                "jsb-used-keys": "hmm_quality_jsb_family_used_keys.json",
                "jsb-all-keys": "hmm_quality_jsb_family_full.json",
                "pos-masc": "hmm_quality_pos_emissions_embedding.json",
                "estimator-variance": "estimator_variance.json"}

# Options that shrink a quick run to seconds (appended after the budget's, so they win).
TINY = {
    "vae-mnist": ["--budget-minutes", "0.02", "--max-epochs", "2", "--samples", "4"],
    "collapse-synthetic": ["--n-train", "100", "--n-valid", "20", "--n-test", "20", "--epochs", "1", "--samples", "3"],
    "collapse-he": ["--n-train", "100", "--n-valid", "20", "--n-test", "20", "--epochs", "1", "--samples", "3"],
    "ptb-table": ["--subset", "60", "--eval-subset", "10", "--embed-dim", "8", "--hidden-dim", "8", "--z-dim", "2",
                  "--samples", "2", "--rows", "lm", "vae", "vae+free-bits"],
    "prodlda-20ng": ["--prodlda-epochs", "2", "--topics", "4", "--samples", "2", "--sklearn-iter", "1"],
    "vae-overhead": ["--rounds", "1", "--steps", "2", "--batch-size", "8"],
    "sentence-vae-speed": ["--rounds", "1", "--batches", "2", "--batch-size", "4", "--vocab", "200",
                           "--embed-dim", "8", "--hidden-dim", "8", "--z-dim", "2"],
    "ddp-throughput": ["--vae-images", "64", "--vae-epochs", "1", "--sentences", "32", "--rounds", "1"],
    "gumbel-mnist": ["--steps", "30", "--timing-rounds", "1", "--latents", "4", "--classes", "3", "--eval-samples", "2"],
    "hmm-speed": ["--states", "4", "--rounds", "1", "--markov-rounds", "1"],
    "jsb-used-keys": ["--family-variants", "hmm"],
    "jsb-all-keys": ["--family-variants", "nnhmm"],
    "pos-masc": ["--pos-sentences", "60"],
    "estimator-variance": ["--n", "20", "--repeats", "10", "--m2-classes", "3", "--m2-batch", "8", "--m2-steps", "1",
                           "--m2-rounds", "1"],
}


def test_every_entry_has_three_budgets_that_its_parser_accepts(tmp_path):
    assert set(TINY) == set(ENTRIES) == set(FULL_RESULTS)
    for name in ENTRIES:
        entry = load(name)
        assert entry.name == name and set(entry.budgets) == set(BUDGETS)
        for budget in BUDGETS:
            for data_file in entry.data_files:
                (tmp_path / data_file).mkdir(exist_ok=True)
            options, used = entry.options(budget, tmp_path)
            args = entry.parser().parse_args(options)  # a typo in a budget fails here
            assert isinstance(args, argparse.Namespace)
        assert entry.budgets["quick"].minutes <= min(3, entry.budgets["full"].minutes)  # quick: minutes


def _namespace(entry, command: str, data_dir: str) -> argparse.Namespace:
    """The options of a benchmark command line as the entry's parser reads them."""
    words = shlex.split(command)
    assert words[:2] == ["python", entry.script], command
    args = entry.parser().parse_args([w.replace(data_dir, "DATA") for w in words[2:]])
    args.out = None  # where a result is written is no setting
    return args


@pytest.mark.parametrize("name", list(ENTRIES))
def test_full_budget_is_the_committed_benchmark_command(name):
    """Parsed, the full budget's options equal those of the command that wrote the committed
    results (the data path aside), and its expected time is that run's."""
    entry = load(name)
    committed = json.loads((RESULTS / FULL_RESULTS[name]).read_text())
    ours = _namespace(entry, entry.command("full", data="DATA/.."), "DATA/..")
    theirs = _namespace(entry, committed["command"], "../shared/data")
    if entry.data is not None:  # our data path is DIR/<name>, theirs ../shared/data/<name> (or the folder)
        ours.data = theirs.data = None
    assert vars(ours) == vars(theirs)
    seconds = {"vae-mnist": lambda r: r["train_cpu_seconds"] + r["eval_cpu_seconds"],
               "collapse-synthetic": lambda r: r["wall_seconds"], "collapse-he": lambda r: r["wall_seconds"],
               "ptb-table": lambda r: sum(x["train_seconds"] + x["eval_seconds"] for x in r["rows"].values()),
               "prodlda-20ng": lambda r: sum(s["train_seconds"] for row in (r["rows"][0], r["rows"][-1])
                                             for s in row["by_seed"]),
               # the speed rows record medians, not totals: every variant's median times its timed
               # calls (the rounds and the warm-up round)
               "vae-overhead": lambda r: (sum(r["ms_per_step"].values()) / 1000 * int(_setup(r, r"(\d+) steps per round"))
                                          * (int(_setup(r, r"(\d+) interleaved rounds")) + 1)),
               "sentence-vae-speed": lambda r: ((int(_setup(r, r"(\d+) interleaved rounds")) + 1)
                                                * sum(int(_setup(r, r"\((\d+) tokens\)")) / speed
                                                      for speed in r["tokens_per_second"].values())),
               "ddp-throughput": lambda r: sum((x["total_s"] or x["train_s"]) * (x["rounds"] + 1) for x in r["rows"]),
               "gumbel-mnist": lambda r: sum(x["train_cpu_s"] for x in r["results"]),
               "estimator-variance": lambda r: r["cpu_seconds"],
               "jsb-used-keys": lambda r: sum(x["cpu_seconds"] for x in r["runs"].values()),
               "jsb-all-keys": lambda r: sum(x["cpu_seconds"] for x in r["runs"].values()),
               # that run recorded wall time only (one torch thread: its CPU time is at most that)
               "pos-masc": lambda r: sum(x["wall_seconds"] for x in r["runs"].values()),
               # every variant's median times its timed rounds, then the length scaling (same rounds)
               "hmm-speed": lambda r: (sum(b["ms_per_pass"][v] * b["rounds"][v] for b in r["by_states"]
                                           for v in b["ms_per_pass"])
                                       + sum(r["length_scaling"]["ms_per_pass_by_steps"].values())
                                       * r["by_states"][0]["rounds"]["handwritten"]) / 1000,
               }[name](committed)
    assert entry.budgets["full"].minutes == pytest.approx(seconds / 60, rel=0.25)


def _setup(result: dict, pattern: str) -> str:
    """A number from a speed benchmark's ``setup`` sentence."""
    return re.search(pattern, result["setup"]).group(1)


MEASURED = [(n, b) for n in ENTRIES for b in ("quick", "standard") if load(n).budgets[b].minutes is not None]


def test_every_quick_budget_has_a_measured_time():
    assert {n for n, b in MEASURED if b == "quick"} == set(ENTRIES)


@pytest.mark.parametrize("name, budget", MEASURED)
def test_expected_minutes_were_measured_with_these_options(name, budget):
    """The quick and standard times in the registry are the CPU time (the wall time for an entry
    whose clock is "wall") of a committed run of `pyro-lvm reproduce NAME --budget B --data DIR
    --out benchmarks/results/reproduce/NAME_B.json` with the budget's options as they are now."""
    entry = load(name)
    row = json.loads((RESULTS / "reproduce" / f"{name}_{budget}.json").read_text())
    options = [*entry.fixed, *entry.budgets[budget].options]
    assert row["options"][:len(options)] == options and row["budget"] == budget
    seconds = row["wall_seconds" if entry.clock == "wall" else "cpu_seconds"]
    assert entry.budgets[budget].minutes == pytest.approx(seconds / 60, rel=0.25, abs=0.1)


def test_list_names_every_entry_and_its_times(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ENTRIES:
        line = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert line.count(" min") + line.count("not measured") == 3
    assert out.strip() == listing().strip()


@pytest.mark.parametrize("name", list(ENTRIES))
def test_quick_runs_on_embedded_data(name, tmp_path):
    row = reproduce(name, "quick", data=None, extra=TINY[name], out=tmp_path / "row.json")
    entry = load(name)
    assert row["data"] == (entry.own_data if entry.data is None
                           else "embedded data (not comparable with the anchor)")
    assert row["ours"] == entry.ours(row["result"]) and any(c.isdigit() for c in row["ours"])
    assert row["full_command"].startswith(f"python {entry.script}")
    saved = json.loads((tmp_path / "row.json").read_text())
    assert saved["ours"] == row["ours"] and saved["options"][-len(TINY[name]):] == TINY[name]
    if name == "ddp-throughput":  # its training processes' CPU time is counted too
        assert row["child_cpu_seconds"] > 0 and row["cpu_seconds"] >= row["child_cpu_seconds"]


def _headline_files() -> set[str]:
    """The result files of the headline table of docs/benchmarks.md (benchmarks/summarize.py)."""
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks" / "summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    return {row[0] for row in summarize.HEADLINES}


def test_list_covers_every_headline_row():
    """Every row of the headline table is the full budget of an entry (FULL_RESULTS is checked
    against the entries' commands above)."""
    covered = {Path(name).stem for name in FULL_RESULTS.values()}
    assert _headline_files() - covered == set()


@pytest.mark.parametrize("name", [n for n in ENTRIES if load(n).data is not None])
def test_benchmark_without_data_says_what_to_pass(name):
    """No default data path (ours exist only on our machines): the benchmark's run names what --data needs."""
    entry = load(name)
    args = entry.parser().parse_args([*entry.fixed, *entry.budgets["quick"].options])
    with pytest.raises(ValueError, match=r"--data is missing: pass the path of .*docs/data\.md"):
        entry.run(args)


def test_pos_masc_needs_both_files(tmp_path, capsys):
    (tmp_path / "masc_tagged.zip").touch()
    assert main(["reproduce", "pos-masc", "--budget", "standard", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-lvm: error: {tmp_path / 'ptb.zip'} not found: --data DIR must hold your copy of "
                          "masc_tagged.zip and ptb.zip")
    assert "masc_tagged.zip + ptb.zip" in listing()
    assert load("pos-masc").command("full", "DATA").endswith("--pos-seeds 0 1 2 --data DATA")


def test_pos_parts_on_the_toy_corpus():
    """The other POS parts of benchmarks/hmm_quality.py run the same code offline (--dataset toy)."""
    from pyro_lvm.reproduce import pos_masc

    args = load("pos-masc").parser().parse_args(["--part", "pos", "--dataset", "toy", "--quick", "--pos-seeds", "0",
                                                 "--pos-sentences", "40"])
    result = pos_masc.run(args)
    assert set(result["runs"]) == {"words/seed0", "lower_shape5/seed0"}
    for r in result["runs"].values():
        assert r["source"] == "toy" and r["data"]["sentences"] == 40 and r["iterations"] == 2
        assert 0 < r["many_to_one"] <= 1 and r["cpu_seconds"] > 0
    with pytest.raises(ValueError, match="--dataset music21 is for --part jsb-family"):
        pos_masc.run(load("pos-masc").parser().parse_args(["--part", "pos", "--dataset", "music21"]))
    # The neural emission's MASC configurations (Adam on the exact marginal likelihood), shrunk:
    # the first 8,000 sentences' and all of MASC's (lowercased, rare words as spelling classes),
    # with the word embeddings from random and from word2vec.
    args = load("pos-masc").parser().parse_args(["--part", "pos-emissions", "--pos-emissions", "neural",
                                                 "neural_lower_shape5", "neural_lower_shape5_vectors", "--dataset",
                                                 "toy", "--quick", "--pos-seeds", "0", "--pos-sentences", "40"])
    runs = pos_masc.run(args)["runs"]
    for run in (runs["neural/seed0"], runs["neural_lower_shape5/seed0"], runs["neural_lower_shape5_vectors/seed0"]):
        assert run["emission"] == "neural" and run["trainer"] == "adam" and run["iterations"] == 2
        assert run["data"]["sentences"] == 40 and 0 < run["many_to_one"] <= 1 and run["log_lik_per_token"] < 0
    lowered = runs["neural_lower_shape5/seed0"]
    assert lowered["data"]["vocab"] < runs["neural/seed0"]["data"]["vocab"]
    assert "--lowercase" in lowered["args"] and lowered["args"].count("--lr") == 1
    assert lowered["args"][lowered["args"].index("--chain-lr") + 1] == "0.003"
    started = runs["neural_lower_shape5_vectors/seed0"]
    assert "--neural-vectors" in started["args"] and started["word_vectors"]["vocabulary_lookup"]
    assert "word_vectors" not in lowered or lowered["word_vectors"] is None


def test_cli_prints_the_table(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["reproduce", "collapse-synthetic", "--out", str(out), "--options", *TINY["collapse-synthetic"]]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "| reproduction | budget | data | ours | published | target |"
    row = json.loads(out.read_text())
    assert f"**{row['ours']}**" in lines[2] and "He et al. 2019" in lines[2]
    assert f"Full budget: `{load('collapse-synthetic').command('full')}`" in text


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "vae-mnist", "--budget", "standard"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvm: error: the standard budget of vae-mnist needs your copy of binarized_mnist")
    assert main(["reproduce", "ptb-table", "--data", str(tmp_path)]) == 2
    assert f"{tmp_path / 'ptb.zip'} not found" in capsys.readouterr().err
    assert main(["reproduce", "no-such"]) == 2
    assert "unknown reproduction 'no-such'; known: vae-mnist" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    assert "pass --list" in capsys.readouterr().err
    assert main(["reproduce", "collapse-he", "--options", "--no-such-option"]) == 2
    assert "bad benchmark options for collapse-he: " in capsys.readouterr().err


def test_benchmark_script_and_reproduce_give_the_same_numbers(tmp_path):
    """One code path: the script and `reproduce` with the same options (the full budget adds
    none to collapse-synthetic's) agree to the last digit."""
    options = ["--seeds", "0", *TINY["collapse-synthetic"], "--methods", "vae", "anneal"]
    out = tmp_path / "script.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "collapse_synthetic.py"), *options, "--out", str(out)],
                   check=True, capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    script = json.loads(out.read_text())
    ours = reproduce("collapse-synthetic", "full", extra=options)["result"]
    strip = lambda per_seed: {s: {m: {k: v for k, v in r.items() if k != "train_seconds"} for m, r in ms.items()}  # noqa: E731
                              for s, ms in per_seed.items()}
    assert strip(json.loads(json.dumps(ours["per_seed"]))) == strip(script["per_seed"])


def test_quick_on_your_data(shared_data, tmp_path):
    """With --data, quick reads the standard files (here: binarized MNIST, a tiny run)."""
    row = reproduce("vae-mnist", "quick", data=shared_data,
                    extra=[*TINY["vae-mnist"], "--max-epochs", "1", "--eval-size", "50"])
    assert row["data"] == "your copy of binarized_mnist"
    assert row["result"]["data"].startswith("binarized-mnist") and row["result"]["num_evaluated"] == 50


def test_estimator_variance_counts_only_the_unbiased_intervals():
    """The headline's interval check reads the registry: estimators unbiased for the ELBO (or
    exact) count, an interval away from 0 counts as not covered, and the biased relaxations and
    VIMCO (unbiased for its own S-sample bound) are left out."""
    from pyro_lvm.reproduce.estimator_variance import _headline, unbiased_covered

    rows = [{"estimator": "enumerate", "bias_ci": [0.0, 0.0]}, {"estimator": "rloo", "bias_ci": [0.5, 2.0]},
            {"estimator": "disarm", "bias_ci": [0.0, 3.0]}, {"estimator": "gumbel", "bias_ci": [0.0, 1.0]},
            {"estimator": "vimco", "bias_ci": [4.0, 5.0]}]
    assert unbiased_covered({"rows": rows}) == {"enumerate": True, "rloo": False, "disarm": True}
    result = {"mixture": {"K=10": {"unbiased_within_interval": unbiased_covered({"rows": rows})}},
              "m2_speed": {"K=10": {"speedup_gumbel_vs_enumerate": 4.31},
                           "K=100": {"speedup_gumbel_vs_enumerate": 38.9}}}
    assert _headline(result) == ("M2 step, Gumbel-softmax vs enumeration: 4.3x at K = 10, 38.9x at K = 100; "
                                 "mixture: 2 of 3 unbiased (estimator, K) bias intervals contain 0")


def test_estimator_variance_quick_measures_both_parts(tmp_path):
    """The quick path runs the mixture against the exact gradient and the M2 timing offline."""
    row = reproduce("estimator-variance", "quick", extra=TINY["estimator-variance"])
    result = row["result"]
    assert list(result["mixture"]) == ["K=10"] and list(result["m2_speed"]) == ["K=3"]
    mixture = result["mixture"]["K=10"]
    assert set(mixture["unbiased_within_interval"]) == {"enumerate", "score-function", "score-function-baseline"}
    assert mixture["comparison"]["exact_available"] and mixture["plots"] == []  # reproduce draws no figures
    assert mixture["unbiased_within_interval"]["enumerate"]  # the exact gradient itself: bias exactly 0
    speed = result["m2_speed"]["K=3"]
    assert speed["speedup_gumbel_vs_enumerate"] > 0 and set(speed["ms_per_step"]) == {
        "enumerate", "gumbel", "handwritten-enumerate"}
    assert row["anchor"].startswith("Jang et al. 2017 (ICLR), Sec. 4.3")
    assert "could not be retrieved" in row["anchor"]
