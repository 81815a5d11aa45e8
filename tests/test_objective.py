import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from electra_jax.model import ElectraPretrainer, ModelConfig
from electra_jax.data.pipeline import read_split
from electra_jax.data.prepare import load_data_tokenizer
from electra_jax.data.tokenizer import Tokenizer, WordPieceTokenizer
from electra_jax.objective import ObjectiveConfig, electra_loss, mask_tokens, sample_tokens, shuffled_replacements

PAD, CLS, SEP, MASK = 0, 2, 3, 4
VOCAB = 30000


def random_batch(n, length, seed=0, vocab=VOCAB):
    """Sequences of random real length, [CLS] a [SEP] b [SEP], a few literal [MASK] tokens, padding."""
    rs = np.random.RandomState(seed)
    ids = rs.randint(5, vocab, size=(n, length))
    lengths = rs.randint(3, length + 1, size=n)
    ids[:, 0] = CLS
    for i, n_real in enumerate(lengths):
        ids[i, n_real - 1] = SEP
        ids[i, rs.randint(1, n_real - 1) if n_real > 3 else 1] = SEP
        if n_real > 6 and i % 7 == 0:
            ids[i, n_real - 3] = MASK
        ids[i, n_real:] = PAD
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    return dict(input_ids=jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                token_type_ids=jnp.zeros_like(jnp.asarray(ids, jnp.int32)))


def objective(max_predictions=19, vocab=VOCAB, **kw):
    return ObjectiveConfig(vocab_size=vocab, cls_id=CLS, sep_id=SEP, mask_id=MASK, mask_prob=0.15,
                           max_predictions=max_predictions, **kw)


@pytest.mark.parametrize("max_predictions", [19, 8])
def test_masking_statistics_over_10000_sequences(max_predictions):
    batch = random_batch(10_000, 128)
    cfg = objective(max_predictions)
    m = jax.jit(lambda b, k: mask_tokens(k, b, cfg, mask_frac=0.85, random_frac=0.0))(batch, jax.random.key(0))
    ids, attn = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    pos, w, labels, new_ids = (np.asarray(x) for x in (m.positions, m.weights, m.labels, m.input_ids))
    chosen = w > 0

    candidates = (attn > 0) & ~np.isin(ids, [CLS, SEP, MASK])
    expected = np.minimum(np.clip(np.round(attn.sum(1) * 0.15), 1, max_predictions), candidates.sum(1))
    np.testing.assert_array_equal(chosen.sum(1), expected)  # count rule, clip included
    assert (chosen.sum(1) == max_predictions).any()
    rows = np.broadcast_to(np.arange(len(ids))[:, None], pos.shape)
    assert candidates[rows[chosen], pos[chosen]].all(), "a special or padding position was masked"
    for r in range(200):  # positions are distinct within a sequence
        assert len(set(pos[r][chosen[r]])) == chosen[r].sum()
    np.testing.assert_array_equal(labels[chosen], ids[rows[chosen], pos[chosen]])

    after = new_ids[rows[chosen], pos[chosen]]
    frac_mask = np.mean(after == MASK)
    frac_kept = np.mean(after == labels[chosen])
    assert abs(frac_mask - 0.85) < 0.005 and abs(frac_kept - 0.15) < 0.005
    assert frac_mask + frac_kept == pytest.approx(1.0)  # no random tokens in ELECTRA's masking
    untouched = np.ones_like(ids, bool)
    untouched[rows[chosen], pos[chosen]] = False
    np.testing.assert_array_equal(new_ids[untouched], ids[untouched])
    if max_predictions == 19:
        rate = chosen.sum() / attn.sum()
        assert abs(rate - 0.15) < 0.01


