"""The options of ``benchmarks/hmm_quality.py``, shared by its parts' modules: the JSB family
(:mod:`pyro_lvm.reproduce.jsb_family`) and part-of-speech induction on MASC
(:mod:`pyro_lvm.reproduce.pos_masc`).

``--data`` has no default: it is the folder with your copies of the data sets a part reads
(``jsb_chorales.pickle``; ``masc_tagged.zip`` and ``ptb.zip`` for the POS parts), or, for
``jsb-family``, the pickle itself; docs/data.md says where to get each. ``--dataset`` swaps in
data that ships offline for a smoke run: music21's Bach chorales (``jsb-family``) or the
``pos_induction`` task's synthetic tagged corpus (the POS parts).
"""

from __future__ import annotations

import argparse

JSB_FILE = "jsb_chorales.pickle"
PARTS = ["jsb", "pos", "pos-features", "pyro7", "jsb-family", "pos-emissions", "pos-variance"]
POS_PARTS = ("pos", "pos-features", "pos-emissions", "pos-variance")


def task_args(module, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the options of task ``module`` (a module of :mod:`pyro_lvm.tasks`)."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def parser() -> argparse.ArgumentParser:
    """The options of ``benchmarks/hmm_quality.py`` (every part)."""
    from .jsb_family import JSB_FAMILY  # here, not above: jsb_family imports this module

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", required=True, choices=PARTS)
    p.add_argument("--family-protocols", nargs="+", default=["used-keys", "full"], choices=["used-keys", "full"])
    p.add_argument("--family-variants", nargs="+", default=list(JSB_FAMILY), choices=list(JSB_FAMILY))
    p.add_argument("--pos-emissions", nargs="+", default=None,
                   help="pos-emissions / pos-variance: which emissions (default: all of the part's)")
    p.add_argument("--tag", default="", help="suffix of the result file (a partial run of a part)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help=f"folder with your copies of the data sets ({JSB_FILE}; masc_tagged.zip and ptb.zip for the "
                        f"POS parts); jsb-family: or {JSB_FILE} itself (docs/data.md says where to get them)")
    p.add_argument("--dataset", default="standard", choices=["standard", "music21", "toy"],
                   help="standard: your copies under --data; music21 (jsb-family): the Bach chorales bundled with "
                        "music21; toy (POS parts): the pos_induction task's synthetic tagged corpus, word vectors "
                        "trained on its text (offline smoke runs, not comparable with any published number)")
    p.add_argument("--pos-iterations", type=int, default=None, help="default: 150 (pos), 100 (pos-features)")
    p.add_argument("--pos-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pos-sentences", type=int, default=None,
                   help="POS parts: tag only the first N sentences (the word vectors still see all the text)")
    p.add_argument("--pyro7-steps", type=int, nargs="+", default=[50, 500],
                   help="SVI step counts for --part pyro7 (50 is the example's default)")
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    return p
