"""Exact inference in a discrete-state hidden Markov model, vectorised over sequences.

All functions take the same three tensors (``N`` sequences, ``T`` steps, ``K`` states):

* ``log_init``  ``(K,)``: ``log p(z_0 = k)``; the state *at* the first step (not before it,
  unlike the ``initial_logits`` of Pyro's ``DiscreteHMM``);
* ``log_trans`` ``(K, K)``: ``log p(z_t = j | z_{t-1} = i)`` at ``[i, j]``;
* ``log_emit``  ``(N, T, K)``: ``log p(x_t | z_t = k)`` of each sequence, already evaluated;

plus an optional ``mask`` ``(N, T)`` of booleans. A masked step is an *unobserved* step: its
emission term is dropped but the chain still moves through it. After a sequence's last
observed step the chain stops, so trailing padding changes no log-likelihood, gradient,
marginal or decoded state of the sequence. Decoders report state ``-1`` there.

The forward pass works in probability space with renormalisation at each step (Rabiner
1989, "scaling"): one ``(N, K) @ (K, K)`` product per step instead of a ``logsumexp`` over
``(N, K, K)``. Emission terms are shifted by their per-step maximum before ``exp`` (so a step
whose every state has a tiny likelihood cannot underflow to all zeros), and the running
distribution is renormalised, so nothing grows or shrinks with ``T``.

Posterior marginals and expected transition counts are gradients of the log-likelihood
(Eisner 2016, "Inside-outside and forward-backward algorithms are just backprop").
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from ...validation import positive_int


def check_hmm_inputs(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Validate shapes; return the mask as a bool ``(N, T)`` tensor (all True when ``None``)."""
    if log_emit.dim() != 3:
        raise ValueError(f"log_emit must have shape (N, T, K), got {tuple(log_emit.shape)}")
    n, t, k = log_emit.shape
    positive_int("the number of states (log_emit.shape[-1])", k)
    if t < 1:
        raise ValueError("sequences of length 0: log_emit has T = 0 steps")
    if log_init.shape != (k,) or log_trans.shape != (k, k):
        raise ValueError(f"log_init must be ({k},) and log_trans ({k}, {k}) for K={k} states; got "
                         f"{tuple(log_init.shape)} and {tuple(log_trans.shape)}")
    if mask is None:
        return torch.ones(n, t, dtype=torch.bool, device=log_emit.device)
    if mask.shape != (n, t):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but the observations need ({n}, {t})")
    return mask.bool()