def test_mlm_masking_is_80_10_10():
    batch = random_batch(10_000, 128, seed=1)
    m = mask_tokens(jax.random.key(1), batch, objective(), mask_frac=0.8, random_frac=0.1)
    w = np.asarray(m.weights) > 0
    rows = np.broadcast_to(np.arange(w.shape[0])[:, None], w.shape)
    after = np.asarray(m.input_ids)[rows[w], np.asarray(m.positions)[w]]
    orig = np.asarray(m.labels)[w]
    assert abs(np.mean(after == MASK) - 0.8) < 0.005
    assert abs(np.mean(after == orig) - 0.1) < 0.005  # a random token equals the original 1/30000 of the time
    assert abs(np.mean((after != MASK) & (after != orig)) - 0.1) < 0.005


def tiny_pretrainer(vocab=50):
    disc = ModelConfig(vocab_size=vocab, embedding_size=16, hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, max_position_embeddings=32)
    gen = disc.replace(hidden_size=16, num_heads=1, intermediate_size=64)
    model = ElectraPretrainer(disc, gen)
    ids = jnp.zeros((1, 12), jnp.int32)
    params = model.init(jax.random.key(0), ids, ids, jnp.ones_like(ids), jnp.zeros((1, 4), jnp.int32))["params"]
    params = nn.meta.unbox(params)
    # Non-zero biases and LayerNorm parameters so the reference checks every term.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return model, params


