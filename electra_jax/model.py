"""ELECTRA in flax.linen: BERT post-LayerNorm encoder, a shared embedding block, and the heads.

Parameters carry logical axis names ("vocab", "embed", "mlp", "heads"); sharding.py maps
them to mesh axes, so the same module runs replicated, data parallel, FSDP or tensor parallel.

Mixed precision (model.dtype="bfloat16", param_dtype="float32"): parameters, and so the optimizer
state, stay float32 (the master copy); matmuls and the activations between them run in bfloat16;
LayerNorm statistics (flax computes them in float32), the attention softmax, the generator's
vocabulary logits (and so its softmax, sampling and loss) and the discriminator's logit are
float32; the objective computes losses and metrics in float32.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

from electra_jax.config import EMBEDDING_SHARING, generator_size

LAYER_NORM_EPS = 1e-12  # the reference's value; BERT checkpoints depend on it


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = LAYER_NORM_EPS
    dtype: str = "float32"
    param_dtype: str = "float32"
    # "flax": flax's dot_product_attention (with attention dropout); "jax": jax.nn.dot_product_attention,
    # cuDNN's flash attention on NVIDIA GPUs, XLA's elsewhere (fused_attention_implementation); it
    # has no attention dropout.
    attention_impl: str = "flax"
    attention_bias: str = "none"  # "alibi": add alibi_logits (below) to every head's logits; "none": BERT's attention
    position_init: str = "normal"  # "zeros": the position table starts at zero (config.py says why)
    remat: str = "none"  # activation checkpointing of each layer: "none", "full" or a REMAT_POLICIES name

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def model_configs(config, vocab_size: int) -> tuple[ModelConfig, ModelConfig]:
    """(discriminator, generator) sizes from the experiment config."""
    m = config.model
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    disc = ModelConfig(**{k: v for k, v in m.to_dict().items() if k in fields and k != "vocab_size"},
                       vocab_size=vocab_size)
    return disc, disc.replace(**generator_size(config))


def _dense_init(cfg, names):
    return nn.with_logical_partitioning(nn.initializers.truncated_normal(cfg.initializer_range), names)


def _zeros(names):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(cfg, name):
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                        bias_init=_zeros(("embed",)))


def dense_layer(cfg, features, names, name):
    return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                    kernel_init=_dense_init(cfg, names), bias_init=_zeros(names[-1:]))


gelu = functools.partial(jax.nn.gelu, approximate=False)  # exact erf GELU, as BERT


class Embeddings(nn.Module):
    """Word + position + token-type embeddings and their LayerNorm: the block both models share."""
    cfg: ModelConfig

    def setup(self):
        c = self.cfg
        embed = functools.partial(nn.Embed, features=c.embedding_size, dtype=c.dtype, param_dtype=c.param_dtype)
        self.word_embeddings = embed(c.vocab_size, embedding_init=_dense_init(c, ("vocab", "embed")))
        position_init = _zeros((None, "embed")) if c.position_init == "zeros" else _dense_init(c, (None, "embed"))
        self.position_embeddings = embed(c.max_position_embeddings, embedding_init=position_init)
        self.token_type_embeddings = embed(c.type_vocab_size, embedding_init=_dense_init(c, (None, "embed")))
        self.layer_norm = _layer_norm(c, "LayerNorm")
        self.dropout = nn.Dropout(c.dropout_rate)

    def __call__(self, input_ids, token_type_ids, deterministic: bool, word_delta=None):
        """word_delta [V, E] (gradient-disentangled sharing): the words are looked up as
        stop_gradient(word_embeddings) + word_delta, so this caller's loss trains only the delta."""
        positions = jnp.arange(input_ids.shape[-1])
        words = self.word_embeddings(input_ids)
        if word_delta is not None:
            words = jax.lax.stop_gradient(words) + jnp.take(word_delta, input_ids, axis=0).astype(words.dtype)
        x = words + self.position_embeddings(positions)[None] + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def attend(self, x):
        """x @ word_embeddings.T in float32: the tied output projection of the masked-LM head, whose
        logits feed a softmax over the whole vocabulary and the replacement sampler."""
        return jnp.dot(x.astype(jnp.float32), jnp.asarray(self.word_embeddings.embedding, jnp.float32).T)


