"""Variable-type inspection, the PSIS guide diagnostic and the `pyro-lvm inspect` task."""

import argparse
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pyro_lvm import set_seed
from pyro_lvm.inspection import InspectionError, inspect_model, inspect_pair, render
from pyro_lvm.models import PPCA, VAE, Autoencoder
from pyro_lvm.models.attention_seq2seq import AttentionSeq2Seq
from pyro_lvm.evaluation.psis import pareto_khat, psis_khat, psis_report, psis_summary
from pyro_lvm.tasks import INSPECTABLE
from pyro_lvm.tasks.inspect_task import add_inspect_arguments, build_example, cli_inspect


def test_vae_z_is_latent_continuous_reparameterised_and_x_observed():
    report = inspect_pair(VAE(x_dim=6, z_dim=2, hidden=(4,)), torch.rand(3, 6))
    z, x = report["z"], report["x"]
    assert (z.observed, z.random, z.support, z.guide) == (False, True, "continuous", "reparameterised")
    assert (z.batch_shape, z.event_shape, z.plates) == ((3,), (2,), ("data[3]",))
    assert (x.observed, x.random, x.support, x.guide) == (True, True, "discrete", "")
    assert x.event_shape == (6,)
    assert report.missing_in_guide == [] and [r.name for r in report] == ["z", "x"]
    # Printed, markdown and plain-data forms carry the same facts.
    assert "reparameterised (Normal)" in str(report) and "| z | latent | random | continuous |" in report.to_markdown()
    assert report.to_dicts()[0]["guide"] == "reparameterised"


def test_autoencoder_guide_is_a_point_mass():
    z = inspect_pair(Autoencoder(x_dim=6, z_dim=2, hidden=(4,)), torch.rand(3, 6))["z"]
    assert (z.guide, z.distribution) == ("point mass", "ImproperUniform")


