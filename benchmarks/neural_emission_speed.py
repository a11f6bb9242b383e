"""The neural POS emission's table over the vocabulary (Tran et al. 2016 style), forward and
backward, with the character CNN as a padded ``Conv1d`` over every word (the code before) and
as the packed matrix product over real character positions (``NeuralCategoricalEmission``).

    python benchmarks/neural_emission_speed.py --data DATA   # ~1 CPU-minute

``DATA`` holds your copy of masc_tagged.zip. Vocabularies: the first 8,000 sentences (the
``standard`` budget of ``pyro-lvm reproduce pos-masc``) and all of MASC, every word type its own
symbol. CPU seconds (``time.process_time``, one torch thread), rounds interleaved, median;
writes ``benchmarks/results/neural_emission_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyro_lvm.checkpoint import atomic_json_save  # noqa: E402
from pyro_lvm.data.tagged_text import corpus_from_sentences, read_tagged  # noqa: E402
from pyro_lvm.models.hmm.word_emissions import NeuralCategoricalEmission  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def padded_features(e: NeuralCategoricalEmission) -> torch.Tensor:
    """The character CNN as it was: ``Conv1d`` over ``(V, char_dim, max_chars)``, padding masked."""
    conv = F.relu(e.conv(e.char_embedding(e.chars).transpose(1, 2)))
    conv = conv.masked_fill((e.chars == 0).unsqueeze(1), 0.0)
    return torch.cat([e.words.weight, conv.amax(dim=-1)], dim=-1)


def table_seconds(e: NeuralCategoricalEmission, features) -> float:
    """CPU seconds of one ``(K, V)`` log-table, forward and backward."""
    e.zero_grad()
    t0 = time.process_time()
    table = F.log_softmax(e.state_net(e.states.weight) @ features().T + e.bias, dim=-1)
    table[:, :50].sum().backward()
    return time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the folder with your copy of masc_tagged.zip")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    text = read_tagged(str(Path(args.data) / "masc_tagged.zip"), "auto", "upos", False)
    result = {"command": "python " + " ".join(sys.argv), "threads": 1, "states": 45, "rounds": args.rounds}
    for name, sentences in (("first_8000_sentences", text[:8000]), ("all_masc", text)):
        e = NeuralCategoricalEmission(45, corpus_from_sentences(sentences).vocab)
        assert torch.allclose(padded_features(e), e.word_features(), atol=1e-5)
        times = {"padded": [], "packed": []}
        for _ in range(args.rounds):
            times["padded"].append(table_seconds(e, lambda: padded_features(e)))
            times["packed"].append(table_seconds(e, e.word_features))
        result[name] = {"word_types": e.vocab_size, "character_positions": len(e.windows),
                        **{f"{k}_cpu_seconds": round(statistics.median(v), 3) for k, v in times.items()}}
        print(name, result[name], flush=True)
    atomic_json_save(result, RESULTS / "neural_emission_speed.json")
    print("wrote", RESULTS / "neural_emission_speed.json")


if __name__ == "__main__":
    main()
