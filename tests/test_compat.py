"""Checkpoints and exports written before the restructuring (commit c9c4e15, fixture in
tests/fixtures/v0) still load and compute what they computed then."""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from electra_jax.export import export
from electra_jax.inference import load_network

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "v0"


def test_an_old_export_loads_and_gives_the_old_logits():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    ids = jnp.asarray(expected["input_ids"])
    for part in ("discriminator", "generator"):
        module, params, _ = load_network(str(FIXTURE / "export"), part)
        logits = np.asarray(module.apply({"params": params}, ids))
        if part == "generator":
            logits = logits[..., :200]  # the fixture keeps the first 200 vocabulary entries
        np.testing.assert_allclose(logits, expected["logits"][part], rtol=1e-5, atol=1e-6)


def test_an_old_pretraining_workdir_exports_the_same_networks(tmp_path):
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["data"]["dir"] = str(tmp_path / "data")  # the fixture's absolute path was the machine's
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    info = export(str(tmp_path / "run"), str(tmp_path / "export"))
    assert info["step"] == 2 and info["parts"] == ["discriminator", "generator"]
    for part in info["parts"]:
        new = ocp.StandardCheckpointer().restore(str(tmp_path / "export" / part))
        old = ocp.StandardCheckpointer().restore(str(FIXTURE / "export" / part))
        new_leaves = jax.tree_util.tree_flatten_with_path(new)[0]
        old_leaves = dict(jax.tree_util.tree_flatten_with_path(old)[0])
        assert len(new_leaves) == len(old_leaves) > 10
        for path, value in new_leaves:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(old_leaves[path]), err_msg=str(path))
