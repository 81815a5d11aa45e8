"""fill-mask, detect and format conversion on a tiny model trained here."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from electra_jax import inference

TEXTS = ["The rabbit ran down the [MASK] and into the garden .", "Alice [MASK] at the [MASK] ."]


@pytest.fixture(scope="module")
def exported(pretrained_export):
    return pretrained_export


def test_fill_mask_output(exported):
    module, params, tok = inference.load_network(str(exported), "generator")
    results = inference.fill_mask(module, params, tok, TEXTS, top_k=4)
    assert [len(r) for r in results] == [1, 2]
    for slots in results:
        for slot in slots:
            probs = [c["probability"] for c in slot["candidates"]]
            assert len(probs) == 4 and probs == sorted(probs, reverse=True)
            assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-5
    # trained for 30 steps on prose, the generator's first guess is a common word, not a special token
    assert results[0][0]["candidates"][0]["id"] not in tok.special_ids.values()


def test_detect_output(exported):
    module, params, tok = inference.load_network(str(exported), "discriminator")
    results = inference.detect(module, params, tok, ["the the the the", "It was a bright cold day in April ."])
    assert [len(r) for r in results] == [len(t) for t in tok.encode(["the the the the",
                                                                       "It was a bright cold day in April ."])]
    assert all(0 <= t["replaced_probability"] <= 1 for r in results for t in r)


def test_to_hf_then_transformers_agrees(exported, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    written = inference.to_hf(str(exported), str(tmp_path / "hf"))
    assert sorted(os.path.basename(w) for w in written) == ["discriminator", "generator"]
    module, params, tok = inference.load_network(str(exported), "discriminator")
    ours = inference.detect(module, params, tok, [TEXTS[0].replace("[MASK]", "hill")])[0]
    model = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf" / "discriminator").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf" / "discriminator")
    enc = hf_tok(TEXTS[0].replace("[MASK]", "hill"), return_tensors="pt")
    assert enc["input_ids"][0, 1:-1].tolist() == [t["id"] for t in ours]
    with torch.no_grad():
        theirs = torch.sigmoid(model(**enc).logits)[0, 1:-1].numpy()
    np.testing.assert_allclose([t["replaced_probability"] for t in ours], theirs, atol=1e-5)

    # and back: from-hf gives the same parameters
    back = inference.from_hf(str(tmp_path / "hf" / "discriminator"), str(tmp_path / "hf" / "generator"),
                             str(tmp_path / "back"))
    assert back["parts"] == ["discriminator", "generator"]
    m2, p2, _ = inference.load_network(str(tmp_path / "back"), "generator")
    m1, p1, _ = inference.load_network(str(exported), "generator")
    import jax
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)
    # predict reads HuggingFace directories directly too
    hf_gen = inference.load_network(str(tmp_path / "hf"), "generator")
    assert inference.fill_mask(*hf_gen, TEXTS[:1], top_k=2)[0][0]["candidates"][0]["id"] == \
        inference.fill_mask(m1, p1, _, TEXTS[:1], top_k=2)[0][0]["candidates"][0]["id"]


def test_predict_command(exported, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "electra_jax.cli", "predict", "fill-mask", "--ckpt", str(exported),
                        "--file", str(texts), "--json", "--top_k", "3"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert [o["text"] for o in out] == TEXTS and len(out[1]["result"]) == 2
    r = subprocess.run([sys.executable, "-m", "electra_jax.cli", "predict", "detect", "--ckpt", str(exported),
                        "A plain sentence ."], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "P(replaced)" in r.stdout, r.stderr[-2000:]