def alibi_slopes(num_heads: int) -> jnp.ndarray:
    """Head h's penalty per position of distance: 2^-(1 + 3h). The first head halves its weight
    with every position (it sees its neighbours); each next one is 8x gentler, the last ones near global."""
    return 2.0 ** -(1.0 + 3.0 * jnp.arange(num_heads, dtype=jnp.float32))


def alibi_logits(num_heads: int, length: int) -> jnp.ndarray:
    """[1, heads, L, L] additive attention logits -slope_h * |i - j|."""
    distance = jnp.abs(jnp.arange(length)[:, None] - jnp.arange(length)[None, :]).astype(jnp.float32)
    return -alibi_slopes(num_heads)[None, :, None, None] * distance[None, None]


def _float32_logits_einsum(equation, query, key):
    """q k^T with float32 results: the attention logits and their softmax are float32."""
    return jnp.einsum(equation, query, key, preferred_element_type=jnp.float32)


def _compute_dtype_einsum(equation, weights, value):
    """softmax(...) v with the (float32) probabilities cast to the compute dtype, as the matmul runs."""
    return jnp.einsum(equation, weights.astype(value.dtype), value)


def fused_attention_implementation(device_kind: str, dtype, head_dim: int) -> str:
    """jax.nn.dot_product_attention's implementation for a device: cuDNN's fused flash attention on
    NVIDIA GPUs where it applies (16-bit compute, head size a multiple of 8 up to 128), XLA's
    everywhere else (TPUs, CPUs, float32), which keeps the logits and softmax in float32."""
    sixteen_bit = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if device_kind.startswith("NVIDIA") and sixteen_bit and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


class SelfAttention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        c = self.cfg
        head_dim = c.hidden_size // c.num_heads

        def project(name):  # [B, L, H] -> [B, L, heads, head_dim]; "heads" is the tensor-parallel axis
            y = dense_layer(c, c.hidden_size, ("embed", "heads"), name)(x)
            return y.reshape(*y.shape[:-1], c.num_heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        bias = alibi_logits(c.num_heads, x.shape[-2]).astype(q.dtype) if c.attention_bias == "alibi" else None
        if c.attention_impl == "jax":
            implementation = fused_attention_implementation(jax.devices()[0].device_kind, c.dtype, head_dim)
            y = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=implementation)
        else:
            dropout_rng = None
            if not deterministic and c.attention_dropout_rate > 0:
                dropout_rng = self.make_rng("dropout")
            y = nn.dot_product_attention(q, k, v, bias=bias, mask=mask, dropout_rng=dropout_rng,
                                         dropout_rate=c.attention_dropout_rate, deterministic=deterministic,
                                         dtype=c.dtype, force_fp32_for_softmax=True,
                                         qk_attn_weights_einsum=_float32_logits_einsum,
                                         attn_weights_value_einsum=_compute_dtype_einsum)
        return dense_layer(c, c.hidden_size, ("heads", "embed"), "output")(y.reshape(*y.shape[:-2], c.hidden_size))


