"""Pretraining objectives, compiled inside the train step: dynamic masking, the ELECTRA
replaced-token-detection loss, and the BERT masked-LM baseline.

A batch is a dict of int32 [B, L] arrays: input_ids, attention_mask (1 = real token), token_type_ids.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.config import max_predictions


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    vocab_size: int
    cls_id: int
    sep_id: int
    mask_id: int
    mask_prob: float = 0.15
    max_predictions: int = 19
    generator_weight: float = 1.0
    discriminator_weight: float = 50.0
    temperature: float = 1.0
    # Curriculum (Fast-ELECTRA): sample at temperature_start, falling to `temperature` over
    # temperature_steps along temperature_schedule ("constant": always `temperature`).
    temperature_schedule: str = "constant"
    temperature_start: float = 1.0
    temperature_steps: int = 1
    # The discriminator's weight rises linearly from 0 over these steps (0: full weight from the start).
    discriminator_warmup_steps: int = 0
    # Each chosen position takes, with this probability, the original token of another chosen
    # position in the batch (a unigram replacement, as the paper's unigram generator) instead of the
    # generator's sample: easy negatives a small discriminator learns context from (0: the reference).
    shuffled_replacement_prob: float = 0.0
    # "token": each position chosen on its own (the reference); "whole_word": all pieces of a word
    # together, words as word_starts marks them ([V] bool: this token begins a word; the tokenizer's
    # BaseTokenizer.word_starts()).
    masking: str = "token"
    word_starts: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_config(cls, config, special_ids: dict, vocab_size: int, word_starts=None) -> "ObjectiveConfig":
        p = config.pretrain
        return cls(vocab_size=vocab_size, cls_id=special_ids["cls"], sep_id=special_ids["sep"],
                   mask_id=special_ids["mask"], mask_prob=p.mask_prob, max_predictions=max_predictions(config),
                   generator_weight=p.generator_weight, discriminator_weight=p.discriminator_weight,
                   temperature=p.temperature, temperature_schedule=p.temperature_schedule,
                   temperature_start=p.temperature_start,
                   temperature_steps=p.temperature_steps or config.train.num_steps,
                   discriminator_warmup_steps=p.discriminator_warmup_steps,
                   shuffled_replacement_prob=p.get("shuffled_replacement_prob", 0.0),
                   masking=p.get("masking", "token"), word_starts=word_starts)

    def temperature_at(self, step=None):
        """The sampling temperature at a training step; None (evaluation): the final one, the real task."""
        if step is None or self.temperature_schedule == "constant":
            return self.temperature
        if self.temperature_schedule == "linear":
            return optax.linear_schedule(self.temperature_start, self.temperature, self.temperature_steps)(step)
        return optax.cosine_decay_schedule(self.temperature_start, self.temperature_steps,
                                           alpha=self.temperature / self.temperature_start)(step)

    def discriminator_weight_at(self, step=None):
        if step is None or not self.discriminator_warmup_steps:
            return self.discriminator_weight
        return self.discriminator_weight * jnp.minimum(1.0, step / self.discriminator_warmup_steps)


class Masked(NamedTuple):
    input_ids: jax.Array   # [B, L] with the chosen positions replaced
    positions: jax.Array   # [B, P] chosen positions (0 where weights == 0)
    labels: jax.Array      # [B, P] original token at each chosen position
    weights: jax.Array     # [B, P] 1.0 for a real prediction, 0.0 for padding of the P slots


def word_ids(starts):
    """[B, L] bool (a token begins a word) -> each token's word number, counted from 0 per row."""
    return jnp.cumsum(starts.astype(jnp.int32), axis=1) - 1


def word_lengths(words):
    """Each token's word length in tokens, from its word number."""
    rows = jnp.arange(words.shape[0])[:, None]
    lengths = jnp.zeros(words.shape, jnp.int32).at[rows, words].add(1)
    return jnp.take_along_axis(lengths, words, axis=1)