def test_loss_and_metrics_match_numpy_reference():
    model, params = tiny_pretrainer()
    batch = random_batch(3, 12, seed=3, vocab=50)
    batch["token_type_ids"] = jnp.asarray(np.arange(12)[None] >= 6, jnp.int32) * batch["attention_mask"]
    cfg = objective(max_predictions=4, vocab=50)
    rng = jax.random.key(7)
    loss, (metrics, aux) = electra_loss(params, model, batch, rng, cfg, deterministic=True)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    ids, types, attn = (np.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    m = aux["masked"]
    pos, w, labels = np.asarray(m.positions), np.asarray(m.weights), np.asarray(m.labels)

    gen_logits = ref.generator_logits(p, np.asarray(m.input_ids), types, attn, pos, num_heads=1)
    np.testing.assert_allclose(aux["generator_logits"], gen_logits, atol=2e-5)
    ce = -np.take_along_axis(ref.log_softmax(gen_logits), labels[..., None], -1)[..., 0]
    gen_loss = (ce * w).sum() / w.sum()
    gen_acc = ((gen_logits.argmax(-1) == labels) * w).sum() / w.sum()

    # Inverse-CDF sampling with the step's sampling key, recomputed by hand over the whole
    # vocabulary in float64: the first token whose cumulative probability reaches u.
    k_sample = jax.random.split(rng, 4)[1]
    u = 1.0 - np.asarray(jax.random.uniform(k_sample, gen_logits.shape[:-1]), np.float64)
    cdf = np.cumsum(np.exp(ref.log_softmax(gen_logits / cfg.temperature)), -1)
    sampled = np.where(w > 0, (cdf < u[..., None] * cdf[..., -1:]).sum(-1), labels)
    np.testing.assert_array_equal(aux["sampled"], sampled)
    corrupted = ids.copy()
    for b in range(ids.shape[0]):
        corrupted[b, pos[b]] = sampled[b]
    np.testing.assert_array_equal(aux["corrupted"], corrupted)
    replaced = (corrupted != ids) & (attn > 0)
    np.testing.assert_array_equal(aux["labels"], replaced)

    disc_logits = ref.discriminator_logits(p, corrupted, types, attn, num_heads=2)
    np.testing.assert_allclose(aux["discriminator_logits"], disc_logits, atol=2e-5)
    y, mask = replaced.astype(float), attn.astype(float)
    disc_loss = (ref.sigmoid_bce(disc_logits, y) * mask).sum() / mask.sum()
    pred = (disc_logits > 0) & (attn > 0)
    expected = dict(
        generator_loss=gen_loss, generator_accuracy=gen_acc, discriminator_loss=disc_loss,
        discriminator_accuracy=((pred == replaced) * mask).sum() / mask.sum(),
        discriminator_precision=(pred & replaced).sum() / max(pred.sum(), 1),
        discriminator_recall=(pred & replaced).sum() / max(replaced.sum(), 1),
        replaced_fraction=replaced.sum() / mask.sum(),
        loss=gen_loss + 50 * disc_loss)
    for k, v in expected.items():
        assert float(metrics[k]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert float(loss) == pytest.approx(expected["loss"], rel=1e-5)


def test_discriminator_gradient_never_reaches_the_generator():
    model, params = tiny_pretrainer()
    batch = random_batch(4, 12, seed=5, vocab=50)

    def grads(gen_w, disc_w):
        cfg = objective(max_predictions=4, vocab=50, generator_weight=gen_w, discriminator_weight=disc_w)
        return jax.grad(lambda p: electra_loss(p, model, batch, jax.random.key(2), cfg)[0])(params)

    def total(tree):
        return sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))

    disc_only, gen_only = grads(0.0, 50.0), grads(1.0, 0.0)
    assert total(disc_only["generator"]) == 0.0 and total(disc_only["generator_head"]) == 0.0
    assert total(disc_only["discriminator"]) > 0 and total(disc_only["embeddings"]) > 0
    assert total(gen_only["discriminator"]) == 0.0 and total(gen_only["generator_head"]) > 0
    # One embedding block, trained by both losses (the generator's output layer is tied to it).
    assert set(params) == {"embeddings", "generator", "generator_head", "discriminator", "discriminator_head"}
    word = params["embeddings"]["word_embeddings"]["embedding"]
    for part in ("generator", "generator_head", "discriminator", "discriminator_head"):
        assert all(x.shape != word.shape for x in jax.tree.leaves(params[part])), part
    assert total(gen_only["embeddings"]["word_embeddings"]) > 0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sampled_tokens_follow_the_tempered_softmax(temperature):
    """The two-level inverse-CDF sampler against the exact distribution: 300 tokens (three blocks
    of 128, the last one padded), some impossible (-inf), 200000 draws; each token's frequency
    within 5 standard errors of softmax(logits / T), and no impossible token ever drawn."""
    rs = np.random.RandomState(0)
    logits = rs.normal(0, 2, 300).astype(np.float32)
    logits[[0, 127, 128, 299]] = -np.inf
    draws = 200_000
    samples = np.asarray(sample_tokens(jax.random.uniform(jax.random.key(3), (draws,)),
                                       jnp.tile(jnp.asarray(logits)[None], (draws, 1)), temperature))
    expected = np.exp(logits / temperature - np.max(logits / temperature))
    expected /= expected.sum()
    observed = np.bincount(samples, minlength=300) / draws
    assert observed[[0, 127, 128, 299]].sum() == 0
    stderr = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(observed - expected) <= 5 * stderr + 1e-6)


def test_shuffled_replacements_are_other_masked_tokens_at_the_asked_rate():
    """Unigram replacements: the real slots' tokens are a permutation of the batch's masked
    originals, and about `prob` of the real slots take theirs."""
    batch = random_batch(64, 40, seed=3)
    masked = mask_tokens(jax.random.key(0), batch, objective(max_predictions=8), mask_frac=0.85, random_frac=0.0)
    tokens, used = shuffled_replacements(jax.random.key(1), masked, 0.5)
    labels, real, tokens, used = (np.asarray(x) for x in (masked.labels, masked.weights > 0, tokens, used))
    assert not used[~real].any()
    assert abs(used.sum() / real.sum() - 0.5) < 0.05
    assert sorted(tokens[real]) == sorted(labels[real])  # a permutation of the real slots' originals


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_shuffled_replacement_prob_sets_where_the_corruption_comes_from(prob):
    model, params = tiny_pretrainer()
    batch = random_batch(6, 12, seed=5, vocab=50)
    cfg = objective(max_predictions=4, vocab=50, shuffled_replacement_prob=prob)
    _, (metrics, aux) = electra_loss(params, model, batch, jax.random.key(2), cfg, deterministic=True)
    masked = aux["masked"]
    real = np.asarray(masked.weights) > 0
    chosen = np.take_along_axis(np.asarray(aux["corrupted"]), np.asarray(masked.positions), 1)[real]
    if prob == 0.0:  # the reference: every chosen position holds the generator's sample
        np.testing.assert_array_equal(chosen, np.asarray(aux["sampled"])[real])
        assert "discriminator_auc_generator_replacements" not in metrics
    else:  # every one holds some masked original of the batch, shuffled
        assert sorted(chosen) == sorted(np.asarray(masked.labels)[real])
        assert (chosen != np.asarray(masked.labels)[real]).any()
        assert "discriminator_auc_generator_replacements" in metrics


