"""Trace-level helpers every generic capability uses, written once on Pyro's public API.

Training, evaluation, KL control, diagnostics and inspection all read a pair the same way:
trace the guide, replay the model on its values, and look at the sites. The rules for what a
site *is* (a random variable, a latent one, a plate's bookkeeping, a point mass), how deep
the plates go, which tensors are the pair's parameters and how to put a pair back as it was
live here, so that every capability answers these questions identically.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import nn

from .base import batch_plate_frames
from .checkpoint import rng_state, set_rng_state

# ----------------------------------------------------------------------------- what a site is


def is_subsample(site: Mapping[str, Any]) -> bool:
    """A plate's own bookkeeping site (plates record their subsample indices as sample sites)."""
    return site_is_subsample(site)


def is_random(site: Mapping[str, Any]) -> bool:
    """A sample site that is a random variable (observed or not), not a plate's bookkeeping."""
    return site["type"] == "sample" and not site_is_subsample(site)


def is_auxiliary(site: Mapping[str, Any]) -> bool:
    """A guide-only random variable (``infer={"is_auxiliary": True}``, as autoguides draw their
    unconstrained latents): part of ``q``'s density, with no counterpart in the model."""
    return bool((site.get("infer") or {}).get("is_auxiliary", False))


def is_latent_site(site: Mapping[str, Any]) -> bool:
    """A latent random variable: not observed, not a plate's bookkeeping, not auxiliary."""
    return is_random(site) and not site["is_observed"] and not is_auxiliary(site)


def is_deterministic(site: Mapping[str, Any]) -> bool:
    """A ``pyro.deterministic`` value (Pyro records it as an observed point mass)."""
    return bool((site.get("infer") or {}).get("_deterministic", False))


def unwrap_independent(fn: Any) -> tuple[Any, int]:
    """``(base distribution, number of batch dims reinterpreted as event)`` through ``Independent``."""
    ndims = 0
    while isinstance(fn, torch.distributions.Independent):
        ndims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, ndims


