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

import torch
from torch.autograd.function import once_differentiable


def check_hmm_inputs(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Validate shapes; return the mask as a bool ``(N, T)`` tensor (all True when ``None``)."""
    if log_emit.dim() != 3:
        raise ValueError(f"log_emit must have shape (N, T, K), got {tuple(log_emit.shape)}")
    n, t, k = log_emit.shape
    if k < 1:
        raise ValueError(f"number of states must be positive, got {k}")
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


def _scaled_forward(init: torch.Tensor, trans: torch.Tensor, emit: torch.Tensor, active: torch.Tensor):
    """Filtered ``alpha (N, T, K)`` and normalisers ``c (N, T)`` for probabilities ``init (K,)``,
    ``trans (K, K)`` and shifted emission likelihoods ``emit (N, T, K)``. Where ``active (N, T, 1)``
    is False (after a sequence's last observed step) the chain stops: alpha is carried over."""
    # Per step only a matmul, a product, a sum and a division: on a CPU the loop costs about
    # 10 microseconds per operation, so everything that can is done on whole tensors outside it.
    everyone = active.all(dim=0).flatten().tolist()  # before the shortest sequence ends no where() is needed
    emit_t, active_t = emit.unbind(1), active.unbind(1)
    alphas, norms = [], []
    alpha = init * emit_t[0]
    for t in range(emit.shape[1]):
        if t > 0:
            new = (alpha @ trans) * emit_t[t]
            alpha = new if everyone[t] else torch.where(active_t[t], new, alpha)
        norm = alpha.sum(dim=-1, keepdim=True)
        alpha = alpha / norm
        alphas.append(alpha)
        norms.append(norm)
    return torch.stack(alphas, dim=1), torch.cat(norms, dim=1)


class _ForwardAlgorithm(torch.autograd.Function):
    """``log p(x)`` per sequence with its exact gradient from one backward (beta) recursion.

    Writing the gradient by hand rather than letting autograd record every operation of every
    step made loss + gradient 1.6x (16 states) to 2.8x (64 states) faster than autograd through a
    plain scaled forward (``benchmarks/hmm_speed.py``). The gradients
    are the classical expected counts: ``d log p / d log_emit[n, t, k] = p(z_t = k | x)`` and
    ``d log p / d log_trans[i, j] = sum_t p(z_{t-1} = i, z_t = j | x)`` (Eisner 2016).
    """

    @staticmethod
    def forward(ctx, log_init, log_trans, log_emit, active):
        shift = log_emit.max(dim=-1, keepdim=True).values  # exp() of the rest cannot underflow to all zeros
        init, trans, emit = log_init.exp(), log_trans.exp(), (log_emit - shift).exp()
        alphas, norms = _scaled_forward(init, trans, emit, active)
        ctx.save_for_backward(trans, emit, alphas, norms, active)
        return shift.squeeze(-1).sum(dim=1) + norms.log().sum(dim=1)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative raises
    def backward(ctx, grad):
        trans, emit, alphas, norms, active = ctx.saved_tensors
        # Scaled backward variables: beta_{t-1} = trans @ (emit_t beta_t / c_t), beta_{T-1} = 1;
        # beta stays 1 from each sequence's last observed step on (nothing after it is modelled).
        everyone = active.all(dim=0).flatten().tolist()
        scaled = emit / norms.unsqueeze(-1)  # emit_t / c_t
        scaled_t, active_t, trans_t = scaled.unbind(1), active.unbind(1), trans.T.contiguous()
        beta = torch.ones_like(emit[:, 0])
        betas = [beta]
        for t in range(emit.shape[1] - 1, 0, -1):
            new = (scaled_t[t] * beta) @ trans_t
            beta = new if everyone[t] else torch.where(active_t[t], new, beta)
            betas.append(beta)
        betas = torch.stack(betas[::-1], dim=1)
        g = grad.reshape(-1, 1, 1)
        grad_emit = alphas * betas * g  # posterior marginals gamma, times the upstream gradient
        grad_init = grad_emit[:, 0].sum(0)
        # xi summed over sequences and steps: alpha_{t-1}^T (emit_t beta_t / c_t), times trans.
        k = trans.shape[0]
        prev = (alphas[:, :-1] * g).reshape(-1, k)
        nxt = (scaled[:, 1:] * betas[:, 1:] * active[:, 1:]).reshape(-1, k)
        return grad_init, (prev.T @ nxt) * trans, grad_emit, None


def forward_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                           mask: torch.Tensor | None = None, return_filtered: bool = False):
    """``log p(x_{1:T})`` of each sequence, ``(N,)``, by the scaled forward algorithm.

    Differentiable in all three tables (first derivatives only: the gradient is written by
    hand). With ``return_filtered=True`` also returns the filtered distributions
    ``p(z_t | x_{1:t})`` as ``(N, T, K)`` (no gradient; used by forward-filter backward-sample).
    """
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    log_emit = log_emit.masked_fill(~mask.unsqueeze(-1), 0.0)
    steps = torch.arange(mask.shape[1], device=mask.device)
    active = (steps <= last_observed(mask).unsqueeze(-1)).unsqueeze(-1)  # (N, T, 1)
    if return_filtered:
        with torch.no_grad():
            shift = log_emit.max(dim=-1, keepdim=True).values
            alphas, norms = _scaled_forward(log_init.exp(), log_trans.exp(), (log_emit - shift).exp(), active)
            return shift.squeeze(-1).sum(dim=1) + norms.log().sum(dim=1), alphas
    return _ForwardAlgorithm.apply(log_init, log_trans, log_emit, active)


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
