"""The sequence and topic examples run as scripts with tiny arguments, and say true things.

Each example is its own readable program over the public API (examples/prodlda.py,
hmm_chorales.py, pos_induction.py, symbol_sequences.py, sentence_vae.py); these tests run it in
a subprocess as a user would and check what it prints and writes.
"""

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("prodlda", "hmm_chorales", "pos_induction", "symbol_sequences", "sentence_vae")


def run_example(name: str, *argv: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *argv], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*(-?[0-9.]+)", text)
    assert match, f"{label!r} not in the output:\n{text}"
    return float(match.group(1))


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_use_only_public_names(name):
    """What a reader copies from an example must keep working: package-level public names only."""
    source = (ROOT / "examples" / f"{name}.py").read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree) and "python examples/" in ast.get_docstring(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_lvm"):
            assert not node.module.startswith("pyro_lvm.tasks"), node.module
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            assert not any(alias.name.startswith("_") for alias in node.names), ast.dump(node)
    assert len(source.splitlines()) <= 120  # a page or two


def test_prodlda_example_prints_topics_and_perplexity(tmp_path):
    pytest.importorskip("gensim")
    out = run_example("prodlda", "--epochs", "1", "--samples", "3", "--hidden", "8", "--topics", "3",
                      "--out", str(tmp_path))
    assert number_after("test perplexity:", out) > 1
    assert number_after("test perplexity:", out) <= number_after("ELBO bound", out) * 1.01
    topic_lines = [line for line in out.splitlines() if re.match(r"\s+\d+\s+[-+][0-9.]+\s+\w", line)]
    assert len(topic_lines) == 3 and all(len(line.split()) == 12 for line in topic_lines)
    assert all(-1 <= float(line.split()[1]) <= 1 for line in topic_lines)
    for figure in ("coherence_per_topic", "training_curve"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 1000


def test_hmm_example_trains_by_em_and_by_fit(tmp_path):
    pytest.importorskip("music21")
    out = run_example("hmm_chorales", "--limit", "6", "--states", "3", "--iterations", "4", "--out", str(tmp_path))
    nll = {split: number_after(f"{split} NLL per step:", out) for split in ("train", "valid", "test")}
    # Each frame is 88 keys: below the 88 log 2 nats of a fair coin per key, once trained.
    assert all(0 < v < 88 * math.log(2) for v in nll.values())
    for figure in ("viterbi_roll", "transition_matrix"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 1000
    out = run_example("hmm_chorales", "--limit", "4", "--states", "2", "--trainer", "adam", "--iterations", "1",
                      "--out", str(tmp_path / "adam"))
    assert number_after("test NLL per step:", out) > 0


def test_pos_example_induces_the_toy_tags(tmp_path):
    out = run_example("pos_induction", "--sentences", "150", "--states", "7", "--iterations", "30",
                      "--out", str(tmp_path))
    assert number_after("many-to-one accuracy", out) > 0.6
    assert 0 < number_after("one-to-one", out) <= number_after("many-to-one accuracy", out)
    tagged = out.splitlines()[-2].split()
    assert len(tagged) > 3 and all(token.split("/")[1] in {"DT", "JJ", "NN", "VB", "IN", "PRP", "."}
                                   for token in tagged)
    assert (tmp_path / "state_tag_counts.png").stat().st_size > 1000


def test_symbol_sequence_example_sums_small_codes_exactly(tmp_path):
    pytest.importorskip("gensim")
    out = run_example("symbol_sequences", "--subset", "100", "--epochs", "1", "--symbols", "2", "--alphabet", "3",
                      "--estimator", "gumbel", "--out", str(tmp_path))
    assert "exact sum over 9 codes" in out
    assert number_after("NLL", out) <= number_after("test -ELBO", out) + 1e-2  # the ELBO bounds log p(x)
    assert "come back word for word" in out and re.search(r"^symbol\s+\d+: \S", out, re.M)
    assert (tmp_path / "training_curves.png").stat().st_size > 1000


def test_sentence_vae_example_samples_and_interpolates(tmp_path):
    pytest.importorskip("gensim")
    out = run_example("sentence_vae", "--subset", "100", "--epochs", "1", "--samples", "2", "--embed", "16",
                      "--hidden", "16", "--z-dim", "4", "--out", str(tmp_path))
    assert number_after("test NLL", out) > 0 and number_after("KL", out) >= 0
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("five sentences from the prior"))
    assert all(lines[i].strip() for i in range(start + 1, start + 6))
    hom = next(i for i, line in enumerate(lines) if line.startswith("homotopy from"))
    assert len([line for line in lines[hom + 1:hom + 8] if line.startswith("   ")]) == 7
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