def _whole_word_order(rng, ids, candidates, count, word_starts):
    """(token positions in the order words are chosen [B, L], how many of them are chosen [B], the
    word number of each token [B, L]). Words come in a uniformly random order, all pieces of a word
    together; the chosen ones are the words, in that order, whose last piece still falls within
    `count` tokens (so a sequence may get a few fewer than `count` when the next word does not fit).
    A word longer than `count` is masked like separate tokens, so a text without word marks (e.g.
    SentencePiece over Chinese, where a whole sentence is one "word") still gets its predictions."""
    # special tokens and padding are words of their own, and so is a piece that follows one (text
    # packed into sequences may begin in the middle of a word)
    after_special = jnp.concatenate([jnp.ones_like(candidates[:, :1]), ~candidates[:, :-1]], axis=1)
    starts = jnp.asarray(word_starts)[ids] | ~candidates | after_special
    starts = starts | (word_lengths(word_ids(starts)) > count[:, None])
    words = word_ids(starts)
    priority = jnp.where(candidates, jnp.take_along_axis(jax.random.uniform(rng, ids.shape), words, 1), -1.0)
    _, order = jax.lax.top_k(priority, ids.shape[1])  # one priority per word: its pieces sort together
    ordered_words = jnp.take_along_axis(words, order, 1)
    rank = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    first = jnp.concatenate([jnp.ones_like(rank[:, :1], bool), ordered_words[:, 1:] != ordered_words[:, :-1]], 1)
    word_first_rank = jax.lax.cummax(jnp.where(first, rank, 0), axis=1)
    fits = (word_first_rank + jnp.take_along_axis(word_lengths(words), order, 1) <= count[:, None])
    fits = fits & jnp.take_along_axis(candidates, order, 1)
    return order, jnp.sum(fits, axis=1), words  # `fits` is a prefix of the order


def mask_tokens(rng, batch, cfg: ObjectiveConfig, *, mask_frac: float, random_frac: float) -> Masked:
    """Choose round(len * mask_prob) positions (clipped to [1, max_predictions]) among the non-special,
    non-padding tokens, distinct and uniformly at random; of those, `mask_frac` become [MASK],
    `random_frac` a random token, and the rest keep the original token.

    cfg.masking="whole_word": the positions are whole words (all pieces of a word, as
    cfg.word_starts marks them), and the [MASK] / random / keep choice is made once per word."""
    ids, attn = batch["input_ids"], batch["attention_mask"].astype(bool)
    special = (ids == cfg.cls_id) | (ids == cfg.sep_id) | (ids == cfg.mask_id)
    candidates = attn & ~special
    count = jnp.round(attn.sum(-1) * cfg.mask_prob).astype(jnp.int32)
    count = jnp.minimum(jnp.clip(count, 1, cfg.max_predictions), candidates.sum(-1))

    k_pick, k_how, k_token = jax.random.split(rng, 3)
    if cfg.masking == "whole_word":
        order, count, words = _whole_word_order(k_pick, ids, candidates, count, cfg.word_starts)
        positions = order[:, :cfg.max_predictions]
    else:
        # A random priority per candidate; top-k picks distinct positions without replacement.
        priority = jnp.where(candidates, jax.random.uniform(k_pick, ids.shape), -1.0)
        _, positions = jax.lax.top_k(priority, cfg.max_predictions)
    weights = jnp.arange(cfg.max_predictions)[None, :] < count[:, None]
    positions = jnp.where(weights, positions, 0).astype(jnp.int32)
    labels = jnp.take_along_axis(ids, positions, axis=1)

    if cfg.masking == "whole_word":  # one draw per word, read by each of its pieces
        u = jnp.take_along_axis(jax.random.uniform(k_how, ids.shape), jnp.take_along_axis(words, positions, 1), 1)
    else:
        u = jax.random.uniform(k_how, positions.shape)
    random_tokens = jax.random.randint(k_token, positions.shape, 0, cfg.vocab_size, dtype=ids.dtype)
    new = jnp.where(u < mask_frac, cfg.mask_id, jnp.where(u < mask_frac + random_frac, random_tokens, labels))
    new = jnp.where(weights, new, labels)  # unused slots rewrite the original token: a no-op
    masked_ids = ids.at[jnp.arange(ids.shape[0])[:, None], positions].set(new)
    return Masked(masked_ids, positions, labels, weights.astype(jnp.float32))


def _weighted_mean(x, w):
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1e-6)


