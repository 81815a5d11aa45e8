"""Continuing pretraining from HuggingFace ELECTRA checkpoints (config.init.hf_*)."""
import json

import jax
import numpy as np
import pytest

from conftest import tiny_config
from electra_jax import hf, inference
from electra_jax.export import export
from electra_jax.config import ConfigError
from electra_jax.train import Trainer, pretrain

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def save_hf_pair(root, vocab_size, gen_layers=2):
    """A discriminator and a generator as wide as it (like the released ELECTRA-Small pair), sharing
    one embedding block, with random weights everywhere."""
    common = dict(vocab_size=vocab_size, embedding_size=32, max_position_embeddings=64, type_vocab_size=2)
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, **common))
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=48, num_hidden_layers=gen_layers, num_attention_heads=3, intermediate_size=96, **common))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in list(disc.parameters()) + list(gen.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(root / "disc")
    gen.save_pretrained(root / "gen")
    return str(root / "disc"), str(root / "gen")


def test_pretraining_starts_from_the_hf_weights(prepared, tmp_path):
    disc_dir, gen_dir = save_hf_pair(tmp_path, prepared["vocab_size"])
    config = tiny_config(prepared["dir"], num_steps=1, learning_rate=1e-9, checkpoint_every=1)
    config.init.update(hf_discriminator=disc_dir, hf_generator=gen_dir)
    pretrain(config, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["hidden_size"], saved["generator_hidden_size"], saved["generator_num_heads"]) == (64, 48, 3)

    export(str(tmp_path / "run"), str(tmp_path / "export"))
    for part, hf_dir in (("discriminator", disc_dir), ("generator", gen_dir)):
        _, ours, _ = inference.load_network(str(tmp_path / "export"), part)
        _, theirs = hf.load(hf_dir)
        flat_ours = dict(jax.tree_util.tree_flatten_with_path(ours)[0])
        flat_theirs = dict(jax.tree_util.tree_flatten_with_path(theirs)[0])
        assert flat_ours.keys() == flat_theirs.keys()
        for path, value in flat_theirs.items():  # one step at lr 1e-9 moves nothing visibly
            np.testing.assert_allclose(flat_ours[path], value, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_mismatched_checkpoints_are_refused_before_any_work(prepared, tmp_path):
    disc_dir, gen_dir = save_hf_pair(tmp_path, prepared["vocab_size"] + 1)
    config = tiny_config(prepared["dir"])
    config.init.update(hf_discriminator=disc_dir)
    with pytest.raises(ConfigError, match=r"vocabulary of 1001 but .* prepare --tokenizer"):
        Trainer(config, str(tmp_path / "run"))

    disc_dir, gen_dir = save_hf_pair(tmp_path / "deep", prepared["vocab_size"], gen_layers=3)
    config.init.update(hf_discriminator=disc_dir, hf_generator=gen_dir)
    with pytest.raises(ConfigError, match="3 layers and the discriminator 2"):
        Trainer(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
