"""Training any pair: the loop (:mod:`.loop`, ``fit``), what it shows callbacks
(:mod:`.callbacks`), how data become batches (:mod:`.batching`), run-folder rules
(:mod:`.runs`), data parallelism (:mod:`.distributed`) and experiment trackers
(:mod:`.tracking`). Safe checkpoints are :mod:`pyro_lvm.checkpoint`, in the bottom layer, since
data caches use them too; the site rescaling that data parallelism and mini-batching rely on is
a handler like KL scaling, in :mod:`pyro_lvm.infer.scaling`.

The package imports nothing itself, so that evaluation can read data through
:mod:`.batching` without loading the loop; ``from pyro_lvm import fit`` is the public name.
"""
