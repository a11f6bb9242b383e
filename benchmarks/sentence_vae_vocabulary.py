"""``<unk>`` rates of vocabularies fitted to the embedded Wikipedia sample (issue 21).

For the whole sample and for its simple sentences (``pyro_lvm.data.text.simple_sentences``:
at most N tokens, every token seen at least M times in the sample), with vocabularies built on
the training split (all its words, or a minimum frequency, or a size cap): the split sizes,
the vocabulary size and the share of training and test words that read as ``<unk>``. The
task's default is the row marked ``default``; the rule is ``<unk>`` under 5% of test words.

    python benchmarks/sentence_vae_vocabulary.py      # seconds; writes benchmarks/results/sentence_vae_vocabulary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyro_lvm.data.images import split_indices
from pyro_lvm.data.text import SIMPLE, TextCorpus, Vocabulary, embedded_sentences, encode_sentences, simple_sentences, unk_rate

TEXTS = {  # name: (min_count, max_tokens) of simple_sentences, or None for the whole sample
    "whole sample": None,
    "simple, <= 25 tokens, count >= 3": (3, 25),
    "simple, <= 30 tokens, count >= 3": (SIMPLE["min_count"], SIMPLE["max_tokens"]),
    "simple, <= 30 tokens, count >= 5": (5, 30),
}
VOCABS = {"all training words": {}, "min_freq 2": {"min_freq": 2}, "10,000 words": {"max_size": 10_004}}


def split(sentences: list[list[str]], seed: int = 0) -> TextCorpus:
    tr, va, te = split_indices(len(sentences), seed=seed)
    pick = lambda idx: [sentences[i] for i in sorted(idx)]  # noqa: E731
    return TextCorpus(pick(tr), pick(va), pick(te), "")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/sentence_vae_vocabulary.json")
    args = p.parse_args(argv)
    everything = embedded_sentences()
    rows = []
    for text, rule in TEXTS.items():
        corpus = split(everything if rule is None else simple_sentences(everything, *rule))
        for vname, kw in VOCABS.items():
            vocab = Vocabulary.build(corpus.train, **kw)
            rate = {s: round(unk_rate(encode_sentences(getattr(corpus, s), vocab)), 4) for s in ("train", "test")}
            rows.append({"text": text, "vocabulary": vname, "sentences": [len(corpus.train), len(corpus.valid),
                         len(corpus.test)], "train_words": sum(map(len, corpus.train)), "vocab_size": len(vocab),
                         "unk_rate": rate, "under_5_percent": rate["test"] < 0.05,
                         "default": rule == (SIMPLE["min_count"], SIMPLE["max_tokens"]) and not kw})
    result = {"benchmark": "sentence_vae_vocabulary", "command": "python benchmarks/sentence_vae_vocabulary.py",
              "notes": "unk_rate: share of words (not <bos>/<eos>) read as <unk>; vocabularies built on the "
                       "training split; lower case, numbers -> N", "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| text | vocabulary | sentences (train/valid/test) | vocab | train <unk> | test <unk> |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mark = " **(default)**" if r["default"] else ""
        print(f"| {r['text']} | {r['vocabulary']}{mark} | {' / '.join(f'{n:,}' for n in r['sentences'])} | "
              f"{r['vocab_size']:,} | {100 * r['unk_rate']['train']:.1f}% | {100 * r['unk_rate']['test']:.1f}% |")
    return result


if __name__ == "__main__":
    main()
