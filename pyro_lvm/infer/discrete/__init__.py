"""Gradient estimators for discrete latent sites, by name (:mod:`.registry`: the one registry
``ESTIMATORS``; :mod:`.estimators`: ``DiscreteELBO``), their building blocks (:mod:`.relaxed` relaxed
distributions; :mod:`.particles` a pair over a plate of particles, for :mod:`.multisample`
RLOO/VIMCO, :mod:`.antithetic` ARM/DisARM and :mod:`.rebar` REBAR/RELAX), the harness that
compares them on a pair (:mod:`.comparison`) and the gradient-variance callback
(:mod:`.gradient_variance`). ``pyro_lvm.infer`` re-exports the public names.
"""
