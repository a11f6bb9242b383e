"""Compare gradient estimators for discrete latents on one model/guide pair.

    python examples/compare_estimators.py --classes 10 --repeats 200
    python examples/compare_estimators.py --pair my_pair.py:make    # your own pair
    python examples/compare_estimators.py --pair my_pair.py:make --estimators rloo disarm gumbel-rao

By default every estimator that applies to the pair is measured (the others are listed with
the reason). Writes table.md/csv, comparison.json and plots under --out. Same code as
`pyro-lvm compare-estimators`.
"""

import argparse

from pyro_lvm.tasks import compare_estimators


def main(args: argparse.Namespace) -> dict:
    return compare_estimators.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare_estimators.add_arguments(parser)
    main(parser.parse_args())
