"""TCNN and its Gaussian mixture: the clustering, the per-cluster FC6, and training
(vanilla, then the tweak) through the deep driver. (Export round trip and config errors:
tests/test_method_contract.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks.configs import tcnn as tcnn_configs
from jaxmarks import gmm
from jaxmarks import methods
from jaxmarks.drivers import deep
from jaxmarks.models import tcnn


def _blobs(n=1200, d=6, m=4, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(m, d)) * 6
  labels = rng.integers(0, m, n)
  return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.mark.slow
def test_mixture_finds_separated_clusters_and_is_deterministic():
  x, labels = _blobs()
  fit = jax.jit(gmm.fit, static_argnums=(2,))
  mixture = fit(jax.random.PRNGKey(0), x, 4)
  got = np.asarray(gmm.assign(mixture, x))
  for k in range(4):  # each component holds one blob
    assert np.bincount(labels[got == k], minlength=4).max() == (got == k).sum() > 0
  np.testing.assert_allclose(np.exp(mixture.log_weights).sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.exp(gmm.log_posteriors(mixture, x[:5])).sum(1), 1.0,
                             rtol=1e-5)
  again = fit(jax.random.PRNGKey(0), x, 4)
  np.testing.assert_array_equal(np.asarray(again.means), np.asarray(mixture.means))
  # More components than blobs: none dies, every variance stays positive.
  wide = fit(jax.random.PRNGKey(1), x, 9)
  assert np.all(np.asarray(wide.variances) > 0) and np.all(np.isfinite(wide.log_weights))


def test_per_cluster_heads_fit_what_one_head_cannot():
  """Each blob of features maps to its targets by its own linear map: the tweak's
  heads recover them; a huge ridge keeps the vanilla head."""
  x, labels = _blobs(d=8)
  rng = np.random.default_rng(1)
  maps = rng.normal(size=(4, 8, 6)).astype(np.float32)
  y = np.einsum("nf,nfo->no", x, maps[labels])
  w0 = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]  # the best single head
  weights = np.ones(len(x), np.float32)
  fit = jax.jit(tcnn.fit_tweak, static_argnums=(6,))
  tweak, counts = fit(jax.random.PRNGKey(0), x, y, weights, w0[:-1], w0[-1], 4, 1e-3)
  assert int(np.asarray(counts).sum()) == len(x)
  mixture = gmm.GMM(tweak["means"], tweak["variances"], tweak["log_weights"])
  c = np.asarray(gmm.assign(mixture, x))
  pred = np.einsum("nf,nfo->no", x, np.asarray(tweak["kernels"])[c]) + np.asarray(
      tweak["biases"])[c]
  single = np.c_[x, np.ones(len(x))] @ w0
  assert np.abs(pred - y).mean() < 1e-2 * np.abs(single - y).mean()
  stiff, _ = fit(jax.random.PRNGKey(0), x, y, weights, w0[:-1], w0[-1], 4, 1e9)
  np.testing.assert_allclose(np.asarray(stiff["kernels"]),
                             np.broadcast_to(w0[:-1], (4, 8, 6)), atol=1e-3)


def test_vanilla_network_is_the_papers():
  c = tcnn_configs.get_config("mtfl")
  ms = np.array([[14, 16], [26, 16], [20, 22], [15, 28], [25, 28]], np.float32)
  model = tcnn.build_model(c, ms)
  params, state = tcnn.init_variables(model, jax.random.PRNGKey(0))
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  assert shapes == {"conv1": (5, 5, 1, 16), "conv2": (3, 3, 16, 48), "conv3": (3, 3, 48, 64),
                    "conv4": (2, 2, 64, 64), "fc": (256, 100), "landmarks": (100, 10)}
  assert state["tweak"]["kernels"].shape == (64, 100, 10)
  out = model.apply({"params": params}, jnp.zeros((2, 40, 40, 1)))
  assert out["features"].shape == (2, 100) and out["landmarks"].shape == (2, 5, 2)


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
  """The tiny TCNN (``helpers.tiny_config``: 3 clusters), trained once per run and
  copied here (a test exports it again): (root, summary, what training printed)."""
  root = tmp_path_factory.mktemp("tcnn")
  t = tiny_models("tcnn", copy_to=root / "wd")
  return root, t.summary, t.printed


@pytest.mark.slow
def test_training_tweaks_and_prints_both(trained):
  _, summary, out = trained
  assert summary["n"] == 10 and summary["scheme"] == "mtfl5"
  assert set(summary["vanilla"]) >= {"nme_inter_ocular", "n"}
  assert "TCNN tweak: 3 clusters of the FC5 features of 30 training faces" in out
  rows = [line.split() for line in out.splitlines() if "NME(inter_ocular)=" in line
          and line.strip().split()[0] in ("vanilla", "tweaked")]
  assert [r[0] for r in rows] == ["vanilla", "tweaked"]
  assert rows[1][1] == f"NME(inter_ocular)={100 * summary['nme_inter_ocular']:.3f}%"


@pytest.mark.slow
def test_final_printout_adds_the_mirror_averaged_row(trained):
  root, summary, out = trained
  line = [l for l in out.splitlines() if l.strip().startswith("tweaked, mirror-averaged")]
  assert len(line) == 1
  mirrored = summary["mirror_averaged"]
  assert f"NME(inter_ocular)={100 * mirrored['nme_inter_ocular']:.3f}%" in line[0]
  # The same figure as the evaluate command's --mirror on the exported model.
  again = methods.evaluate_trained(root / "wd", mirror=True, output_dir=root / "ev")
  assert again["test_time_mirror"] and mirrored["n"] == again["n"] == 10
  np.testing.assert_allclose(mirrored["nme_inter_ocular"], again["nme_inter_ocular"], rtol=1e-5)
  assert mirrored["nme_inter_ocular"] != summary["nme_inter_ocular"]


@pytest.mark.slow
def test_export_routes_faces_and_keeps_the_vanilla_network(trained):
  root = trained[0]
  predictor = methods.load_predictor(root / "wd" / "export")
  assert predictor.phase == 1
  images = np.random.default_rng(0).normal(size=(4, 40, 40, 1)).astype(np.float32)
  out = predictor.predict(images)
  assert out["landmarks"].shape == (4, 5, 2) and out["clusters"].shape == (4,)
  assert np.all((out["clusters"] >= 0) & (out["clusters"] < 3))
  # The vanilla network is the checkpoint's; the tweak only replaces FC6.
  config = methods.load_config(root / "wd")
  vanilla = deep.DeepPredictor(tcnn.METHOD, *deep.read_checkpoint(root / "wd", config))
  np.testing.assert_allclose(vanilla.predict(images)["landmarks"], out["vanilla"], atol=1e-5)
  # Re-exporting the workdir runs the tweak again, to the same arrays.
  again = methods.load_predictor(deep.export_workdir(root / "wd"))
  np.testing.assert_allclose(again.predict(images)["landmarks"], out["landmarks"], atol=1e-5)
