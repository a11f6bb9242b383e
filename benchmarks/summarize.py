"""Write docs/benchmarks.md from the JSON files in benchmarks/results/.

Every figure on that page is read from a result file written by a committed script, and
each table names the command that produced it. Re-run after any benchmark:

    python benchmarks/summarize.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _portable(command) -> str:
    """A recorded command as the docs show it: our machines' data folder as ``DATA`` (docs/data.md)."""
    text = " && ".join(command) if isinstance(command, list) else str(command)
    return text.replace("../shared/data/", "DATA/").replace("../shared/data", "DATA")


def _fmt(v, digits=2):
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def vae_overhead(r: dict) -> list[str]:
    gap = r["ms_per_step"]["fit_trace"] - r["ms_per_step"]["hand_mc_fused"]
    lines = [
        "## VAE step overhead against hand-written PyTorch",
        "",
        r["setup"] + ".",
        "",
        "| variant | CPU ms / step |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in r["ms_per_step"].items()]
    lines += ["", "| ratio (median of per-round ratios) | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, 3)} |" for k, v in r["ratios"].items()]
    lines += [
        "",
        f"Target: {r['target']}. Command: `{_portable(r['command'])}`",
        "",
        "What it took: `fit()` asks the ELBO for `differentiable_loss` and steps one fused torch Adam",
        "over all parameters, instead of SVI's per-parameter Pyro optimiser; Pyro's argument validation",
        "runs on the first step only; the decoder returns Bernoulli logits (no probability-logit round",
        "trip). Against a hand-written loop that also uses fused Adam the remaining gap is Pyro's",
        f"tracing of model and guide (about {gap:.1f} ms per step in this run).",
        "",
    ]
    return lines


VAE_CURVE = ROOT / "docs" / "figures" / "vae_mnist_curve.png"  # drawn by main() from vae_mnist_quality.json


def draw_figures() -> None:
    """The page's figures, from their result files (kept out of :func:`page`, which only reads)."""
    from pyro_lvm.plots import training_curves
    from pyro_lvm.training.loop import History

    path = RESULTS / "vae_mnist_quality.json"
    if path.is_file():
        training_curves({"VAE": History(json.loads(path.read_text())["curve"])}, VAE_CURVE)


def vae_mnist_quality(r: dict) -> list[str]:
    return [
        "## VAE on binarized MNIST: importance-sampled log-likelihood",
        "",
        "| model | data | epochs | training CPU time | best valid ELBO | valid log p(x), K = "
        f"{r['iwae_samples']} | target |",
        "|---|---|---|---|---|---|---|",
        f"| {r['model']} | {r['data']} ({r['split_evaluated']}, {r['num_evaluated']} images) | {r['epochs_trained']} | "
        f"{r['train_cpu_seconds'] / 60:.1f} min | {r['best_valid_elbo']:.2f} | "
        f"**{r['valid_log_likelihood']:.2f}** ± {r['valid_log_likelihood_stderr']:.2f} | >= {r['target']} |",
        "",
        "Published anchors (test split, for orientation): "
        + "; ".join(f"{k}: {v}" for k, v in r["anchors"].items()) + ".",
        f"![learning curve](figures/{VAE_CURVE.name})",
        "",
        f"Command: `{_portable(r['command'])}`",
        "",
    ]


RENDERERS = {"vae_overhead": vae_overhead, "vae_mnist_quality": vae_mnist_quality}


def _row(r: dict, variant: str) -> dict:
    return next(x for x in r["rows"] if x["variant"] == variant or x.get("model") == variant)


# (result file stem, what, measured -> str, target, page): one line per headline figure.
HEADLINES = [
    ("vae_overhead", "VAE step, `fit` vs hand-written PyTorch (Trace_ELBO)",
     lambda r: (f"{r['ratios']['fit_trace / hand_mc (default Adam)']:.2f}x "
                f"({r['ratios']['fit_trace / hand_mc_fused (same optimiser)']:.2f}x against a fused-Adam loop)"),
     "<= 1.2x", "vae.md"),
    ("vae_mnist_quality", "VAE, binarized MNIST valid log p(x), K = 5000",
     lambda r: f"{r['valid_log_likelihood']:.2f} nats", ">= -95", "vae.md"),
    ("discrete_mnist_gumbel_long", "Gumbel-softmax categorical VAE, MNIST valid -ELBO (40k steps)",
     lambda r: f"{r['results'][0]['valid_neg_elbo']:.1f} nats", "<= 105", "discrete_latents.md"),
    ("sentence_vae_speed", "sentence VAE training throughput, `fit` / hand-written",
     lambda r: f"{r['ratio_pyro_over_hand']:.2f}", ">= 0.85", "sentence_vae.md"),
    ("hmm_speed", "HMM fast path vs hand-written forward, K = 16 (time ratio)",
     lambda r: f"{r['by_states'][0]['ratio_vs_handwritten']['fast']:.2f}x", "<= 2x", "hmm.md"),
    ("hmm_speed", "HMM fast loss + gradient / hmmlearn's C E-step, K = 16 / 32 / 64 (same run)",
     lambda r: " / ".join(f"{b['fast_over_hmmlearn']:.2f}x" for b in r["by_states"]), "<= 1x at every K", "hmm.md"),
    ("hmm_speed", "HMM `pyro.markov` path / fast path, K = 16",
     lambda r: f"{r['by_states'][0]['markov_over_fast']:.1f}x", ">= 15x", "hmm.md"),
    ("hmm_quality_jsb_family_used_keys", "JSB test NLL per frame, 51 used keys: nnHMM (early stopping) vs "
     "honest model 7 / plain HMM",
     lambda r: (f"{r['runs']['used-keys/nnhmm']['test_nll_per_step']:.2f} vs 7.58 / "
                f"{r['runs']['used-keys/hmm']['test_nll_per_step']:.2f}"),
     "clearly below both", "hmm.md"),
    ("hmm_quality_jsb_family_full", "JSB test NLL per frame, all 88 keys: nnHMM / nnHMM with keys seeing their frame",
     lambda r: (f"{r['runs']['full/nnhmm']['test_nll_per_step']:.2f} / "
                f"{r['runs']['full/nnhmm_within_frame']['test_nll_per_step']:.2f}"),
     "<= 6.87 (Deep Markov Model)", "hmm.md"),
    ("hmm_quality_pos_emissions_embedding", "POS induction on MASC, 45 states, many-to-one, mean of "
     "the seeds run: Gaussian HMM over word2vec / the same + volume-preserving flow",
     lambda r: (f"{100 * r['summary']['embedding_flow']['before_flow']['many_to_one_mean']:.1f}% / "
                f"{100 * r['summary']['embedding_flow']['many_to_one_mean']:.1f}% "
                f"({r['summary']['embedding_flow']['seeds']} seeds)"), ">= 72% (3 seeds)", "hmm.md"),
    ("collapse_synthetic", "synthetic collapse: plain VAE KL vs linear annealing KL (nats)",
     lambda r: f"{r['summary']['vae']['kl']['mean']:.2f} vs {r['summary']['anneal']['kl']['mean']:.2f}",
     "plain ~0, remedies clearly > 0", "posterior_collapse.md"),
    ("collapse_synthetic_he", "synthetic collapse at He et al.'s size (1,000 tokens, 20,000 sequences, 3 seeds): "
     "plain VAE KL vs the lowest KL of annealing, beta or free bits in any seed (nats)",
     lambda r: (f"{r['summary']['vae']['kl']['mean']:.4f} vs "
                f"{min(v['kl'] for seed in r['per_seed'].values() for m, v in seed.items() if m != 'vae'):.2f}"),
     "plain ~0, remedies clearly > 0", "posterior_collapse.md"),
    ("sentence_vae_ptb", "PTB (reduced budget): VAE + free bits NLL - LM NLL, its KL; plain VAE KL",
     lambda r: (f"{r['rows']['vae+free-bits']['test']['nll'] - r['rows']['lm']['test']['nll']:+.2f} nats, "
                f"KL {r['rows']['vae+free-bits']['test']['kl']:.2f}; plain KL {r['rows']['vae']['test']['kl']:.4f}"),
     "<= +1 nat with KL >= 3, AU >= 5; plain KL < 0.5", "sentence_vae.md"),
    ("topic_20ng", "ProdLDA NPMI on 20NG, K = 50 (all-document reference; mean of 5 seeds) vs scikit-learn LDA",
     lambda r: (f"{r['rows'][0]['npmi_all_docs_mean']:.3f} ± {r['rows'][0]['npmi_all_docs_std']:.3f} vs "
                f"{r['rows'][-1]['npmi_all_docs_mean']:.3f} ± {r['rows'][-1]['npmi_all_docs_std']:.3f}"),
     ">= 0.24 and above scikit-learn", "topic_models.md"),
    ("ddp_throughput", "VAE, `fit(strategy='ddp')` 2 processes / torch DDP 2 processes",
     lambda r: f"{r['speedups']['vae']['fit_ddp2_over_hand_ddp2']:.2f}", "(measured, no target)", "scaling.md"),
]


def headlines() -> list[str]:
    lines = ["## Headline figures", "", "| what | measured | target | details |", "|---|---|---|---|"]
    for stem, what, measure, target, page in HEADLINES:
        path = RESULTS / f"{stem}.json"
        if not path.is_file():
            continue
        lines.append(f"| {what} | {measure(json.loads(path.read_text()))} | {target} | [{page}]({page}) |")
    return lines + [""]


def page() -> str:
    """The text of docs/benchmarks.md for the result files as they are now."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/summarize.py` from `benchmarks/results/*.json`; do not edit by hand.",
        "`DATA/` in a command is the folder with your copies of the benchmark data sets ([data.md](data.md)). "
        "Machines: 2 shared CPU cores, 1 torch thread. Timings are process CPU time; comparisons",
        "with hand-written PyTorch are made in the same run, interleaved, and reported as ratios.",
        "",
    ]
    lines += headlines()
    others = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        render = RENDERERS.get(result.get("benchmark", path.stem))
        if render is None:
            others.append(path)
            continue
        lines += render(result)
    if others:
        lines += ["## Other results", "", "Described on the model pages; files:", ""]
        lines += [f"- `benchmarks/results/{p.name}`" for p in others]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    out = ROOT / "docs" / "benchmarks.md"
    draw_figures()
    out.write_text(page())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