class TransformerLayer(nn.Module):
    """One post-LayerNorm BERT block."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        c = self.cfg
        drop = nn.Dropout(c.dropout_rate)
        y = SelfAttention(c, name="attention")(x, mask, deterministic)
        x = _layer_norm(c, "attention_norm")(x + drop(y, deterministic=deterministic))
        y = gelu(dense_layer(c, c.intermediate_size, ("embed", "mlp"), "intermediate")(x))
        y = dense_layer(c, c.hidden_size, ("mlp", "embed"), "output")(y)
        x = _layer_norm(c, "output_norm")(x + drop(y, deterministic=deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def layer_class(remat: str):
    """TransformerLayer, or the same layer under activation checkpointing (jax.checkpoint): "full"
    keeps only each layer's input for the backward pass and recomputes the rest; a policy name
    keeps what the policy saves (e.g. "dots_with_no_batch_dims_saveable": the matmul outputs that
    involve weights, recomputing attention and elementwise work)."""
    if remat == "none":
        return TransformerLayer
    policy = None if remat == "full" else getattr(jax.checkpoint_policies, remat)
    return nn.remat(TransformerLayer, policy=policy, static_argnums=(3,))  # (self, x, mask, deterministic)


class Encoder(nn.Module):
    """Embedding-size -> hidden projection (when they differ) and the stack of layers."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        c = self.cfg
        if c.embedding_size != c.hidden_size:
            x = dense_layer(c, c.hidden_size, ("embed", "mlp"), "embeddings_project")(x)
        mask = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, L]: keys that are real tokens
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        layer = layer_class(c.remat)
        for i in range(c.num_layers):
            x = layer(c, name=f"layer_{i}")(x, mask, deterministic)
        return x


class MaskedLMHead(nn.Module):
    """dense(E) + GELU + LayerNorm, then the tied word embeddings transposed plus a bias."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, hidden, embeddings: Embeddings):
        c = self.cfg
        h = gelu(dense_layer(c, c.embedding_size, ("mlp", "embed"), "dense")(hidden))
        h = _layer_norm(c, "LayerNorm")(h)
        bias = self.param("output_bias", _zeros(("vocab",)), (c.vocab_size,), c.param_dtype)
        return embeddings.attend(h) + bias


class DiscriminatorHead(nn.Module):
    """dense(H) + GELU + dense(1): one logit per token, 'this token was replaced'."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, hidden):
        c = self.cfg
        h = gelu(dense_layer(c, c.hidden_size, ("embed", "mlp"), "dense")(hidden))
        return dense_layer(c.replace(dtype="float32"), 1, ("mlp", None), "dense_prediction")(h)[..., 0]