def sample_tokens(uniform, logits, temperature, block: int = 128):
    """One token per row of `logits` [..., V] from softmax(logits / temperature), in float32; no
    gradient reaches the generator through the sample. `uniform` [...]: one number in [0, 1) per
    row (drawn with the rest of the step's random choices, before any micro-batching).

    Inverse-CDF sampling with one uniform number per row, in two levels: find the block of `block`
    tokens whose cumulative mass passes u, then the token inside it. Gumbel-max (what
    jax.random.categorical does) draws a random number for every vocabulary entry: 19 x 30522 per
    sequence, about 9% of an ELECTRA-Small step on a CPU; this draws one and never cumsums the
    whole vocabulary.
    """
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32))
    vocab = logits.shape[-1]
    blocks = -(-vocab // block)
    probs = jax.nn.softmax(logits / temperature, axis=-1)
    probs = jnp.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(0, blocks * block - vocab)])
    probs = probs.reshape(*probs.shape[:-1], blocks, block)
    block_mass = probs.sum(-1)
    mass_through = jnp.cumsum(block_mass, -1)                     # mass of blocks 0..b
    u = (1.0 - uniform) * mass_through[..., -1]  # in (0, total]
    b = jnp.minimum(jnp.sum(mass_through < u[..., None], -1), blocks - 1)
    mass_before = jnp.take_along_axis(mass_through - block_mass, b[..., None], -1)
    inside = jnp.take_along_axis(probs, b[..., None, None], -2)[..., 0, :]
    i = jnp.sum(mass_before + jnp.cumsum(inside, -1) < u[..., None], -1)
    # a zero-probability token never has cumulative mass above a smaller index's, so it is never
    # the first to pass u; the clamps only catch float rounding at the very end of the range
    return jnp.minimum(b * block + jnp.minimum(i, block - 1), vocab - 1).astype(jnp.int32)


def shuffled_replacements(rng, masked: Masked, prob: float):
    """(tokens [B, P], used [B, P]): each real slot's `tokens` entry is the original token of
    another real slot of the batch (one random cycle through them, so every original is given out
    exactly once and the tokens follow the masked tokens' own unigram distribution); `used` holds
    for each real slot with probability `prob`."""
    k_order, k_use = jax.random.split(rng)
    real = masked.weights.reshape(-1) > 0
    order = jnp.argsort(jnp.where(real, jax.random.uniform(k_order, real.shape), 2.0))  # real slots first
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size))
    source = order[(rank + 1) % jnp.maximum(real.sum(), 1)]  # the next real slot along the cycle
    tokens = masked.labels.reshape(-1)[source].reshape(masked.labels.shape)
    used = jax.random.bernoulli(k_use, prob, masked.labels.shape) & (masked.weights > 0)
    return tokens, used


def roc_auc(scores, labels, mask):
    """ROC AUC of `scores` separating labels 1 from 0 over the positions where mask is 1: the
    probability that a random positive scores above a random negative (Mann-Whitney, ties broken
    by sort order). 0.5 is chance; it moves before any token crosses the 0.5 decision threshold."""
    order = jnp.argsort(scores.ravel())
    pos = (labels * mask).ravel()[order].astype(jnp.float32)
    neg = ((1 - labels) * mask).ravel()[order].astype(jnp.float32)
    negatives_below = jnp.cumsum(neg) - neg
    return jnp.sum(pos * negatives_below) / jnp.maximum(jnp.sum(pos) * jnp.sum(neg), 1.0)


def binary_entropy(p):
    """Nats: the loss of a detector that only knows the replaced fraction p (the class prior)."""
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))


def discriminator_metrics(logits, labels, mask):
    logits, labels, mask = logits.astype(jnp.float32), labels.astype(jnp.float32), mask.astype(jnp.float32)
    loss = _weighted_mean(optax.sigmoid_binary_cross_entropy(logits, labels), mask)
    predicted = (logits > 0).astype(jnp.float32) * mask
    true_pos = jnp.sum(predicted * labels)
    replaced_fraction = _weighted_mean(labels, mask)
    return loss, {
        "discriminator_loss": loss,
        "discriminator_accuracy": _weighted_mean((predicted == labels).astype(jnp.float32), mask),
        "discriminator_precision": true_pos / jnp.maximum(jnp.sum(predicted), 1.0),
        "discriminator_recall": true_pos / jnp.maximum(jnp.sum(labels * mask), 1.0),
        "discriminator_auc": roc_auc(logits, labels, mask),
        # > 0 only when the discriminator knows more than the replaced fraction
        "discriminator_information_gain": binary_entropy(replaced_fraction) - loss,
        "replaced_fraction": replaced_fraction,
    }


