"""How the format-1 fixtures here were made: with the code before the safe checkpoint format
(commit 6574297), ``PYTHONPATH=. python tests/data/format1/make_format1.py OUT``, then
``OUT/vae_fit/last.pt`` -> ``vae_last.pt``, ``OUT/params_fit/last.pt`` -> ``params_last.pt`` and
``OUT/vae_run/{config.json,vae/best.pt}`` -> ``vae_run/``. tests/test_safety.py loads and resumes them."""
import sys, shutil
from pathlib import Path
import pyro, pyro.distributions as dist, torch
from pyro_lvm import fit, set_seed
from pyro_lvm.models import VAE
from pyro_lvm.cli import main
torch.set_num_threads(1)
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
X = (torch.rand(96, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
set_seed(0)
fit(VAE(16, 3, (12,)), X, X[:20], epochs=2, batch_size=32, seed=3, progress=False, checkpoint_dir=out / "vae_fit")

class ParamPair:
    def model(self, x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
    def guide(self, x):
        w = pyro.param("w", torch.zeros(2), constraint=dist.constraints.interval(-5.0, 5.0))
        s = pyro.param("s", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * w, s).to_event(1))
pyro.clear_param_store()
x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1)) + 3
fit(ParamPair(), x, epochs=2, batch_size=10, lr=0.05, progress=False, checkpoint_dir=out / "params_fit")
assert main(["train", "vae", "--epochs", "1", "--hidden", "4", "--z-dim", "2", "--samples", "3", "--no-autoencoder",
             "--no-figures", "--out", str(out / "vae_run")]) == 0
