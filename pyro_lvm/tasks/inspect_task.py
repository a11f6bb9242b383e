"""Inspect a model: one row per site (observed/latent, random/deterministic, support, guide, shapes, plates).

    pyro-lvm inspect vae                  the table for the VAE on a small example batch
    pyro-lvm inspect attention-seq2seq --markdown
    pyro-lvm inspect hmm --render hmm.png (needs graphviz)
    pyro-lvm inspect --pair my_pair.py:make   your own pair: make() returns (pair, batch)

The functions below build each model's example, named by the registry
(:data:`pyro_lvm.tasks.REGISTRY`): each returns ``(pair, example_batch)`` or
``(pair, example_batch, options)``, where ``options`` are keyword arguments of
:func:`pyro_lvm.inspection.inspect_pair` (e.g. ``{"enumerate_guide": "parallel"}`` for a pair
whose objective enumerates its guide). Add a model by writing its function and a registry
entry (keep the example tiny: the table needs one trace, not realistic data). Builders import
lazily, so one broken optional model does not stop the others from being inspected.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ..base import batch_args
from ..inspection import inspect_pair, render
from . import INSPECTABLE, load_example
from .user_pair import SPEC_HELP, load_user_pair

Example = tuple  # (model/guide pair, one example batch[, inspect_pair options])


def vae_example() -> Example:
    from ..models import VAE
    return VAE(x_dim=64, z_dim=2, hidden=(32,)), torch.rand(4, 64)


def autoencoder_example() -> Example:
    from ..models import Autoencoder
    return Autoencoder(x_dim=64, z_dim=2, hidden=(32,)), torch.rand(4, 64)


def ppca_example() -> Example:
    from ..models import PPCA
    return PPCA(x_dim=5, z_dim=2), torch.randn(4, 5)


def attention_seq2seq_example() -> Example:
    from ..models.attention_seq2seq import AttentionSeq2Seq
    g = torch.Generator().manual_seed(0)
    return AttentionSeq2Seq(12, 12, 16), (torch.randint(0, 12, (2, 5), generator=g),
                                          torch.randint(0, 12, (2, 4), generator=g))


def categorical_mixture_example() -> Example:
    from ..models.categorical_mixture import CategoricalMixture
    return CategoricalMixture(n_classes=3, x_dim=2), torch.randn(4, 2)


def categorical_vae_example() -> Example:
    from ..models.categorical_vae import CategoricalVAE
    return CategoricalVAE(x_dim=64, n_latents=2, n_classes=3, hidden=(16,), estimator="score-function"), torch.rand(4, 64)


def hmm_example() -> Example:
    from ..models.hmm import HMM, CategoricalEmission
    x = torch.randint(0, 5, (2, 3), generator=torch.Generator().manual_seed(0))
    return HMM(CategoricalEmission(2, 5), inference="markov", parameters="bayes"), x


def ss_vae_example() -> Example:
    from ..models.ss_vae import SSVAE
    x = torch.rand(6, 16)
    labels = torch.tensor([0, 2])
    # Its default objective (y_estimator="enumerate") sums y_u out: inspect it that way.
    return SSVAE(x_dim=16, n_classes=3, z_dim=2, hidden=(8,)), (x[:4], x[4:], labels), {"enumerate_guide": "parallel"}


def sentence_vae_example() -> Example:
    from ..data.text import BOS_ID, EOS_ID, PAD_ID
    from ..models.text.sentence_vae import SentenceVAE
    tokens = torch.tensor([[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, 9, EOS_ID, PAD_ID]])  # two sentences
    return SentenceVAE(vocab_size=10, embed_dim=8, hidden_dim=8, z_dim=2, max_len=6), tokens


def prodlda_example() -> Example:
    from ..models.topic import ProdLDA
    counts = torch.randint(0, 3, (4, 12), generator=torch.Generator().manual_seed(0)).float()
    return ProdLDA(vocab_size=12, num_topics=3, hidden=8), counts


def lda_example() -> Example:
    from ..models.topic import LDA
    counts = torch.randint(0, 3, (2, 6), generator=torch.Generator().manual_seed(0)).float()
    counts[:, 0] += 1  # no empty document
    # Each word's topic z is marked for enumeration in the model (TraceEnum_ELBO sums it out).
    return LDA(vocab_size=6, num_topics=3, assignments="enumerated", hidden=8), counts


def sequence_vae_example() -> Example:
    from ..models.collapse_toy import SequenceVAE
    return SequenceVAE(vocab=6, z_dim=1, emb=4, hidden=8), torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(0))


def build_example(name: str) -> tuple[Any, Any, dict[str, Any]]:
    """``(pair, example batch, inspect options)`` for a name in :data:`INSPECTABLE`.

    Raises ``ValueError`` listing the known names for any other name.
    """
    pair, batch, *options = load_example(name)()
    return pair, batch, dict(options[0]) if options else {}


def markdown_tables() -> str:
    """The markdown table of every model in :data:`INSPECTABLE`, each under a ``### `name``` heading.

    This is the text between the ``inspection-tables`` markers of ``docs/inspection.md``
    (``python scripts/update_inspection_tables.py`` rewrites it; a test checks it is current).
    """
    parts = []
    for name in INSPECTABLE:
        torch.manual_seed(0)
        pair, batch, options = build_example(name)
        parts.append(f"### `{name}`\n\n{inspect_pair(pair, batch, **options).to_markdown()}")
    return "\n".join(parts)


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help=f"a built-in model, one of: {', '.join(sorted(INSPECTABLE))} (or --pair)")
    parser.add_argument("--pair", default=None, metavar="FILE.py:FUNCTION", help=f"{SPEC_HELP}; instead of MODEL")
    parser.add_argument("--enumerate-guide", default=None, choices=["parallel", "sequential"],
                        help="read the guide as config_enumerate would (for a pair trained with TraceEnum_ELBO)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of text")
    parser.add_argument("--no-params", action="store_true", help="leave out pyro.param sites")
    parser.add_argument("--group", action="store_true",
                        help="merge per-step sites z_0, z_1, ... that agree into one row z_{0..T-1}")
    parser.add_argument("--render", default=None, metavar="FILE",
                        help="also draw the model graph to FILE (needs the graphviz package and program)")
    parser.add_argument("--seed", type=int, default=0)


def cli_inspect(args: argparse.Namespace) -> dict[str, Any]:
    """Print the inspection table of ``args.model`` (or of the user's ``--pair``); return its rows
    and guide coverage."""
    if (args.model is None) == (getattr(args, "pair", None) is None):
        raise ValueError("name one model to inspect: a built-in MODEL or --pair FILE.py:FUNCTION")
    torch.manual_seed(args.seed)
    if args.model is not None:
        pair, batch, options = build_example(args.model)
    else:
        (pair, batch), options = load_user_pair(args.pair), {}
    if getattr(args, "enumerate_guide", None):
        options = {**options, "enumerate_guide": args.enumerate_guide}
    report = inspect_pair(pair, batch, params=not args.no_params, **options)
    if args.group:
        report = report.grouped()
    print(report.to_markdown() if args.markdown else report)
    result: dict[str, Any] = {"model": args.model or args.pair, "missing_in_guide": report.missing_in_guide,
                              "sites": [r.name for r in report]}
    if args.render:
        a, kw = batch_args(batch)
        render(pair.model, a, filename=args.render, kwargs=kw)
        result["graph"] = args.render
    return result
