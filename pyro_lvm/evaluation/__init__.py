"""Evaluating any trained pair: per-datapoint ELBO terms and importance-sampled
log-likelihoods (:mod:`.metrics`), the PSIS check of a guide (:mod:`.psis`), collapse
diagnostics (:mod:`.diagnostics`), both in one report (:mod:`.report`), guide draws as ArviZ
``InferenceData`` (:mod:`.arviz_io`) and side-by-side comparison of run folders
(:mod:`.compare_runs`, ``pyro-lvm compare``).

The package imports nothing itself; ``from pyro_lvm import log_likelihood, evaluation_report``
are the public names.
"""
