"""Which gradient estimator for a discrete latent? Measure them on one model/guide pair.

The pair is the library's ``CategoricalMixture``: c ~ Categorical(1/K) picks one of K
Gaussian means, x ~ N(mean_c, I), and the guide q(c | x) is a softmax classifier. Its latent
space is small, so the exact ELBO gradient is known by enumeration, and every estimator
(score function with baselines, RLOO, DisARM, Gumbel-softmax, straight-through, REBAR, RELAX,
...) can be scored for its variance (trace of the gradient covariance over ``--repeats``
draws), its bias against the exact gradient, its time and its memory. Estimators with a
temperature are measured at each of ``--temperatures``.

    python examples/compare_estimators.py                          # K = 10, 100 points, under 2 CPU-minutes
    python examples/compare_estimators.py --estimators rloo disarm gumbel --repeats 500

The same harness, with your own pair (``--pair my_pair.py:make``) and the categorical VAE, is
``pyro-lvm compare-estimators``; see docs/discrete_latents.md.
"""

import argparse
from pathlib import Path

from pyro_lvm import set_seed
from pyro_lvm.infer import ESTIMATORS, applicable_estimators, compare_estimators
from pyro_lvm.models import CategoricalMixture


def main(args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    # 1. The pair and one batch of data simulated from the model.
    pair = CategoricalMixture(args.classes)
    x = CategoricalMixture.simulate(args.n, args.classes, seed=args.seed)
    print("estimators that apply to this pair:", ", ".join(applicable_estimators(pair.model, pair.guide, x)))

    # 2. Measure: R gradient draws per estimator (and per temperature) at the same parameters.
    comparison = compare_estimators(pair, x, args.estimators, temperatures=args.temperatures, repeats=args.repeats,
                                    curve_steps=args.curve_steps, seed=args.seed)

    # 3. Results: the table (bias is exact here: comparison.exact_available), JSON and figures
    #    (variance and bias per estimator, against the temperature, ELBO against training time).
    print(comparison.to_markdown())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    comparison.to_json(out / "comparison.json")
    figures = comparison.plot(out)
    print(f"comparison.json and {len(figures)} figures in {out}")
    return {"rows": comparison.table(), "exact_available": comparison.exact_available,
            "figures": [str(p) for p in figures]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10, help="K mixture components")
    parser.add_argument("--n", type=int, default=100, help="datapoints in the batch")
    parser.add_argument("--estimators", nargs="+", default=None, choices=list(ESTIMATORS),
                        help="default: every estimator that applies")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--repeats", type=int, default=100, help="gradient draws per estimator")
    parser.add_argument("--curve-steps", type=int, default=0, help="also train each estimator this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_compare_estimators")
    main(parser.parse_args())