# An objective in four parts, so that the train step can split a batch into micro-batches and
# still compute the full batch's gradient exactly (train.grad_accum_steps):
#   draw(rng, batch, cfg) -> (draws, dropout_rngs): every random choice of the step (masking,
#       the sampler's uniform numbers, shuffled replacements), drawn for the whole batch at once,
#       so it does not depend on how the batch is split; every leaf of `draws` is [B, ...];
#   totals(batch, draws) -> the whole batch's loss denominators (masked slots, real tokens);
#   forward(params, model, batch, draws, cfg, dropout_rngs, deterministic, step) -> (terms, aux):
#       per-example arrays [b, ...] of one (micro-)batch; aux: what tests and inspection read;
#   loss(terms, totals, cfg, step): sums over the examples divided by the whole batch's totals, so
#       the micro-batches' losses (and gradients) add up to the full batch's;
#   metrics(terms, totals, cfg, step): the logged metrics, from the whole batch's terms.

def _sum_over(x, total):
    return jnp.sum(x) / jnp.maximum(total, 1e-6)


def _prediction_terms(logits, masked: Masked) -> dict:
    """Per-slot masked-LM cross-entropy and correctness (float32), zero on the padding slots."""
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, masked.labels)
    correct = (jnp.argmax(logits, -1) == masked.labels).astype(jnp.float32)
    return dict(cross_entropy=ce * masked.weights, correct=correct * masked.weights)


def _electra_draws(rng, batch, cfg: ObjectiveConfig):
    k_mask, k_sample, k_gen_drop, k_disc_drop = jax.random.split(rng, 4)
    masked = mask_tokens(k_mask, batch, cfg, mask_frac=0.85, random_frac=0.0)
    draws = dict(masked=masked, sample_uniform=jax.random.uniform(k_sample, masked.labels.shape))
    if cfg.shuffled_replacement_prob:  # its own key, so the reference's random streams stay as they were
        draws["shuffled_tokens"], draws["shuffled_used"] = shuffled_replacements(
            jax.random.fold_in(rng, 1), masked, cfg.shuffled_replacement_prob)
    return draws, dict(generator=k_gen_drop, discriminator=k_disc_drop)


def _electra_totals(batch, draws):
    return dict(predictions=jnp.sum(draws["masked"].weights),
                tokens=jnp.sum(batch["attention_mask"]).astype(jnp.float32))


def _electra_forward(params, model, batch, draws, cfg: ObjectiveConfig, dropout_rngs, deterministic, step):
    """The generator fills the chosen positions; every chosen position (masked or kept) takes its
    sample; the discriminator reads the corrupted text."""
    masked = draws["masked"]
    types, attn = batch["token_type_ids"], batch["attention_mask"]
    gen_logits = model.apply({"params": params}, masked.input_ids, types, attn, masked.positions, deterministic,
                             method="generator_logits", rngs={"dropout": dropout_rngs["generator"]})
    sampled = sample_tokens(draws["sample_uniform"], gen_logits, cfg.temperature_at(step))
    sampled = jnp.where(masked.weights > 0, sampled, masked.labels)
    original = batch["input_ids"]
    rows = jnp.arange(original.shape[0])[:, None]
    terms = _prediction_terms(gen_logits, masked)
    if cfg.shuffled_replacement_prob:
        used = draws["shuffled_used"]
        sampled = jnp.where(used, draws["shuffled_tokens"], sampled)
        terms["shuffled"] = jnp.zeros_like(original, dtype=bool).at[rows, masked.positions].max(used)
    corrupted = original.at[rows, masked.positions].set(sampled)
    replaced = (corrupted != original) & attn.astype(bool)  # a correct sample counts as original
    disc_logits = model.apply({"params": params}, corrupted, types, attn, deterministic,
                              method="discriminator_logits", rngs={"dropout": dropout_rngs["discriminator"]})
    terms.update(discriminator_logits=disc_logits.astype(jnp.float32), replaced=replaced,
                 real_tokens=attn.astype(jnp.float32))
    aux = dict(masked=masked, sampled=sampled, corrupted=corrupted, labels=replaced,
               generator_logits=gen_logits, discriminator_logits=disc_logits)
    return terms, aux