def test_whole_word_masking_on_real_text(prepared):
    """Gutenberg text through its SentencePiece tokenizer: every chosen position brings all the
    pieces of its word (words longer than the sequence's prediction count are masked like separate
    tokens), the [MASK]/keep choice is one per word at 85/15, and the prediction count stays within
    one word of the token-masking count."""
    tokenizer = load_data_tokenizer(prepared)
    starts = tokenizer.word_starts()
    assert starts[tokenizer.encode(["Alice was beginning"])[0][0]] and 0.3 < starts.mean() < 0.95
    data = read_split(prepared, "train")
    batch = {k: jnp.asarray(v[:2000]) for k, v in data.items()}
    special = tokenizer.special_ids
    cfg = ObjectiveConfig(vocab_size=tokenizer.vocab_size, cls_id=special["cls"], sep_id=special["sep"],
                          mask_id=special["mask"], mask_prob=0.15, max_predictions=10, masking="whole_word",
                          word_starts=starts)
    m = jax.jit(lambda b, k: mask_tokens(k, b, cfg, mask_frac=0.85, random_frac=0.0))(batch, jax.random.key(0))
    ids, attn = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    pos, w, new_ids = np.asarray(m.positions), np.asarray(m.weights) > 0, np.asarray(m.input_ids)
    target = np.minimum(np.clip(np.round(attn.sum(1) * 0.15), 1, 10), (attn > 0).sum(1) - 3)

    masked_words = kept_words = 0
    for row in range(len(ids)):
        chosen = set(pos[row][w[row]].tolist())
        real = np.flatnonzero(attn[row])
        words, word = [], []
        separators = (special["cls"], special["sep"])
        for i in real:  # the row's words: a start opens one; [CLS]/[SEP] stand alone, a piece after one begins a word
            if starts[ids[row, i]] or ids[row, i] in separators or ids[row, i - 1] in separators:
                word = [i]
                words.append(word)
            else:
                word.append(i)
        longest_fitting = 1
        for word in words:
            inside = [i in chosen for i in word]
            if len(word) > target[row]:
                continue  # masked as separate tokens
            longest_fitting = max(longest_fitting, len(word))
            assert all(inside) or not any(inside), (row, word, chosen)
            if all(inside):
                after = {new_ids[row, i] == special["mask"] for i in word}
                assert len(after) == 1, "one [MASK]/keep choice per word"
                masked_words += after.pop()
                kept_words += all(new_ids[row, i] == ids[row, i] for i in word)
        assert target[row] - longest_fitting < len(chosen) <= target[row]
    assert abs(masked_words / (masked_words + kept_words) - 0.85) < 0.02
    assert w.sum() > 0.9 * target.sum()


def test_word_starts_of_wordpiece_and_sentencepiece():
    assert WordPieceTokenizer.begins_word("play") and not WordPieceTokenizer.begins_word("##ing")
    assert Tokenizer.begins_word("\u2581play") and not Tokenizer.begins_word("ing")
    assert Tokenizer.begins_word("[CLS]")