def last_observed(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True step of each row of ``mask`` ``(N, T)`` -> ``(N,)`` (-1 if none)."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask, steps, -1).max(dim=1).values


def _recursion(start: torch.Tensor, mats: torch.Tensor, emit: Sequence[torch.Tensor]):
    """Scaled recursions ``v_s = normalise((v_{s-1} @ mats) * emit[s])`` from ``v_0 = start``.

    ``start`` and each ``emit[s]`` are ``(..., N, K)``, ``mats`` ``(..., K, K)`` (one matrix,
    or a batch of them run side by side). Returns the normalised ``v (..., T, N, K)`` and the
    normalisers ``(..., T, N, 1)``. Per step one matmul, an in-place product, a sum and an
    in-place division: on a CPU each operation costs microseconds of dispatch, so everything
    else is done on whole tensors outside the loop.
    """
    mm = torch.mm if mats.dim() == 2 else torch.bmm
    v, values, norms = start, [], []
    for s in range(len(emit)):
        if s > 0:
            v = mm(v, mats).mul_(emit[s])
        norm = v.sum(dim=-1, keepdim=True)
        v = v.div_(norm)
        values.append(v)
        norms.append(norm)
    return torch.stack(values, dim=-3), torch.stack(norms, dim=-3)


def _reversed_rows(last: torch.Tensor, steps: int) -> torch.Tensor:
    """Row indices into a time-first ``(T * N, K)`` table that read each sequence backwards from
    its own last observed step: row ``s * N + n`` holds step ``max(last_n - s, 0)`` of sequence ``n``."""
    s = torch.arange(steps, device=last.device).unsqueeze(-1)
    return ((last - s).clamp(min=0) * len(last) + torch.arange(len(last), device=last.device)).reshape(-1)


def _shifted_emissions(log_emit: torch.Tensor, mask: torch.Tensor, copies: int = 1):
    """``(shift (N, T, 1), emit (copies, T, N, K))``: ``emit[0] = exp(log_emit - shift)`` time
    first, with ``shift`` the per-step maximum (so ``exp`` cannot underflow to all zeros), and
    emission 1, shift 0 on masked steps whatever ``log_emit`` holds there. Further copies are
    left for the caller to fill."""
    n, steps, k = log_emit.shape
    shift = log_emit.amax(dim=-1, keepdim=True)
    centred = log_emit - shift
    if not bool(mask.all()):
        observed = mask.unsqueeze(-1)
        shift = shift.masked_fill(~observed, 0.0)
        centred = centred.masked_fill_(~observed, 0.0)
    emit = log_emit.new_empty(copies, steps, n, k)
    emit[0] = centred.exp_().transpose(0, 1)  # time first: contiguous rows for the loop
    return shift, emit


def _active(last: torch.Tensor, steps: int) -> torch.Tensor:
    """``(T, N, 1)`` bool: step ``t`` is at or before sequence ``n``'s last observed step."""
    return (torch.arange(steps, device=last.device).unsqueeze(-1) <= last).unsqueeze(-1)


def _log_likelihood(shift: torch.Tensor, norms: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` ``(N,)`` from the shifts ``(N, T, 1)`` and the forward normalisers ``(T, N, 1)``
    (those after each sequence's end dropped)."""
    return shift.squeeze(-1).sum(dim=1) + torch.where(active, norms.log(), 0.0).sum(dim=(0, 2))


@torch.no_grad()
def _filter(log_init, log_trans, log_emit, mask, last) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x) (N,), filtered p(z_t | x_{1:t}) (T, N, K))`` by the forward recursion alone."""
    shift, emit = _shifted_emissions(log_emit, mask)
    alphas, norms = _recursion(log_init.exp() * emit[0, 0], log_trans.exp(), emit[0].unbind(0))
    return _log_likelihood(shift, norms, _active(last, log_emit.shape[1])), alphas


class _ForwardAlgorithm(torch.autograd.Function):
    """``log p(x)`` per sequence with its exact gradient, the classical expected counts:
    ``d log p / d log_emit[n, t, k] = p(z_t = k | x)`` and ``d log p / d log_trans[i, j] =
    sum_t p(z_{t-1} = i, z_t = j | x)`` (Eisner 2016).

    When a gradient is needed the forward (alpha) and backward recursions run in the same loop,
    stacked into one batched matmul per step. The backward one reads each sequence from its own
    last observed step, so both start at their boundary together and no step needs a ``where``.
    Its state is ``u_t = e_t beta_t``, so it has the forward's form ``u_{t-1} = (u_t @ T.T) *
    e_{t-1}``. Both are scaled independently and the posteriors renormalise them:
    ``beta_t = u_{t+1} @ T.T``, ``gamma_t = alpha_t beta_t / z_t`` and ``xi_t = alpha_{t-1} T
    u_t / z_{t-1}`` with ``z_t = sum_k alpha_t beta_t``. Chains run to step ``T``; what follows a
    sequence's last observed step is computed and dropped (``active``), which is cheaper than
    freezing the chain step by step. Hand-written rather than autograd through the loop: see
    ``benchmarks/hmm_speed.py`` for the measured difference.
    """

    @staticmethod
    def forward(ctx, log_init, log_trans, log_emit, mask, last):
        if not any(ctx.needs_input_grad[:3]):
            return _filter(log_init, log_trans, log_emit, mask, last)[0]
        n, steps, k = log_emit.shape
        shift, emit = _shifted_emissions(log_emit, mask, copies=2)
        trans = log_trans.exp()
        back = _reversed_rows(last, steps)
        torch.index_select(emit[0].view(-1, k), 0, back, out=emit[1].view(-1, k))
        (alphas, u_back), norms = _recursion(torch.stack([log_init.exp() * emit[0, 0], emit[1, 0]]),
                                             torch.stack([trans, trans.T]), emit.unbind(1))
        active = _active(last, steps)
        ctx.save_for_backward(trans, alphas, u_back, back, active, mask)
        return _log_likelihood(shift, norms[0], active)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative raises
    def backward(ctx, grad):
        trans, alphas, u_back, back, active, mask = ctx.saved_tensors
        steps, n, k = alphas.shape
        # Reversed layout: beta = 1 at each sequence's last observed step (row 0), then
        # beta_t = u_{t+1} @ trans.T; then both tables back to forward time.
        beta_back = alphas.new_empty(steps, n, k)
        beta_back[0] = 1.0
        torch.mm(u_back[:-1].view(-1, k), trans.T, out=beta_back[1:].view(-1, k))
        betas = beta_back.view(-1, k).index_select(0, back).view(steps, n, k)
        us = u_back.view(-1, k).index_select(0, back).view(steps, n, k)
        gamma = alphas * betas
        weight = torch.where(active, grad.view(1, -1, 1) / gamma.sum(dim=-1, keepdim=True), 0.0)  # (T, N, 1)
        gamma.mul_(weight * mask.T.unsqueeze(-1))  # posterior marginals times the upstream gradient
        prev = (alphas[:-1] * weight[:-1]).view(-1, k)
        nxt = us[1:].mul_(active[1:]).view(-1, k)
        return gamma[0].sum(0), (prev.T @ nxt) * trans, gamma.transpose(0, 1), None, None


def forward_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                           mask: torch.Tensor | None = None, return_filtered: bool = False):
    """``log p(x_{1:T})`` of each sequence, ``(N,)``, by the scaled forward algorithm.

    Differentiable in all three tables (first derivatives only: the gradient is written by
    hand). With ``return_filtered=True`` also returns the filtered distributions
    ``p(z_t | x_{1:t})`` as ``(N, T, K)`` (no gradient; used by forward-filter backward-sample).
    """
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    last = last_observed(mask)
    if return_filtered:
        log_lik, alphas = _filter(log_init, log_trans, log_emit, mask, last)
        return log_lik, alphas.transpose(0, 1)
    return _ForwardAlgorithm.apply(log_init, log_trans, log_emit, mask, last)


def expected_counts(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                    mask: torch.Tensor | None = None):
    """E-step of Baum-Welch: ``(log_lik (N,), init_counts (K,), trans_counts (K, K), gamma (N, T, K))``.

    ``gamma[n, t, k] = p(z_t = k | x_n)`` on observed steps (0 on masked ones); counts are
    summed over sequences. All come from one backward pass through the forward algorithm.
    """
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (log_init, log_trans, log_emit)]
        log_lik = forward_log_likelihood(*leaves, mask)
        grads = torch.autograd.grad(log_lik.sum(), leaves)
    return (log_lik.detach(), *grads)


def posterior_marginals(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """``p(z_t = k | x_{1:T})``, ``(N, T, K)``; zero rows at masked steps."""
    return expected_counts(log_init, log_trans, log_emit, mask)[3]


@torch.no_grad()
def viterbi(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
            mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable state path by max-product: ``(paths (N, T) long, log_joint (N,))``.

    ``log_joint`` is ``log p(x, z*)`` of the best path up to each sequence's last observed step;
    ``paths`` holds ``-1`` after that step.
    """
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    log_emit = log_emit.masked_fill(~mask.unsqueeze(-1), 0.0)
    n, steps, _ = log_emit.shape
    delta = log_init + log_emit[:, 0]
    deltas, pointers = [delta], []
    for t in range(1, steps):
        scores = delta.unsqueeze(-1) + log_trans  # (N, K_prev, K_next)
        delta, best_prev = scores.max(dim=1)
        delta = delta + log_emit[:, t]
        deltas.append(delta)
        pointers.append(best_prev)
    # The path ends at each sequence's own last observed step; later deltas are padding.
    last = last_observed(mask)
    end_delta = torch.stack(deltas, dim=1)[torch.arange(n, device=last.device), last.clamp(min=0)]
    log_joint, state = end_delta.max(dim=-1)
    return _backtrack(state, last, lambda t, nxt: pointers[t].gather(1, nxt.unsqueeze(1)).squeeze(1), steps), log_joint


def _backtrack(end_state: torch.Tensor, last: torch.Tensor, step_back, steps: int) -> torch.Tensor:
    """Fill ``(N, T)`` states from ``end_state`` at ``last`` backwards with ``step_back(t, z_{t+1})``."""
    path = torch.full((end_state.shape[0], steps), -1, dtype=torch.long, device=end_state.device)
    state = end_state
    for t in range(steps - 1, -1, -1):
        if t < steps - 1:
            state = torch.where(last > t, step_back(t, state.clamp(min=0)), state)
        path[:, t] = torch.where(last >= t, state, -1)
    return path


@torch.no_grad()
def sample_posterior(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                     mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of ``z ~ p(z | x)`` per sequence by forward-filter backward-sample, ``(N, T)``.

    ``-1`` after each sequence's last observed step.
    """
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    _, filtered = forward_log_likelihood(log_init, log_trans, log_emit, mask, return_filtered=True)
    n, steps, _ = filtered.shape
    trans = log_trans.exp()
    last = last_observed(mask)

    def draw(probs: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def step_back(t: int, nxt: torch.Tensor) -> torch.Tensor:
        # p(z_t | z_{t+1}, x_{1:t}) is proportional to filtered_t(z_t) * p(z_{t+1} | z_t).
        return draw(filtered[:, t] * trans[:, nxt].T)

    end = draw(filtered[torch.arange(n, device=last.device), last.clamp(min=0)])
    return _backtrack(end, last, step_back, steps)


# ----------------------------------------------------------------------------- brute force (for tests)

def _all_paths(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit_seq: torch.Tensor):
    """``(paths (K^T, T), log_joint (K^T,))`` of one sequence ``(T, K)``, by enumeration."""
    steps, k = log_emit_seq.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=steps)), dtype=torch.long)
    score = log_init[paths[:, 0]] + log_emit_seq[torch.arange(steps), paths].sum(dim=1)
    if steps > 1:
        score = score + log_trans[paths[:, :-1], paths[:, 1:]].sum(dim=1)
    return paths, score


def brute_force_log_likelihood(log_init, log_trans, log_emit, mask=None) -> torch.Tensor:
    """Reference ``log p(x)`` ``(N,)`` summing all ``K^T`` paths of each sequence truncated to its
    last observed step (tiny problems only)."""
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    out = []
    for n, last in enumerate(last_observed(mask).tolist()):
        emit = log_emit[n, : last + 1].masked_fill(~mask[n, : last + 1].unsqueeze(-1), 0.0)
        out.append(torch.logsumexp(_all_paths(log_init, log_trans, emit)[1], dim=0))
    return torch.stack(out)


def brute_force_posterior(log_init, log_trans, log_emit, mask=None):
    """Reference ``(best paths (N, T), best log joints (N,), marginals (N, T, K))`` by enumeration."""
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    n_seq, steps, k = log_emit.shape
    paths_out = torch.full((n_seq, steps), -1, dtype=torch.long)
    best_out = torch.empty(n_seq, dtype=log_emit.dtype)
    marg_out = torch.zeros(n_seq, steps, k, dtype=log_emit.dtype)
    for n, last in enumerate(last_observed(mask).tolist()):
        emit = log_emit[n, : last + 1].masked_fill(~mask[n, : last + 1].unsqueeze(-1), 0.0)
        paths, score = _all_paths(log_init, log_trans, emit)
        best = int(score.argmax())
        paths_out[n, : last + 1] = paths[best]
        best_out[n] = score[best]
        weights = (score - torch.logsumexp(score, 0)).exp()
        one_hot = torch.nn.functional.one_hot(paths, k).to(weights.dtype)
        marg_out[n, : last + 1] = torch.einsum("p,ptk->tk", weights, one_hot)
    marg_out = marg_out * mask.unsqueeze(-1)
    return paths_out, best_out, marg_out