def _electra_parts(terms, totals, cfg: ObjectiveConfig, step):
    gen_loss = _sum_over(terms["cross_entropy"], totals["predictions"])
    bce = optax.sigmoid_binary_cross_entropy(terms["discriminator_logits"], terms["replaced"].astype(jnp.float32))
    disc_loss = _sum_over(bce * terms["real_tokens"], totals["tokens"])
    disc_weight = cfg.discriminator_weight_at(step)
    return cfg.generator_weight * gen_loss + disc_weight * disc_loss, gen_loss, disc_weight


def _electra_loss(terms, totals, cfg: ObjectiveConfig, step):
    return _electra_parts(terms, totals, cfg, step)[0]


def _electra_metrics(terms, totals, cfg: ObjectiveConfig, step):
    loss, gen_loss, disc_weight = _electra_parts(terms, totals, cfg, step)
    logits, replaced, real = terms["discriminator_logits"], terms["replaced"], terms["real_tokens"]
    _, metrics = discriminator_metrics(logits, replaced, real)
    if "shuffled" in terms:  # the detector on the generator's replacements alone (against every original token)
        metrics["discriminator_auc_generator_replacements"] = roc_auc(logits, replaced, (real > 0) & ~terms["shuffled"])
    metrics.update(loss=loss, generator_loss=gen_loss,
                   generator_accuracy=_sum_over(terms["correct"], totals["predictions"]),
                   temperature=cfg.temperature_at(step), discriminator_weight=disc_weight)
    return metrics


def _mlm_draws(rng, batch, cfg: ObjectiveConfig):
    """BERT's masking: 80% [MASK], 10% random token, 10% unchanged."""
    k_mask, k_drop = jax.random.split(rng)
    return dict(masked=mask_tokens(k_mask, batch, cfg, mask_frac=0.8, random_frac=0.1)), dict(encoder=k_drop)


def _mlm_totals(batch, draws):
    return dict(predictions=jnp.sum(draws["masked"].weights))


def _mlm_forward(params, model, batch, draws, cfg: ObjectiveConfig, dropout_rngs, deterministic, step):
    masked = draws["masked"]
    logits = model.apply({"params": params}, masked.input_ids, batch["token_type_ids"], batch["attention_mask"],
                         masked.positions, deterministic, rngs={"dropout": dropout_rngs["encoder"]})
    return _prediction_terms(logits, masked), dict(masked=masked, logits=logits)


def _mlm_loss(terms, totals, cfg: ObjectiveConfig, step):
    return _sum_over(terms["cross_entropy"], totals["predictions"])


def _mlm_metrics(terms, totals, cfg: ObjectiveConfig, step):
    loss = _mlm_loss(terms, totals, cfg, step)
    return {"loss": loss, "mlm_loss": loss, "mlm_accuracy": _sum_over(terms["correct"], totals["predictions"])}


class Objective(NamedTuple):
    """A pretraining objective in the parts the train step composes (see above). Called, it is the
    whole-batch loss: (loss, (metrics, aux)), as evaluation and tests use it."""
    draw: Callable
    totals: Callable
    forward: Callable
    loss: Callable
    metrics: Callable

    def __call__(self, params, model, batch, rng, cfg: ObjectiveConfig, deterministic: bool = False, step=None):
        """`step` sets scheduled values (temperature, the discriminator's weight); None: their final values."""
        draws, dropout_rngs = self.draw(rng, batch, cfg)
        totals = self.totals(batch, draws)
        terms, aux = self.forward(params, model, batch, draws, cfg, dropout_rngs, deterministic, step)
        return self.loss(terms, totals, cfg, step), (self.metrics(terms, totals, cfg, step), aux)


electra_loss = Objective(_electra_draws, _electra_totals, _electra_forward, _electra_loss, _electra_metrics)
mlm_loss = Objective(_mlm_draws, _mlm_totals, _mlm_forward, _mlm_loss, _mlm_metrics)
LOSSES = {"electra": electra_loss, "mlm": mlm_loss}
