"""The one registry of discrete-estimator names: what each stands for, which guide sites it
applies to, and the groups of names the machinery dispatches on. :mod:`.estimators` builds the
objectives; this module has no Pyro machinery, so every module of the package can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY_DISCRETE = frozenset({"bernoulli", "one-hot", "categorical", "discrete"})
BINARY_OR_CATEGORICAL = frozenset({"bernoulli", "one-hot", "categorical"})
RELAXABLE = frozenset({"bernoulli", "one-hot"})


@dataclass(frozen=True)
class Estimator:
    """What one estimator name stands for.

    Attributes:
        summary: one line.
        reference: the paper.
        families: the :func:`~pyro_lvm.infer.discrete.particles.site_family` kinds of guide site it applies to.
        unbiased_for: ``"ELBO"``, ``"S-sample bound"``, ``"exact"`` or ``""`` (biased).
        temperature: it uses a relaxation temperature (measured per temperature in comparisons).
        particles: what ``num_particles`` counts for it.
        default_particles: its default ``num_particles``.
        rewrites_model: it rewrites the *model's* distribution at the site from its logits (a
            Concrete density, or the prior at relaxed values), so the model needs a Bernoulli or
            OneHotCategorical there too, not only the guide.
    """

    summary: str
    reference: str
    families: frozenset
    unbiased_for: str
    temperature: bool = False
    particles: str = "samples per datapoint"
    default_particles: int = 1
    rewrites_model: bool = False


ESTIMATORS: dict[str, Estimator] = {
    "enumerate": Estimator("exact sum over the guide's discrete values (TraceEnum_ELBO)",
                           "Pyro's parallel enumeration", ANY_DISCRETE, "exact"),
    "score-function": Estimator("sampled discrete values, score-function (REINFORCE) gradient (Trace_ELBO)",
                                "Williams 1992", ANY_DISCRETE, "ELBO"),
    "score-function-baseline": Estimator(
        "score function with Rao-Blackwellisation and baselines (TraceGraph_ELBO)",
        "Mnih & Gregor 2014", ANY_DISCRETE, "ELBO"),
    "rloo": Estimator("REINFORCE with the leave-one-out baseline over S samples",
                      "Kool, van Hoof & Welling 2019", ANY_DISCRETE, "ELBO", default_particles=2),
    "vimco": Estimator("the S-sample (IWAE) bound with leave-one-out control variates",
                       "Mnih & Rezende 2016", ANY_DISCRETE, "S-sample bound", default_particles=2),
    "arm": Estimator("Augment-REINFORCE-Merge: antithetic pairs of uniforms (stick-breaking for categoricals)",
                     "Yin & Zhou 2019", BINARY_OR_CATEGORICAL, "ELBO", particles="antithetic pairs"),
    "disarm": Estimator("ARM with the augmenting uniform integrated out (stick-breaking for categoricals)",
                        "Dong, Mnih & Tucker 2020; 2021", BINARY_OR_CATEGORICAL, "ELBO",
                        particles="antithetic pairs"),
    "gumbel": Estimator("Gumbel-softmax sample in the likelihood, exact discrete KL",
                        "Jang, Gu & Poole 2017", RELAXABLE, "", temperature=True),
    "gumbel-concrete": Estimator("relaxed (Concrete) densities in model and guide",
                                 "Maddison, Mnih & Teh 2017", RELAXABLE, "", temperature=True, rewrites_model=True),
    "straight-through": Estimator("exact discrete forward, relaxed sample's gradient backward, exact KL",
                                  "Bengio et al. 2013; Jang et al. 2017", RELAXABLE, "", temperature=True),
    "gumbel-rao": Estimator("straight-through with the gradient averaged over relaxed samples given the "
                            "discrete one", "Paulus, Maddison & Krause 2021", RELAXABLE, "", temperature=True),
    "rebar": Estimator("score function with the relaxation as control variate; scale and temperature learned",
                       "Tucker et al. 2017", RELAXABLE, "ELBO", temperature=True,
                       particles="independent estimates (3 evaluations each)", rewrites_model=True),
    "relax": Estimator("REBAR plus a learned surrogate network in the control variate",
                       "Grathwohl et al. 2018", RELAXABLE, "ELBO", temperature=True,
                       particles="independent estimates (3 evaluations each)", rewrites_model=True),
}
# estimators carried out by rewriting sites for a Pyro ELBO (the others run a particle plate)
RELAXED = ("gumbel", "gumbel-concrete", "straight-through", "gumbel-rao")
PARTICLE_ESTIMATORS = ("rloo", "vimco", "arm", "disarm", "rebar", "relax")
TEMPERATURE = tuple(name for name, e in ESTIMATORS.items() if e.temperature)
MODEL_RELAXED = tuple(name for name, e in ESTIMATORS.items() if e.rewrites_model)


def check_estimator(name: str) -> str:
    """Return ``name`` if it is a known estimator, else raise ``ValueError`` listing them."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return name