def gather_positions(x, positions):
    """x[b, positions[b, p]] -> [B, P, ...]: the masked-LM head runs on masked positions only."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


class ElectraPretrainer(nn.Module):
    """Generator and discriminator, sharing their embedding block as `embedding_sharing` says:

    - "tied" (the reference): one block, trained by both losses;
    - "gdes" (DeBERTa-v3's gradient-disentangled sharing): the generator trains the block; the
      discriminator reads stop_gradient(word embeddings) + its own zero-initialised
      `discriminator_word_delta`, so its loss never pulls the generator's word table;
    - "none": the generator has its own block, `generator_embeddings`.

    The generator may be narrower and shallower. Parameters: embeddings / generator / generator_head /
    discriminator / discriminator_head (+ discriminator_word_delta or generator_embeddings);
    `network_params` turns them into the two standalone networks.
    """
    disc: ModelConfig
    gen: ModelConfig
    embedding_sharing: str = "tied"

    def setup(self):
        if self.embedding_sharing not in EMBEDDING_SHARING:
            raise ValueError(f"embedding_sharing={self.embedding_sharing!r}: choose one of {EMBEDDING_SHARING}")
        self.embeddings = Embeddings(self.disc)
        if self.embedding_sharing == "none":
            self.generator_embeddings = Embeddings(self.disc)
        self.generator = Encoder(self.gen)
        self.generator_head = MaskedLMHead(self.gen)
        self.discriminator = Encoder(self.disc)
        self.discriminator_head = DiscriminatorHead(self.disc)
        if self.embedding_sharing == "gdes":
            self.discriminator_word_delta = self.param(
                "discriminator_word_delta", _zeros(("vocab", "embed")),
                (self.disc.vocab_size, self.disc.embedding_size), self.disc.param_dtype)

    def generator_logits(self, input_ids, token_type_ids, attention_mask, positions, deterministic=True):
        embeddings = self.generator_embeddings if self.embedding_sharing == "none" else self.embeddings
        h = self.generator(embeddings(input_ids, token_type_ids, deterministic), attention_mask, deterministic)
        return self.generator_head(gather_positions(h, positions), embeddings)

    def discriminator_logits(self, input_ids, token_type_ids, attention_mask, deterministic=True):
        delta = self.discriminator_word_delta if self.embedding_sharing == "gdes" else None
        x = self.embeddings(input_ids, token_type_ids, deterministic, word_delta=delta)
        return self.discriminator_head(self.discriminator(x, attention_mask, deterministic))

    def __call__(self, input_ids, token_type_ids, attention_mask, positions, deterministic=True):
        return (self.generator_logits(input_ids, token_type_ids, attention_mask, positions, deterministic),
                self.discriminator_logits(input_ids, token_type_ids, attention_mask, deterministic))


def network_params(params: dict, objective: str) -> dict:
    """The pretraining parameters as standalone networks {part: {embeddings, encoder, head}}: what
    export writes and fine-tuning loads. GDES's delta is folded into the discriminator's word table,
    so every exported network has one plain embedding matrix."""
    if objective == "mlm":
        return {"encoder": dict(embeddings=params["embeddings"], encoder=params["encoder"], head=params["lm_head"])}
    disc_embeddings = params["embeddings"]
    if "discriminator_word_delta" in params:
        words = disc_embeddings["word_embeddings"]
        disc_embeddings = {**disc_embeddings, "word_embeddings": {
            **words, "embedding": words["embedding"] + params["discriminator_word_delta"]}}
    return {"discriminator": dict(embeddings=disc_embeddings, encoder=params["discriminator"],
                                  head=params["discriminator_head"]),
            "generator": dict(embeddings=params.get("generator_embeddings", params["embeddings"]),
                              encoder=params["generator"], head=params["generator_head"])}


class MaskedLM(nn.Module):
    """The BERT baseline: the discriminator-sized encoder with a masked-LM head."""
    disc: ModelConfig

    def setup(self):
        self.embeddings = Embeddings(self.disc)
        self.encoder = Encoder(self.disc)
        self.lm_head = MaskedLMHead(self.disc)

    def __call__(self, input_ids, token_type_ids, attention_mask, positions, deterministic=True):
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        h = self.encoder(x, attention_mask, deterministic)
        return self.lm_head(gather_positions(h, positions), self.embeddings)


class ElectraEncoderModel(nn.Module):
    """A single network with parameters {embeddings, encoder[, head]}: the shape of exported and
    HuggingFace checkpoints. This one returns the last hidden states [B, L, H] (HF ElectraModel)."""
    cfg: ModelConfig

    def setup(self):
        self.embeddings = Embeddings(self.cfg)
        self.encoder = Encoder(self.cfg)

    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        attention_mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.encoder(self.embeddings(input_ids, token_type_ids, deterministic), attention_mask, deterministic)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        return self.hidden_states(input_ids, attention_mask, token_type_ids, deterministic)


class ElectraDiscriminator(ElectraEncoderModel):
    """Replaced-token-detection logits [B, L] (HF ElectraForPreTraining)."""

    def setup(self):
        super().setup()
        self.head = DiscriminatorHead(self.cfg)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        return self.head(self.hidden_states(input_ids, attention_mask, token_type_ids, deterministic))


class ElectraGenerator(ElectraEncoderModel):
    """Masked-LM logits [B, L, V] over every position (HF ElectraForMaskedLM)."""

    def setup(self):
        super().setup()
        self.head = MaskedLMHead(self.cfg)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        return self.head(self.hidden_states(input_ids, attention_mask, token_type_ids, deterministic), self.embeddings)