def base_distribution(fn: Any) -> Any:
    """The distribution inside the containers Pyro adds (``to_event``, ``mask``, ``expand``)."""
    while isinstance(fn, (torch.distributions.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def is_point_mass(fn: Any) -> bool:
    """A ``Delta`` (possibly wrapped): a point-mass guide, or an autoguide's transformed value."""
    return isinstance(base_distribution(fn), dist.Delta)


def is_categorical_index(fn: Any) -> bool:
    """A ``Categorical`` (an integer index, not a one-hot vector), possibly wrapped."""
    base = base_distribution(fn)
    return isinstance(base, torch.distributions.Categorical) and not isinstance(base, torch.distributions.OneHotCategorical)


def enumeration_mark(site: Mapping[str, Any]) -> str | None:
    """``"parallel"``/``"sequential"`` when a latent site is marked for enumeration
    (``config_enumerate`` or ``infer={"enumerate": ...}``), else None."""
    if not is_random(site) or site["is_observed"]:
        return None
    return (site.get("infer") or {}).get("enumerate") or None


def data_plate_frame(site: Mapping[str, Any], batch_size: int, data_plate: str | None = None,
                     exclude: tuple[str, ...] = ()) -> Any | None:
    """The frame of the plate over the batch's datapoints that ``site`` sits in, or None for a
    *global* site (outside it). By the one rule of :func:`pyro_lvm.base.batch_plate_frames`; a
    site in several candidate plates is ambiguous and refused, with the way out."""
    frames = batch_plate_frames(site["cond_indep_stack"], batch_size, data_plate, exclude=exclude)
    if len(frames) > 1:
        raise ValueError(
            f"site {site['name']!r} sits in several plates of the batch size {batch_size} "
            f"({[(f.name, f.size) for f in site['cond_indep_stack']]}): name the data plate with "
            "data_plate='<name>' (or use a batch size no other plate has)")
    return frames[0] if frames else None


def local_and_global(trace: Any, batch_size: int, data_plate: str | None = None, auxiliary: bool = False,
                     exclude: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """``(local, global)`` names of a trace's latent sites (with ``auxiliary``: auxiliary ones too):
    inside the data plate, one per datapoint, or outside it, shared by all."""
    local, global_ = [], []
    for name, site in trace.nodes.items():
        if is_latent_site(site) or (auxiliary and is_random(site) and is_auxiliary(site) and not site["is_observed"]):
            (local if data_plate_frame(site, batch_size, data_plate, exclude) is not None else global_).append(name)
    return local, global_


# ----------------------------------------------------------------------------- tracing


def replay_model(model: Callable, guide_trace: Any, args: tuple, kwargs: dict) -> Any:
    """The model's trace with its latent sites set to the guide trace's values."""
    return poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)


def guide_and_model_traces(model: Callable, guide: Callable, args: tuple = (), kwargs: dict | None = None,
                           grad: bool = False) -> tuple[Any, Any]:
    """Trace the guide, replay the model on its values: ``(guide_trace, model_trace)``.

    The calls and their order are those of Pyro's ``Trace_ELBO``, so the same random numbers
    give the same latent values. ``grad=False`` runs without building autograd graphs.
    """
    kwargs = kwargs or {}
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = replay_model(model, guide_trace, args, kwargs)
    return guide_trace, model_trace


def detached(trace: Any) -> Any:
    """A copy of ``trace`` whose sample values are cut from the autograd graph."""
    out = trace.copy()
    for site in out.nodes.values():
        if site["type"] == "sample" and isinstance(site.get("value"), torch.Tensor):
            site["value"] = site["value"].detach()
    return out


def max_plate_nesting(*traces: Any) -> int:
    """How many batch dimensions the sites of these traces use: the deepest vectorised
    plate dimension (``-dim``), so a plate declared at ``dim=-3`` counts 3 even without
    plates at -1 and -2. Enumeration and particle plates go to the left of it."""
    dims = [-f.dim for tr in traces for s in tr.nodes.values() if is_random(s)
            for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a look at a program (a trace for its shapes or marks) without moving any random
    generator, so that the numbers of the run around it do not depend on the look."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def pair_plate_nesting(model: Callable, guide: Callable, args: tuple = (), kwargs: dict | None = None) -> int:
    """:func:`max_plate_nesting` of one guide-then-model run (no gradients, random state untouched)."""
    with preserved_rng():
        return max_plate_nesting(*guide_and_model_traces(model, guide, args, kwargs))


def enumerated_sites(*traces: Any) -> list[str]:
    """Names of the latent sites of these traces marked for enumeration, in trace order."""
    names: list[str] = []
    for tr in traces:
        for name, site in tr.nodes.items():
            if enumeration_mark(site) and name not in names:
                names.append(name)
    return names


# ----------------------------------------------------------------------------- parameters


def _leaves(loss: torch.Tensor | None) -> set[int]:
    """ids of the leaf tensors ``loss`` depends on (a walk of its autograd graph, no backward)."""
    if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
        return set()
    found: set[int] = set()
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            found.add(id(variable))
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _module_tensor(site: Mapping[str, Any]) -> torch.Tensor | None:
    """The ``nn.Parameter`` that ``pyro.module`` passed to ``pyro.param``, when the param store
    returned a different tensor (a stale entry, or one restored from a saved state)."""
    args = site.get("args") or ()
    init = args[1] if len(args) > 1 else None
    if isinstance(init, nn.Parameter) and init.requires_grad and init is not site["value"].unconstrained():
        return init
    return None


def named_parameters(pair: Any, param_sites: Iterable[Mapping[str, Any]], loss: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """The pair's trainable tensors by name, in a deterministic order.

    First the parameters of the pair itself when it is an ``nn.Module`` (``named_parameters``
    order), then the ``pyro.param`` sites of a run (``param_sites``, e.g. from
    ``poutine.trace(param_only=True)``) by sorted name, each tensor once.

    ``pyro.module(name, m)`` hands Pyro the module's own parameters; when the param store
    already held that name (a pair trained earlier in the process without
    ``pyro.clear_param_store()``, or a store restored from a checkpoint) Pyro returns the
    stored tensor while the module keeps computing with its own. Of the two, the tensor the
    run's ``loss`` depends on is the parameter (the module's when neither is reached), and the
    param store entry is pointed at it, so that a stale tensor is never trained and the store
    holds what the module uses.
    """
    reached = _leaves(loss)
    named: dict[str, torch.Tensor] = {}
    ids: set[int] = set()

    def add(name: str, tensor: torch.Tensor) -> None:
        if id(tensor) in ids or not tensor.requires_grad:
            return
        while name in named:
            name += " [param store]"
        named[name] = tensor
        ids.add(id(tensor))

    if isinstance(pair, nn.Module):
        for name, p in pair.named_parameters():
            add(name, p)
    store = pyro.get_param_store()
    for site in sorted(param_sites, key=lambda s: s["name"]):
        stored = site["value"].unconstrained()
        module_tensor = _module_tensor(site)
        if module_tensor is not None and (id(module_tensor) in reached or id(stored) not in reached):
            store[site["name"]] = module_tensor  # the store follows the module (no copy: the same tensor)
            stored = module_tensor
        add(site["name"], stored)
    return named


def discover_parameters(pair: Any, compute_loss: Callable[[], torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``compute_loss()`` once, recording its ``pyro.param`` sites; return
    ``(named parameters, the loss)`` (see :func:`named_parameters`)."""
    with poutine.trace(param_only=True) as capture:
        loss = compute_loss()
    return named_parameters(pair, capture.trace.nodes.values(), loss), loss


# ----------------------------------------------------------------------------- snapshot / restore


def snapshot(pair: Any) -> dict[str, Any]:
    """A deep copy of everything a pair's training changes: ``{"pair": state_dict or None,
    "param_store": param store state}`` (plain tensors and dicts)."""
    return {
        "pair": copy.deepcopy(pair.state_dict()) if isinstance(pair, nn.Module) else None,
        "param_store": copy.deepcopy(pyro.get_param_store().get_state()),
    }


def restore_param_store(state: Mapping[str, Any], drop_others: bool = False,
                        sites: Iterable[Mapping[str, Any]] = ()) -> None:
    """Put the param store back to ``state`` (``ParamStoreDict.get_state()`` format) *in place*.

    Values are copied into the tensors the store holds now, so tensors held elsewhere (an
    optimiser, a ``PyroModule``, a ``pyro.module`` module) see them; names missing now are
    added. ``drop_others`` deletes entries created since (e.g. running-average baselines).
    ``sites``: param sites of a recent run; a ``pyro.module`` parameter the store shadows
    (see :func:`named_parameters`) receives the restored value too.
    """
    store = pyro.get_param_store()
    saved = state["params"]
    constraints_ = state.get("constraints", {})
    if drop_others:
        for name in [n for n in store.keys() if n not in saved]:
            del store[name]
    for name, value in saved.items():
        if name in store and store.get_param(name).unconstrained().shape == value.shape:
            with torch.no_grad():
                store.get_param(name).unconstrained().copy_(value)
        else:  # insert the unconstrained value itself: a round trip through the constraint is not exact
            if name in store:
                del store[name]
            constraint = constraints_.get(name, torch.distributions.constraints.real)
            store.set_state({"params": {name: value.detach().clone().requires_grad_(value.requires_grad)},
                             "constraints": {name: constraint}})
    for site in sites:
        module_tensor = _module_tensor(site)
        if module_tensor is not None and site["name"] in saved:
            with torch.no_grad():
                module_tensor.copy_(saved[site["name"]])


def restore(pair: Any, snap: Mapping[str, Any]) -> None:
    """Undo training since :func:`snapshot`: the module's state and the param store, in place."""
    if isinstance(pair, nn.Module) and snap.get("pair") is not None:
        pair.load_state_dict(snap["pair"])
    restore_param_store(snap["param_store"], drop_others=True)


def kl_units(q: Any, p: Any) -> torch.Size:
    """The shape of a site's KL *units* (its dimensions for free bits and diagnostics): the batch
    dims that ``Independent`` folded into the event, when guide and prior are both such
    products of the same shape (``Normal(...).to_event(1)``: one unit per coordinate;
    ``OneHotCategorical(...).to_event(1)``: one per categorical variable). A site whose KL does
    not split so (a scalar site, a ``MultivariateNormal``) is one unit: ``()``."""
    (qb, qn), (pb, pn) = unwrap_independent(q), unwrap_independent(p)
    if qn == 0 or qn != pn or qb.event_shape != pb.event_shape:
        return torch.Size()
    return q.event_shape[:qn]


def site_kl(name: str, q: Any, p: Any, value: torch.Tensor, per_dimension: bool, analytic: bool = True
            ) -> tuple[torch.Tensor, bool]:
    """KL of one latent site: ``(batch_shape + kl_units(q, p), analytic?)`` when
    ``per_dimension``, else ``(batch_shape, analytic?)`` (summed over the event). Analytic
    where PyTorch knows the KL (unless ``analytic=False``), else ``log q - log p`` at ``value``."""
    if per_dimension and kl_units(q, p):
        q, p = unwrap_independent(q)[0], unwrap_independent(p)[0]   # batch_shape: the site's + its units
    if analytic:
        try:
            return _broadcast(torch.distributions.kl_divergence(q, p), q.batch_shape), True
        except NotImplementedError:
            pass
    return _broadcast(q.log_prob(value) - p.log_prob(value), q.batch_shape), False


def _broadcast(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``t`` expanded to ``shape``, keeping any extra dims on the left (enumerated values, a
    prior that depends on an enumerated variable)."""
    return t.expand(torch.broadcast_shapes(t.shape, shape))


# ----------------------------------------------------------------------------- autoguides

def autoguides(pair: Any) -> list[Any]:
    """The Pyro autoguides a pair holds: its guide, its submodules, its attributes."""
    from pyro.infer.autoguide import AutoGuide

    roots = [pair, getattr(pair, "guide", None), *getattr(pair, "__dict__", {}).values()]
    found: dict[int, Any] = {}
    for root in roots:
        if isinstance(root, nn.Module):
            found.update((id(m), m) for m in root.modules() if isinstance(m, AutoGuide))
    return list(found.values())


def per_position_sites(pair: Any, data_plate: str | None = None) -> list[tuple[str, str, str, int]]:
    """``(site, autoguide, plate, size)`` for each latent an autoguide of ``pair`` draws inside the
    plate over the datapoints (:func:`~pyro_lvm.base.batch_plate_frames` of the batch the
    autoguide was set up on) without subsampling.

    An autoguide is not amortised: there it holds one parameter per *position* of the plate
    (``size`` of them), which stays tied to a datapoint only if every call sees the same
    datapoints in the same order. Autoguides that have not run yet (no ``prototype_trace``)
    have no such parameters yet and are left out.
    """
    from .base import batch_size

    found = []
    for guide in autoguides(pair):
        prototype = getattr(guide, "prototype_trace", None)
        if prototype is None or "_INPUT" not in prototype.nodes:
            continue
        inputs = prototype.nodes["_INPUT"]
        try:
            n = batch_size((*inputs["args"], *inputs["kwargs"].values()))
        except ValueError:   # no tensor with a datapoint dimension: no plate over datapoints either
            continue
        for name, site in prototype.nodes.items():
            if not is_random(site) or site["is_observed"]:
                continue
            for frame in batch_plate_frames(site["cond_indep_stack"], n, data_plate):
                if (frame.full_size or frame.size) == frame.size:
                    found.append((name, type(guide).__name__, frame.name, frame.size))
    return found
