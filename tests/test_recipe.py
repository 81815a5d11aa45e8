"""The pretraining recipe options (embedding sharing, temperature curriculum, discriminator warm-up,
generator depth) and the diagnostics that see the discriminator learn (ROC AUC, information gain)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from electra_jax import hf
from electra_jax.model import (ElectraDiscriminator, ElectraPretrainer, ModelConfig, SelfAttention, alibi_logits,
                               network_params)
from electra_jax.objective import binary_entropy, discriminator_metrics, electra_loss, roc_auc
from test_objective import objective, random_batch

VOCAB = 300
DISC = ModelConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_layers=2, num_heads=2,
                   intermediate_size=64, max_position_embeddings=64)
GEN = DISC.replace(hidden_size=16, num_heads=1, intermediate_size=32, num_layers=1)


def init(sharing, disc=DISC, gen=GEN):
    model = ElectraPretrainer(disc, gen, sharing)
    ids = jnp.zeros((1, 32), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids, jnp.ones_like(ids),
                                      jnp.zeros((1, 5), jnp.int32))["params"])
    return model, params


def loss_parts(params, model, batch, **kw):
    """(generator loss, discriminator loss) of one ELECTRA step with fixed keys."""
    _, (metrics, _) = electra_loss(params, model, batch, jax.random.key(1), objective(5, vocab=VOCAB, **kw),
                                   deterministic=True)
    return metrics["generator_loss"], metrics["discriminator_loss"]


def grads_of(which, params, model, batch, **kw):
    index = {"generator": 0, "discriminator": 1}[which]
    return jax.grad(lambda p: loss_parts(p, model, batch, **kw)[index])(params)


def norm(tree):
    return float(optax_norm(tree))


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_matches_scikit_learn_over_real_positions(seed):
    rs = np.random.RandomState(seed)
    labels = rs.rand(8, 50) < 0.15
    scores = rs.randn(8, 50) + 1.3 * labels  # informative but overlapping
    mask = rs.rand(8, 50) < 0.8
    ours = float(roc_auc(jnp.asarray(scores), jnp.asarray(labels, jnp.float32), jnp.asarray(mask, jnp.float32)))
    assert ours == pytest.approx(roc_auc_score(labels[mask], scores[mask]), abs=1e-6)
    assert 0.7 < ours < 0.9


def test_information_gain_is_zero_at_the_class_prior_and_positive_when_informative():
    rs = np.random.RandomState(0)
    labels = jnp.asarray(rs.rand(16, 64) < 0.13, jnp.float32)
    mask = jnp.ones_like(labels)
    p = float(labels.mean())
    assert float(binary_entropy(p)) == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)), rel=1e-5)
    prior_logit = jnp.full(labels.shape, np.log(p / (1 - p)))
    _, at_prior = discriminator_metrics(prior_logit, labels, mask)
    assert abs(float(at_prior["discriminator_information_gain"])) < 1e-5
    assert float(at_prior["discriminator_recall"]) == 0.0  # the state recall alone cannot tell from "nothing"
    _, informative = discriminator_metrics(prior_logit + 2.0 * (labels - 0.5), labels, mask)
    assert float(informative["discriminator_information_gain"]) > 0.05
    assert float(informative["discriminator_auc"]) == 1.0


def test_tied_sharing_keeps_the_reference_parameter_tree():
    _, params = init("tied")
    assert set(params) == {"embeddings", "generator", "generator_head", "discriminator", "discriminator_head"}


def test_gdes_discriminator_sends_no_gradient_into_the_shared_table_and_its_delta_starts_at_zero():
    batch = random_batch(4, 32, vocab=VOCAB)
    model, params = init("gdes")
    delta = params["discriminator_word_delta"]
    assert delta.shape == (VOCAB, DISC.embedding_size) and not np.any(np.asarray(delta))
    disc_grads = grads_of("discriminator", params, model, batch)
    assert norm(disc_grads["embeddings"]["word_embeddings"]) == 0.0
    assert norm(disc_grads["discriminator_word_delta"]) > 0
    gen_grads = grads_of("generator", params, model, batch)
    assert norm(gen_grads["embeddings"]["word_embeddings"]) > 0
    assert norm(gen_grads["discriminator_word_delta"]) == 0.0
    # with a zero delta the discriminator computes exactly what tied sharing computes
    tied_model, _ = init("tied")
    tied_params = {k: v for k, v in params.items() if k != "discriminator_word_delta"}
    np.testing.assert_allclose(loss_parts(params, model, batch), loss_parts(tied_params, tied_model, batch),
                               rtol=1e-6)


def test_gdes_export_folds_the_delta_into_one_embedding_matrix():
    _, params = init("gdes")
    params["discriminator_word_delta"] = jnp.full_like(params["discriminator_word_delta"], 0.5)
    nets = network_params(params, "electra")
    shared = params["embeddings"]["word_embeddings"]["embedding"]
    np.testing.assert_allclose(nets["discriminator"]["embeddings"]["word_embeddings"]["embedding"], shared + 0.5)
    np.testing.assert_array_equal(nets["generator"]["embeddings"]["word_embeddings"]["embedding"], shared)
    assert set(nets["discriminator"]["embeddings"]) == set(params["embeddings"])  # the exported layout


def test_no_sharing_gives_each_network_its_own_block():
    batch = random_batch(4, 32, vocab=VOCAB)
    model, params = init("none")
    disc_grads = grads_of("discriminator", params, model, batch)
    gen_grads = grads_of("generator", params, model, batch)
    assert norm(disc_grads["generator_embeddings"]) == 0.0 and norm(disc_grads["embeddings"]) > 0
    assert norm(gen_grads["embeddings"]) == 0.0 and norm(gen_grads["generator_embeddings"]) > 0
    nets = network_params(params, "electra")
    assert nets["generator"]["embeddings"] is params["generator_embeddings"]


def test_generator_depth_is_its_own():
    _, params = init("tied")
    assert set(params["generator"]) == {"layer_0"}  # one layer; width 16 = E, so no projection
    assert {k for k in params["discriminator"] if k.startswith("layer_")} == {"layer_0", "layer_1"}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_temperature_schedule_runs_from_start_to_end_and_evaluation_uses_the_end(schedule):
    cfg = objective(temperature=1.0, temperature_schedule=schedule, temperature_start=50.0, temperature_steps=100)
    values = [float(cfg.temperature_at(s)) for s in (0, 50, 100, 200)]
    assert values[0] == pytest.approx(50.0) and values[2] == pytest.approx(1.0) and values[3] == pytest.approx(1.0)
    assert values[1] == pytest.approx(25.5, rel=1e-5)  # both are halfway at the middle
    assert cfg.temperature_at(None) == 1.0
    assert objective(temperature=2.0).temperature_at(jnp.asarray(7)) == 2.0  # "constant"


def test_high_temperature_replaces_with_near_uniform_tokens():
    """At temperature 1000 the sampled tokens spread over the vocabulary; at 1 they follow the generator."""
    model, params = init("tied")
    batch = random_batch(32, 32, vocab=VOCAB)
    # a generator sure of one token: a huge output bias on id 7
    params["generator_head"]["output_bias"] = params["generator_head"]["output_bias"].at[7].set(50.0)

    def distinct_samples(temperature):
        cfg = objective(5, vocab=VOCAB, temperature=temperature)
        _, (_, aux) = electra_loss(params, model, batch, jax.random.key(3), cfg, deterministic=True)
        chosen = np.asarray(aux["masked"].weights) > 0
        return len(set(np.asarray(aux["sampled"])[chosen].tolist()))

    assert distinct_samples(1.0) == 1
    assert distinct_samples(1000.0) > 50


def test_discriminator_warmup_starts_at_zero_weight():
    model, params = init("tied")
    batch = random_batch(4, 32, vocab=VOCAB)
    cfg = objective(5, vocab=VOCAB, discriminator_warmup_steps=10)
    assert float(cfg.discriminator_weight_at(0)) == 0.0
    assert float(cfg.discriminator_weight_at(5)) == pytest.approx(25.0)
    assert float(cfg.discriminator_weight_at(20)) == 50.0 and cfg.discriminator_weight_at(None) == 50.0
    grads = jax.grad(lambda p: electra_loss(p, model, batch, jax.random.key(1), cfg, deterministic=True,
                                            step=jnp.asarray(0))[0])(params)
    assert norm(grads["discriminator"]) == 0.0 and norm(grads["generator"]) > 0


def test_alibi_logits_penalise_distance_by_each_heads_slope():
    logits = np.asarray(alibi_logits(3, 5))
    i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    for h, slope in enumerate([1 / 2, 1 / 16, 1 / 128]):
        np.testing.assert_allclose(logits[0, h], -slope * np.abs(i - j))


@pytest.mark.parametrize("impl", ["flax", "jax"])
def test_alibi_attention_matches_numpy_attention_with_the_bias(impl):
    cfg = DISC.replace(attention_bias="alibi", attention_dropout_rate=0.0, attention_impl=impl)
    x = jax.random.normal(jax.random.key(0), (2, 7, cfg.hidden_size))
    mask = np.ones((2, 1, 1, 7), bool)
    mask[1, ..., 5:] = False  # padding at the end of the second sequence
    layer = SelfAttention(cfg)
    params = nn.meta.unbox(layer.init(jax.random.key(1), x, mask, True)["params"])
    ours = np.asarray(layer.apply({"params": params}, x, mask, True))

    heads, d = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    xn = np.asarray(x, np.float64)
    proj = {n: (xn @ np.asarray(params[n]["kernel"]) + np.asarray(params[n]["bias"])).reshape(2, 7, heads, d)
            for n in ("query", "key", "value")}
    logits = np.einsum("bqhd,bkhd->bhqk", proj["query"], proj["key"]) / np.sqrt(d)
    distance = np.abs(np.arange(7)[:, None] - np.arange(7)[None])
    logits = logits - np.array([1 / 2, 1 / 16])[None, :, None, None] * distance
    logits = np.where(mask, logits, -1e30)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", weights, proj["value"]).reshape(2, 7, cfg.hidden_size)
    expected = context @ np.asarray(params["output"]["kernel"]) + np.asarray(params["output"]["bias"])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
    plain = np.asarray(SelfAttention(cfg.replace(attention_bias="none")).apply({"params": params}, x, mask, True))
    assert np.abs(plain - ours).max() > 1e-3  # the bias changes the output


@pytest.mark.parametrize("position_init", ["normal", "zeros"])
def test_position_init_zeros_starts_the_position_table_silent(position_init):
    _, params = init("tied", DISC.replace(position_init=position_init), GEN.replace(position_init=position_init))
    positions = np.asarray(params["embeddings"]["position_embeddings"]["embedding"])
    words = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    if position_init == "zeros":
        assert not positions.any()
    else:
        assert positions.std() == pytest.approx(words.std(), rel=0.1)


def test_an_alibi_model_cannot_be_exported_to_huggingface(tmp_path):
    module = ElectraDiscriminator(DISC.replace(attention_bias="alibi"))
    params = module.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    with pytest.raises(hf.HFFormatError, match="attention_bias='alibi': HuggingFace BERT/ELECTRA attention has no such biases"):
        hf.save(module, nn.meta.unbox(params), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