class Mixture(torch.nn.Module):
    """Two-component mixture; the guide's discrete site is enumerated by its infer dict."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(torch.ones(2) / 2))
            pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0])[c], 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 2)), infer={"enumerate": "parallel"})


def test_enumerated_discrete_site_is_reported_enumerated():
    c = inspect_pair(Mixture(), torch.randn(4))["c"]
    assert (c.support, c.guide, c.enumerate, c.observed) == ("discrete", "enumerated", "parallel", False)


def test_config_enumerate_and_model_side_enumeration_are_honoured():
    pair = Mixture()

    def plain_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 2)))

    assert inspect_model(pair.model, (torch.randn(4),), guide=plain_guide)["c"].guide == "score-function"
    assert inspect_model(pair.model, (torch.randn(4),), guide=plain_guide,
                         enumerate_guide="parallel")["c"].guide == "enumerated"

    def enum_model(x):  # enumerated in the model, summed out by TraceEnum_ELBO: no guide site needed
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0])[c], 1.0), obs=x)

    report = inspect_model(enum_model, (torch.randn(4),), guide=lambda x: None)
    assert report["c"].guide == "enumerated" and report.missing_in_guide == []


def test_guide_missing_a_latent_site_is_reported():
    def model(x):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x):
        pyro.sample("a", dist.Normal(0.0, 1.0))

    report = inspect_model(model, (torch.randn(5),), guide=guide)
    assert report.missing_in_guide == ["b"] and report["b"].guide == "MISSING"
    assert "MISSES latent site(s): b" in str(report)


def test_guide_site_absent_from_model_is_an_error():
    def guide(x):
        pyro.sample("zz", dist.Normal(0.0, 1.0))
        pyro.sample("aux", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})  # allowed

    with pytest.raises(InspectionError, match=r"\['zz'\] do not appear in the model"):
        inspect_model(lambda x: pyro.sample("x", dist.Normal(0.0, 1.0), obs=x), (torch.tensor(0.0),), guide=guide)


def test_failing_trace_names_the_site_and_shapes():
    def bad_obs(x):  # observed value of the wrong shape: found when scoring the site
        with pyro.plate("data", 3):
            pyro.sample("x", dist.Normal(torch.zeros(3, 4), 1.0).to_event(1), obs=x)

    with pytest.raises(InspectionError, match=r"site 'x' \(Normal with batch_shape \(3,\), event_shape \(4,\); value shape \(3, 5\)"):
        inspect_model(bad_obs, (torch.zeros(3, 5),))

    def bad_code(x):  # crashes between sites: the error names the last site and its shape
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ torch.ones(3, 3), 1.0).to_event(1), obs=x)

    with pytest.raises(InspectionError, match=r"model failed after site 'z' .*value shape \(4, 2\)"):
        inspect_model(bad_code, (torch.zeros(4, 3),))


def test_deterministic_params_factors_and_inputs_are_typed():
    def model(x, y):
        w = pyro.param("w", torch.ones(2))
        with pyro.plate("data", x.shape[0]):
            h = pyro.deterministic("h", x @ w, event_dim=0)
            pyro.factor("penalty", -h.abs())
            pyro.sample("y", dist.Normal(h, 1.0), obs=y)

    report = inspect_model(model, (torch.randn(3, 2), torch.randn(3)))
    kinds = {r.name: (r.kind, r.observed, r.random) for r in report}
    assert kinds == {"x": ("input", True, False), "w": ("param", False, False), "h": ("deterministic", False, False),
                     "penalty": ("factor", False, False), "y": ("sample", True, True)}
    assert "w" not in [r.name for r in inspect_model(model, (torch.randn(3, 2), torch.randn(3)), params=False)]


def test_nested_and_sequential_plates_are_listed_outermost_first():
    def model(x):
        with pyro.plate("docs", 3, dim=-2):
            with pyro.plate("words", 4, dim=-1):
                pyro.sample("w", dist.Normal(0.0, 1.0))
        for i in pyro.plate("loop", 2):
            pyro.sample(f"s_{i}", dist.Normal(0.0, 1.0))

    report = inspect_model(model, (None,))
    assert report["w"].plates == ("docs[3]", "words[4]") and report["w"].batch_shape == (3, 4)
    assert report["s_1"].plates == ("loop[2] (sequential)",)


def test_grouped_merges_identical_per_step_sites_only():
    def chain(x):
        z = torch.tensor(0)
        for t in pyro.markov(range(x.shape[0])):
            z = pyro.sample(f"z_{t}", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
            pyro.sample(f"x_{t}", dist.Normal(z.float(), 1.0), obs=x[t])
        pyro.sample("x_end", dist.Normal(0.0, 1.0), obs=x[0])

    report = inspect_model(chain, (torch.randn(5),), inputs=False)
    grouped = report.grouped()
    assert [r.name for r in grouped] == ["z_{0..4}", "x_{0..4}", "x_end"]
    assert grouped["z_{0..4}"].guide == "enumerated" and len(report) == 11

    def uneven(x):  # x_1 has another shape: no merging across different facts
        pyro.sample("x_0", dist.Normal(0.0, 1.0), obs=x[0])
        pyro.sample("x_1", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=x[:2])

    assert [r.name for r in inspect_model(uneven, (torch.randn(3),), inputs=False).grouped()] == ["x_0", "x_1"]


def test_seq2seq_quiz_answers():
    pair, batch, options = build_example("attention-seq2seq")
    report = inspect_pair(pair, batch, **options)
    answers = {r.name: ("observed" if r.observed else "latent", "random" if r.random else "deterministic")
               for r in report}
    assert answers["f"] == ("observed", "deterministic") and report["f"].kind == "input"
    assert answers["h"] == answers["a"] == ("latent", "deterministic")
    assert answers["e"] == ("observed", "random") and report["e"].support == "discrete"
    assert report["a"].value_shape == (2, 4, 5)  # (batch, T, S): one attention row per output word
    assert [r.name for r in report if r.random and not r.observed] == []  # nothing latent and random


def test_seq2seq_quiz_model_refuses_bad_ids():
    pair = AttentionSeq2Seq(src_vocab=5, tgt_vocab=6, hidden=4)
    with pytest.raises(ValueError, match=r"f has ids outside \[0, 5\)"):
        pair.model(torch.tensor([[1, 7]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="e must be a .* long tensor"):
        pair.model(torch.tensor([[1, 2]]), torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="same number of sentences"):
        pair.model(torch.tensor([[1, 2]]), torch.tensor([[1], [2]]))
    with pytest.raises(ValueError, match="hidden must be an int >= 2"):
        AttentionSeq2Seq(hidden=1)


def test_render_without_graphviz_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    with pytest.raises(ImportError, match="pip install graphviz"):
        render(VAE(6, 2, (4,)).model, (torch.rand(2, 6),), filename="g.png")


def test_render_draws_the_model_graph(tmp_path, monkeypatch):
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed")
    graph = render(VAE(6, 2, (4,)).model, (torch.rand(2, 6),))
    assert "cluster_data" in graph.source and "z -> x" in graph.source
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' program: a clear error, not a traceback from graphviz
    with pytest.raises(ImportError, match="'dot' program is not on PATH"):
        render(VAE(6, 2, (4,)).model, (torch.rand(2, 6),), filename=str(tmp_path / "g.png"))


@pytest.mark.parametrize("name", sorted(INSPECTABLE))
def test_cli_inspect_every_registered_model(name, capsys):
    parser = argparse.ArgumentParser()
    add_inspect_arguments(parser)
    result = cli_inspect(parser.parse_args([name, "--markdown"]))
    out = capsys.readouterr().out
    assert result["missing_in_guide"] == [] and result["sites"]
    assert out.startswith("| site |") and all(f"| {s} |" in out for s in result["sites"])


def test_bad_arguments_are_refused_clearly():
    model = VAE(6, 2, (4,)).model
    with pytest.raises(TypeError, match=r"args must be a tuple .* args=\(x,\)"):
        inspect_model(model, torch.rand(2, 6))
    with pytest.raises(ValueError, match="enumerate_guide must be"):
        inspect_model(model, (torch.rand(2, 6),), guide=lambda x: None, enumerate_guide="yes")
    with pytest.raises(TypeError, match="pair must be a model/guide pair, got a object with no callable 'model'"):
        inspect_pair(object(), torch.rand(2, 6))


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*vae"):
        build_example("nope")


# ------------------------------------------------------------------ PSIS k-hat


class ScaledPosteriorPPCA(PPCA):
    """pPCA whose guide is the exact posterior with its covariance multiplied by ``factor``."""

    factor = 1.0

    def guide(self, x):
        post = self.exact_posterior(x)
        post = dist.MultivariateNormal(post.loc, covariance_matrix=self.factor * post.covariance_matrix)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", post)


def _khat(factor, seed=0, n=12, k=1000):
    set_seed(seed)
    pair = ScaledPosteriorPPCA(4, 2, 0.5)
    pair.factor = factor
    return psis_khat(pair, pair.marginal().sample((n,)), num_samples=k)


def test_khat_small_for_exact_and_overdispersed_guides():
    exact = _khat(1.0)  # every weight equals p(x): bounded, k-hat = -inf
    assert exact.shape == (12,) and bool((exact < 0.5).all())
    wide = _khat(2.0)  # q wider than p(z|x): weights bounded by a constant, k-hat < 0.5
    assert bool((wide < 0.5).all())
    assert psis_summary(wide)["share_khat_below_0.5"] == 1.0


def test_khat_large_for_a_badly_mismatched_guide():
    narrow = _khat(0.02)  # q far narrower than p(z|x): heavy-tailed weights
    summary = psis_summary(narrow)
    assert summary["share_khat_above_0.7"] >= 0.9 and summary["khat_median"] > 0.7
    assert summary["share_khat_below_0.5"] + summary["share_khat_0.5_to_0.7"] + summary["share_khat_above_0.7"] == 1.0


def test_psis_report_is_the_summary_of_the_khats():
    set_seed(3)
    pair = ScaledPosteriorPPCA(4, 2, 0.5)
    pair.factor = 0.02
    x = pair.marginal().sample((6,))
    set_seed(0)
    report = psis_report(pair, x, num_samples=200, batch_size=4)  # two batches
    set_seed(0)
    assert report == psis_summary(psis_khat(pair, x, num_samples=200, batch_size=4))
    assert report["num_datapoints"] == 6


@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(1.5, 6.0), seed=st.integers(0, 1000))
def test_pareto_khat_recovers_the_tail_index_of_pareto_weights(alpha, seed):
    # Weights drawn from a Pareto(alpha) have GPD tail shape k = 1 / alpha.
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(20000, 25, generator=g, dtype=torch.float64)
    khat = pareto_khat(-torch.log(u) / alpha)  # log of Pareto(alpha, scale 1) draws
    # Each k-hat fits ~3 sqrt(K) = 424 tail points (sd ~ (1 + k) / sqrt(424) ~ 0.07): compare the
    # median of 25 (with 5, about 1 seed in 150 missed 0.1 at alpha = 2; with 25 the largest miss
    # over 1,000 seeds and alphas 1.5-6 was 0.062).
    assert khat.shape == (25,) and abs(float(khat.median()) - 1 / alpha) < 0.1


def test_pareto_khat_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 10"):
        pareto_khat(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="non-finite .* column"):
        pareto_khat(torch.tensor([[0.0, float("nan")]] * 20))
    with pytest.raises(ValueError, match="num_samples"):
        psis_khat(PPCA(3, 1), torch.randn(2, 3), num_samples=5)


def test_tables_in_docs_match_what_the_code_prints():
    from pathlib import Path

    from pyro_lvm.tasks.inspect_task import markdown_tables
    page = (Path(__file__).resolve().parents[1] / "docs" / "inspection.md").read_text()
    section = page.split("<!-- inspection-tables:start -->\n")[1].split("<!-- inspection-tables:end -->")[0]
    assert section.strip() == markdown_tables().strip(), \
        "docs/inspection.md is stale: run python scripts/update_inspection_tables.py"
    assert all(f"### `{name}`" in section for name in INSPECTABLE)
