"""Every registered model trains on the CPU and, where there is one, on a GPU.

The models come from the inspection registry (one small example batch each); a step is the
pair's own objective, backward, and a check that loss and gradients are finite and live on the
device asked for (tensors made inside a model must follow the data, not default to the CPU).
"""

import math

import pyro
import pytest
import torch

from pyro_lvm import fit
from pyro_lvm.base import batch_args, batch_to
from pyro_lvm.tasks import INSPECTABLE
from pyro_lvm.tasks.inspect_task import build_example

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))]


def objective_of(pair):
    """The objective a pair trains with: its own ``objective()``/``elbo()`` or Trace_ELBO."""
    for name in ("objective", "elbo"):
        if callable(getattr(pair, name, None)):
            return getattr(pair, name)()
    return pyro.infer.Trace_ELBO()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(INSPECTABLE))
def test_one_training_step_on_device(name, device):
    torch.manual_seed(0)
    pair, batch, _ = build_example(name)
    pair.to(device)
    args, kwargs = batch_args(batch_to(batch, torch.device(device)))
    loss = objective_of(pair).differentiable_loss(pair.model, pair.guide, *args, **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and loss.device.type == device
    grads = [p.grad for p in pair.parameters() if p.grad is not None]
    assert grads and all(g.device.type == device and bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("device", DEVICES)
def test_fit_moves_pair_and_batches_to_the_device(device):
    torch.manual_seed(0)
    pair, batch, _ = build_example("vae")
    history = fit(pair, batch, batch, epochs=2, batch_size=2, device=device)
    assert len(history) == 2 and next(pair.parameters()).device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_follows_the_pair_to_its_device(device):
    from pyro_lvm import evaluation_report
    from pyro_lvm.evaluation.diagnostics import active_units, mutual_information

    torch.manual_seed(0)
    pair, batch, _ = build_example("vae")
    pair.to(device)
    report = evaluation_report(pair, batch, num_samples=10, psis_samples=10)  # batch stays on the CPU
    assert all(torch.isfinite(torch.tensor(report[k])) for k in ("elbo", "kl", "log_likelihood"))
    # A Monte Carlo estimate on 4 points may dip below 0; it must run and be finite.
    assert 0 <= active_units(pair, batch) <= 2 and math.isfinite(mutual_information(pair, batch))
