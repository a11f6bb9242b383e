"""The other chains of Pyro's ``examples/hmm.py`` (Obermeyer et al. 2019, "Tensor Variable
Elimination for Plated Factor Graphs"), as model/guide pairs with both inference paths.

    fhmm = FactorialHMM(BernoulliEmission(16, 51), sizes=(4, 4))        # FHMM: two independent chains
    pfhmm = PartiallyFactorialHMM(BernoulliEmission(16, 51), sizes=(4, 4))  # PFHMM: z_t also sees w_t
    hmm2 = SecondOrderHMM(BernoulliEmission(16, 51), raftery=True)     # 2HMM: z_t sees z_{t-1}, z_{t-2}

Any emission of :mod:`.hmm_emissions` fits (the autoregressive and neural ones too). As in
Pyro's example, before the first step each chain is taken to have been in state 0 (so there is
no separate initial distribution), and all chain parameters are point estimates (MAP without
prior; train with :func:`pyro_lvm.fit`, ``elbo=model.objective()``).

* ``inference="markov"``: the chains written step by step, one ``pyro.sample`` per chain per
  step in ``pyro.markov`` (``history=2`` for the second-order chain), enumerated and summed
  out by ``TraceEnum_ELBO``.
* ``inference="fast"``: the scaled forward algorithm of :mod:`pyro_lvm.models.hmm.inference` over the
  *joint* state: the ``A * B`` pairs ``(w, z)`` of a factorial chain (emission state ``w * B +
  z``), the ``K * K`` pairs ``(z_{t-1}, z_t)`` of a second-order one (emission state ``z_t``).

Decoders (``viterbi``, ``sample_states``, ``marginals``) report joint states; ``split_states``
turns them into the chains' own states.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .hmm import HMMBase
from .emissions import check_num_states

__all__ = ["FactorialHMM", "PartiallyFactorialHMM", "SecondOrderHMM"]


def _logits(*shape: int) -> nn.Parameter:
    return nn.Parameter(0.1 * torch.randn(*shape))


class FactorialHMM(HMMBase):
    """Two independent chains ``w`` (``A`` states) and ``z`` (``B`` states) emitting together
    (Pyro's model 3, "FHMM"): ``w_t ~ p(w_t | w_{t-1})``, ``z_t ~ p(z_t | z_{t-1})``,
    ``x_t ~ emission(w_t * B + z_t)``. The emission needs ``A * B`` states."""

    def __init__(self, emission: nn.Module, sizes: tuple[int, int], inference: str = "fast"):
        a, b = (check_num_states(s) for s in _pair(sizes))
        if emission.num_states != a * b:
            raise ValueError(f"emission has {emission.num_states} states but sizes {a} x {b} need {a * b}")
        super().__init__(emission, a * b, inference)
        self.sizes = (a, b)
        self.w_logits, self.z_logits = _logits(a, a), self._z_logits_init(a, b)

    def _z_logits_init(self, a: int, b: int) -> nn.Parameter:
        return _logits(b, b)

    def point_factors(self) -> dict[str, torch.Tensor]:
        return {"w": F.log_softmax(self.w_logits, -1), "z": F.log_softmax(self.z_logits, -1)}

    def joint_tables(self, factors):
        a, b = self.sizes
        w, z = factors["w"], factors["z"]
        # p((w', z') | (w, z)) = p(w' | w) p(z' | z); before the first step both chains were in state 0.
        trans = w[:, None, :, None] + z[None, :, None, :]
        return trans[0, 0].reshape(-1), trans.reshape(a * b, a * b)

    def markov_step(self, t, factors, carry):
        w_prev, z_prev = (0, 0) if carry is None else carry
        w = pyro.sample(f"w_{t}", dist.Categorical(logits=factors["w"][w_prev]), infer={"enumerate": "parallel"})
        z = pyro.sample(f"z_{t}", dist.Categorical(logits=self._z_row(factors, w, z_prev)),
                        infer={"enumerate": "parallel"})
        return (w, z), w * self.sizes[1] + z

    def _z_row(self, factors, w, z_prev):
        return factors["z"][z_prev]

    def split_states(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint states (``-1`` on padding kept) -> ``(w, z)``."""
        b = self.sizes[1]
        return torch.where(states >= 0, states // b, -1), torch.where(states >= 0, states % b, -1)


class PartiallyFactorialHMM(FactorialHMM):
    """Like :class:`FactorialHMM` but ``z_t`` depends on ``w_t`` as well (Pyro's model 4,
    "PFHMM"): ``z_t ~ p(z_t | w_t, z_{t-1})``, a ``(A, B, B)`` table."""

    def _z_logits_init(self, a: int, b: int) -> nn.Parameter:
        return _logits(a, b, b)

    def joint_tables(self, factors):
        a, b = self.sizes
        w, z = factors["w"], factors["z"]
        # p((w', z') | (w, z)) = p(w' | w) p(z' | w', z): z's table indexed [w', z, z'] -> [z, w', z'].
        trans = w[:, None, :, None] + z.permute(1, 0, 2)[None]
        return trans[0, 0].reshape(-1), trans.reshape(a * b, a * b)

    def _z_row(self, factors, w, z_prev):
        return factors["z"][w, z_prev]


class SecondOrderHMM(HMMBase):
    """Chain with ``z_t ~ p(z_t | z_{t-2}, z_{t-1})`` (Pyro's model 6, "2HMM"); before the first
    step the chain was in state 0 twice.

    ``raftery=False`` keeps the full ``(K, K, K)`` table; ``raftery=True`` the mixture of
    Raftery (1985), ``lambda p1(z_t | z_{t-1}) + (1 - lambda) p2(z_t | z_{t-2})``: ``2 K^2 + 1``
    numbers instead of ``K^3``.
    """

    markov_history = 2

    def __init__(self, emission: nn.Module, num_states: int | None = None, raftery: bool = False,
                 inference: str = "fast"):
        k = check_num_states(emission.num_states if num_states is None else num_states)
        if emission.num_states != k:
            raise ValueError(f"emission has {emission.num_states} states but num_states={k}")
        super().__init__(emission, k * k, inference, emission_states=torch.arange(k * k) % k)
        self.states, self.raftery = k, raftery
        if raftery:
            self.logits1, self.logits2, self.mix_logit = _logits(k, k), _logits(k, k), nn.Parameter(torch.zeros(()))
        else:
            self.logits = _logits(k, k, k)

    def point_factors(self) -> dict[str, torch.Tensor]:
        """``{"trans2": log p(z_t = c | z_{t-2} = a, z_{t-1} = b)`` at ``[a, b, c]``}."""
        if not self.raftery:
            return {"trans2": F.log_softmax(self.logits, -1)}
        lam = torch.sigmoid(self.mix_logit)
        mix = lam * F.softmax(self.logits1, -1)[None] + (1 - lam) * F.softmax(self.logits2, -1)[:, None]
        return {"trans2": mix.log()}

    def joint_tables(self, factors):
        k, trans2 = self.states, factors["trans2"]
        log_init = torch.full((k, k), -torch.inf, dtype=trans2.dtype, device=trans2.device)
        log_init[0] = trans2[0, 0]  # the pair (z_{-1}, z_0) = (0, z_0)
        # Joint state (a, b) = (z_{t-1}, z_t) can only move to some (b, c): [a, b, b', c].
        allowed = torch.eye(k, dtype=torch.bool, device=trans2.device)[None, :, :, None]
        trans = torch.where(allowed, trans2[:, :, None, :], -torch.inf)
        return log_init.reshape(-1), trans.reshape(k * k, k * k)

    def markov_step(self, t, factors, carry):
        prev2, prev1 = (0, 0) if carry is None else carry
        z = pyro.sample(f"z_{t}", dist.Categorical(logits=factors["trans2"][prev2, prev1]),
                        infer={"enumerate": "parallel"})
        return (prev1, z), z

    def split_states(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint states ``(z_{t-1}, z_t)`` (``-1`` on padding kept) -> ``(z_{t-1}, z_t)``."""
        k = self.states
        return torch.where(states >= 0, states // k, -1), torch.where(states >= 0, states % k, -1)


def _pair(sizes) -> tuple[int, int]:
    if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
        raise ValueError(f"sizes must be a pair (A, B) of chain sizes, got {sizes!r}")
    return tuple(sizes)
