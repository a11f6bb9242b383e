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
distribution is renormalised, so nothing grows or shrinks with ``T``. The recursions run on
packed rows (:func:`pack_sequences`): the sequences sorted by length, so the steps after a
sequence's end are neither stored nor computed, and per step the work is a handful of
operations on contiguous views (on a CPU their dispatch, not the arithmetic, is what a step
costs at small ``K``).

Posterior marginals and expected transition counts are gradients of the log-likelihood
(Eisner 2016, "Inside-outside and forward-backward algorithms are just backprop").
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

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
    _check_chain_tables(log_init, log_trans, k)
    if mask is None:
        return torch.ones(n, t, dtype=torch.bool, device=log_emit.device)
    if mask.shape != (n, t):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but the observations need ({n}, {t})")
    return mask.bool()


def _check_chain_tables(log_init: torch.Tensor, log_trans: torch.Tensor, k: int) -> None:
    if log_init.shape != (k,) or log_trans.shape != (k, k):
        raise ValueError(f"log_init must be ({k},) and log_trans ({k}, {k}) for K={k} states; got "
                         f"{tuple(log_init.shape)} and {tuple(log_trans.shape)}")


def last_observed(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True step of each row of ``mask`` ``(N, T)`` -> ``(N,)`` (-1 if none)."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask, steps, -1).max(dim=1).values


class SequencePacking(NamedTuple):
    """The steps of ``N`` padded sequences up to each one's last observed step, as ``R`` rows
    sequence by sequence (the row order of ``mask.nonzero()`` when only trailing steps are
    unobserved), and where the recursions keep each row: padding after a sequence's end has no
    row and costs nothing. Build it with :func:`pack_sequences`.

    The recursions run step by step over the sequences sorted by length (longest first), so the
    ``sizes[s]`` sequences still running at step ``s`` are one contiguous block of each chain:
    chain 0 (forward) holds step ``t`` of the ``j``-th longest sequence at ``offsets[t] + j``;
    chain 1 (backward, run from each sequence's own last step) holds it at ``offsets[length - 1
    - t] + j``. Each chain has ``R + 1`` places; the last is a zero row.
    """

    sizes: list                 # sizes[s]: how many sequences have a step s (s < the longest length)
    rows: torch.Tensor          # (R,) flat index n * T + t of each row into (N, T) tables
    seq: torch.Tensor           # (R,) the sequence n of each row
    fwd: torch.Tensor           # (R,) the place of each row in chain 0
    nxt: torch.Tensor           # (R,) the place, in both chains flattened, of the next step in chain 1 (R: zero)
    src: torch.Tensor           # (2 R + 2,) the row each place of both chains flattened holds (0 at the zero rows)
    firsts: torch.Tensor        # (N_nonempty,) the rows at step 0
    lasts: torch.Tensor         # (N_nonempty,) the rows at each sequence's last observed step
    holes: torch.Tensor | None  # (R, 1) bool: an unobserved step before the end; None if there is none
    num_sequences: int          # N


def _inverse(places: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes ``places`` ``(R,)`` (a permutation of ``0 .. R - 1``)."""
    return torch.empty_like(places).index_copy_(0, places, torch.arange(len(places), device=places.device))


def pack_sequences(mask: torch.Tensor) -> SequencePacking:
    """The :class:`SequencePacking` of ``mask`` ``(N, T)`` (bool, True where a step is observed)."""
    n, steps = mask.shape
    lengths = last_observed(mask) + 1                                  # (N,)
    by_length, order = lengths.sort(descending=True, stable=True)
    s = torch.arange(int(by_length[0]) if n else 0, device=mask.device)
    sizes = (by_length > s.unsqueeze(-1)).sum(1)                       # (S,)
    offsets = sizes.cumsum(0) - sizes
    seq = torch.repeat_interleave(torch.arange(n, device=mask.device), lengths)
    starts = lengths.cumsum(0) - lengths
    step = torch.arange(len(seq), device=mask.device) - starts.index_select(0, seq)
    rank = _inverse(order).index_select(0, seq)
    back = lengths.index_select(0, seq) - 1 - step                     # this step's place in chain 1's order
    fwd, bwd = offsets.index_select(0, step) + rank, offsets.index_select(0, back) + rank
    r, zero = len(seq), seq.new_zeros(1)
    nonempty = lengths > 0
    lasts = (starts + lengths - 1)[nonempty]
    # Rows run sequence by sequence, so the next step of row i is row i + 1.
    nxt = torch.cat([bwd[1:], zero]).add_(r + 1).index_fill_(0, lasts, r)
    holes = None
    if int(mask.sum()) < r:  # unobserved steps inside a sequence
        holes = ~mask.reshape(-1)[seq * steps + step].unsqueeze(-1)
    return SequencePacking(sizes.tolist(), seq * steps + step, seq, fwd, nxt,
                           torch.cat([_inverse(fwd), zero, _inverse(bwd), zero]), starts[nonempty], lasts, holes, n)


def _scaled_recursions(log_init, log_trans, emit, pack: SequencePacking, chains: int):
    """The scaled recursions of all sequences: ``(log p(x) (N,), table (C, R + 1, K))``.

    ``emit`` ``(R, K)``: ``log p(x_t | z_t)`` of each packed row. ``table[0]`` holds the
    normalised forward rows ``alpha_t`` and, with ``C = 2`` chains, ``table[1]`` the normalised
    backward rows ``u_t = e_t beta_t`` (``u_{t-1} = (u_t @ T.T) * e_{t-1}``, the forward's form),
    in the places of :class:`SequencePacking`. Per step one batched matmul, an in-place product,
    a sum and an in-place division on views of the table: on a CPU each operation costs
    microseconds of dispatch, so everything else is done on whole tensors outside the loop.
    """
    r, k = emit.shape
    if pack.holes is not None:  # an unobserved step: emission 1, shift 0
        emit = emit.masked_fill(pack.holes, 0.0)
    shift = emit.amax(dim=-1, keepdim=True)  # so that exp cannot underflow to all zeros
    table = (emit - shift).exp_().index_select(0, pack.src[: chains * (r + 1)]).view(chains, r + 1, k)
    table[:, r] = 0.0
    trans = log_trans.exp()
    mats = torch.stack([trans, trans.T])[:chains]
    norms = table.new_empty(chains, r + 1, 1)
    blocks = pack.sizes + [1]
    prev, size = None, 0
    for b, v, norm in zip(pack.sizes, table.split(blocks, 1), norms.split(blocks, 1)):
        if prev is None:
            v[0].mul_(log_init.exp())
        else:
            v.mul_(torch.bmm(prev if b == size else prev[:, :b], mats))
        torch.sum(v, dim=-1, keepdim=True, out=norm)
        prev, size = v.div_(norm), b
    terms = norms[0].view(-1).index_select(0, pack.fwd).log_().add_(shift.view(-1))
    return emit.new_zeros(pack.num_sequences).index_add_(0, pack.seq, terms), table


def _packed_rows(log_emit: torch.Tensor, pack: SequencePacking) -> torch.Tensor:
    """The rows ``(R, K)`` of a padded table ``log_emit`` ``(N, T, K)`` that ``pack`` keeps."""
    n, steps, k = log_emit.shape
    flat = log_emit.reshape(n * steps, k)
    return flat if len(pack.rows) == n * steps else flat.index_select(0, pack.rows)  # all steps, in order


@torch.no_grad()
def _filter(log_init, log_trans, log_emit, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x) (N,), filtered p(z_t | x_{1:t}) (N, T, K))`` by the forward recursion alone;
    uniform rows after each sequence's last observed step (where its chain has stopped)."""
    n, steps, k = log_emit.shape
    pack = pack_sequences(mask)
    log_lik, table = _scaled_recursions(log_init, log_trans, _packed_rows(log_emit, pack), pack, 1)
    filtered = log_emit.new_full((n * steps, k), 1.0 / k).index_copy_(0, pack.rows, table[0].index_select(0, pack.fwd))
    return log_lik, filtered.view(n, steps, k)


class _ForwardAlgorithm(torch.autograd.Function):
    """``log p(x)`` per sequence from packed emission rows, with its exact gradient, the
    classical expected counts: ``d log p / d emit[r, k] = p(z_t = k | x)`` and ``d log p / d
    log_trans[i, j] = sum_t p(z_{t-1} = i, z_t = j | x)`` (Eisner 2016).

    When a gradient is needed the forward (alpha) and backward recursions run in the same loop,
    stacked into one batched matmul per step (:func:`_scaled_recursions`); the backward one
    reads each sequence from its own last observed step, so both start at their boundary
    together. Both are scaled independently and the posteriors renormalise them: ``beta_t =
    u_{t+1} @ T.T`` (1 at the last step), ``gamma_t = alpha_t beta_t / z_t`` and ``xi_t =
    alpha_{t-1} T u_t / z_{t-1}`` with ``z_t = sum_k alpha_t beta_t``. Hand-written rather than
    autograd through the loop: see ``benchmarks/hmm_speed.py`` for the measured difference.
    """

    @staticmethod
    def forward(ctx, log_init, log_trans, emit, pack):
        chains = 2 if any(ctx.needs_input_grad[:3]) else 1
        log_lik, table = _scaled_recursions(log_init, log_trans, emit, pack, chains)
        if chains > 1:
            ctx.pack = pack
            ctx.save_for_backward(log_trans, table)
        return log_lik

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative raises
    def backward(ctx, grad):
        log_trans, table = ctx.saved_tensors
        pack, flat = ctx.pack, table.view(-1, table.shape[-1])
        trans = log_trans.exp()
        alphas, u_next = flat.index_select(0, pack.fwd), flat.index_select(0, pack.nxt)  # (R, K) each
        gamma = (u_next @ trans.T).index_fill_(0, pack.lasts, 1.0).mul_(alphas)  # alpha_t beta_t
        weight = grad.index_select(0, pack.seq).unsqueeze(-1) / gamma.sum(dim=-1, keepdim=True)  # (R, 1)
        gamma.mul_(weight)  # posterior marginals times the upstream gradient
        grad_init = gamma.index_select(0, pack.firsts).sum(0)  # step 0 of every sequence, observed or not
        if pack.holes is not None:
            gamma.masked_fill_(pack.holes, 0.0)
        grad_trans = (alphas.mul_(weight).T @ u_next).mul_(trans)  # u_next is 0 after each last step
        return grad_init, grad_trans, gamma, None


def packed_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, emit: torch.Tensor,
                          pack: SequencePacking) -> torch.Tensor:
    """``log p(x)`` ``(N,)`` from the emission terms of the packed rows only, ``emit`` ``(R, K)``
    (row ``r`` holds ``log p(x_t | z_t)`` at ``pack.rows[r]``; its value at ``pack.holes`` is
    ignored). What :func:`forward_log_likelihood` computes, without the padded ``(N, T, K)``
    table: the fast path of :class:`~pyro_lvm.models.hmm.hmm.HMM` evaluates its emissions on
    these rows. Differentiable in all three tables (first derivatives only)."""
    if not isinstance(pack, SequencePacking):
        raise TypeError(f"pack must be the SequencePacking of the batch's mask (pack_sequences(mask)), "
                        f"got {type(pack).__name__}")
    if emit.dim() != 2 or emit.shape[0] != len(pack.rows):
        raise ValueError(f"emit must have shape ({len(pack.rows)}, K), one row per packed step (pack.rows), "
                         f"got {tuple(emit.shape)}")
    _check_chain_tables(log_init, log_trans, emit.shape[1])
    return _ForwardAlgorithm.apply(log_init, log_trans, emit, pack)


def forward_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                           mask: torch.Tensor | None = None, return_filtered: bool = False):
    """``log p(x_{1:T})`` of each sequence, ``(N,)``, by the scaled forward algorithm.

    Differentiable in all three tables (first derivatives only: the gradient is written by
    hand). With ``return_filtered=True`` also returns the filtered distributions
    ``p(z_t | x_{1:t})`` as ``(N, T, K)`` (no gradient; used by forward-filter backward-sample).
    """
    mask = check_hmm_inputs(log_init, log_trans, log_emit, mask)
    if return_filtered:
        return _filter(log_init, log_trans, log_emit, mask)
    pack = pack_sequences(mask)
    return _ForwardAlgorithm.apply(log_init, log_trans, _packed_rows(log_emit, pack), pack)


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
