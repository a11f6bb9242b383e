"""How much the synthetic collapse data say about their latent: the generator's I(x; z).

For each setting of ``benchmarks/collapse_synthetic.py`` (same seeds, same data: the source
is rebuilt from the seed), the mutual information between a sequence and the 1-d latent that
generated it, in nats per sequence, estimated exactly as the ``collapse`` task does (first 500
test pairs, ``log p(x|z) - log p(x)``, ``p(x)`` by quadrature over ``z``). It is the most a
VAE's code could carry about the data, the yardstick for the MI column of the tables.

    python benchmarks/collapse_data_information.py      # ~1 minute; writes benchmarks/results/collapse_data_information.json
"""

import json
import statistics
import sys
from pathlib import Path

import torch

from pyro_lvm.models.collapse_toy import toy_splits

SETTINGS = {  # name: (vocab, train, valid, test), as in the collapse_synthetic runs
    "vocab50_train2000": (50, 2000, 500, 500),
    "vocab1000_train2000": (1000, 2000, 500, 500),
    "vocab1000_train20000": (1000, 20000, 2000, 1000),
}


def main() -> dict:
    torch.set_num_threads(1)
    result = {"benchmark": "collapse_data_information", "command": "python " + " ".join(sys.argv), "settings": {}}
    for name, (vocab, n_train, n_valid, n_test) in SETTINGS.items():
        per_seed = {}
        for seed in (0, 1, 2):
            data = toy_splits(n_train, n_valid, n_test, seed=seed, vocab=vocab)
            per_seed[str(seed)] = round(data["source"].mutual_information(data["test"][:500], data["z_test"][:500],
                                                                          grid=200), 3)
        result["settings"][name] = {"vocab": vocab, "train": n_train, "per_seed_nats": per_seed,
                                    "mean_nats": round(statistics.fmean(per_seed.values()), 3)}
        print(name, result["settings"][name], flush=True)
    out = Path(__file__).resolve().parent / "results" / "collapse_data_information.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    return result


if __name__ == "__main__":
    main()
