"""Default configuration, model-size presets and validation.

Every experiment file in configs/ starts from `default_config(size)` and overrides what differs,
so a field always has one documented meaning. `validate` runs before any data is read or any
function is compiled, and names the field that is wrong.
"""
from __future__ import annotations

import ml_collections

# Paper Table 6 (plus a CPU-sized "tiny"). The generator keeps the depth; its width is a fraction.
MODEL_SIZES = {
    "tiny": dict(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512, embedding_size=128,
                 generator_fraction=0.25),
    "small": dict(num_layers=12, hidden_size=256, num_heads=4, intermediate_size=1024, embedding_size=128,
                  generator_fraction=0.25),
    "base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, embedding_size=768,
                 generator_fraction=1 / 3),
    "large": dict(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096, embedding_size=1024,
                  generator_fraction=0.25),
}


# Pretraining hyperparameters that differ by size (paper Table 6; "tiny" trains in minutes on a CPU).
TRAINING_BY_SIZE = {
    "tiny": dict(batch_size=32, learning_rate=1e-3, num_steps=2_000, warmup_steps=100, seq_length=128),
    "small": dict(batch_size=128, learning_rate=5e-4, num_steps=1_000_000, warmup_steps=10_000, seq_length=128),
    "base": dict(batch_size=256, learning_rate=2e-4, num_steps=766_000, warmup_steps=10_000, seq_length=512),
    "large": dict(batch_size=2048, learning_rate=2e-4, num_steps=400_000, warmup_steps=10_000, seq_length=512),
}


# Recipes: named sets of field values over the defaults, each field set once. "reference" is the
# paper's (google-research/electra); default_config(size, recipe) applies one, and a config file
# selects it as a variant (`--config configs/electra_tiny.py:reference`).
RECIPES = {
    "reference": {},
    # For runs of minutes to hours on a CPU (the demo and configs/electra_tiny.py), chosen on
    # held-out pretraining signals at the demo's scale (docs/study.md, "The small-budget recipe"):
    # Adam with bias correction, the discriminator at 1e-3 and the generator at 3e-4 (a
    # discriminator that learns faster than its generator), no dropout (a short run sees most text
    # once), untied embeddings and a one-layer generator (the generator does not pull ahead of the
    # discriminator), the discriminator's loss weighted 100, 20% of the tokens masked. BERT's
    # attention, so every model it trains converts to HuggingFace.
    "small_budget": {
        "train.bias_correction": True,
        "train.learning_rate": 1e-3,
        "train.generator_learning_rate_scale": 0.3,
        "model.dropout_rate": 0.0,
        "model.attention_dropout_rate": 0.0,
        "model.embedding_sharing": "none",
        "model.generator_num_layers": 1,
        "pretrain.discriminator_weight": 100.0,
        "pretrain.mask_prob": 0.2,
    },
}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


EMBEDDING_SHARING = ("tied", "gdes", "none")
ATTENTION_BIASES = ("none", "alibi")
POSITION_INITS = ("normal", "zeros")
TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine")
MASKING = ("token", "whole_word")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


def need(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok: validation reads as a list of requirements."""
    if not ok:
        raise ConfigError(message)


def default_config(size: str = "small", recipe: str = "reference") -> ml_collections.ConfigDict:
    """The config of a model size (paper Table 6, plus "tiny") with one of RECIPES applied."""
    if size not in MODEL_SIZES:
        raise ConfigError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    training = TRAINING_BY_SIZE[size]
    c = ml_collections.ConfigDict()
    c.size = size
    c.seed = 0
    c.objective = "electra"  # "electra" (replaced-token detection) or "mlm" (BERT baseline)

    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0: taken from the prepared data's tokenizer
        max_position_embeddings=512,
        type_vocab_size=2,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        # "flax" (with attention dropout) or "jax": jax.nn.dot_product_attention, cuDNN flash attention
        # on NVIDIA GPUs in bfloat16/float16, XLA elsewhere; needs attention_dropout_rate=0
        attention_impl="flax",
        dtype="float32",        # compute dtype (bfloat16 on accelerators)
        # Activation checkpointing of each Transformer layer, trading compute for memory: "none",
        # "full" (keep each layer's input, recompute the rest in the backward pass), or a policy of
        # jax.checkpoint_policies in REMAT_POLICIES ("dots_with_no_batch_dims_saveable": keep the
        # matmuls with weights, recompute attention and the elementwise work).
        remat="none",
        param_dtype="float32",
        **MODEL_SIZES[size],
        # How the generator and discriminator share embeddings: "tied" (the reference: one block,
        # trained by both losses), "gdes" (DeBERTa-v3's gradient-disentangled sharing: the
        # discriminator adds a zero-initialised delta to stop_gradient(the shared word table)), "none".
        embedding_sharing="tied",
        # "alibi": every head adds -slope * |i - j| to its attention logits (Press et al. 2022, made
        # symmetric for an encoder), so attention starts local; HuggingFace BERT/ELECTRA cannot carry
        # it, so such a model does not export to HuggingFace. "none": the reference (BERT) attention.
        attention_bias="none",
        # The learned position table's start: "normal" (BERT: the same scale as the word vectors,
        # so each position adds noise as loud as a token's identity) or "zeros" (silent until trained;
        # with ALiBi the attention knows distance from step 0, and rows never trained, such as
        # positions past a short pretraining length, stay zero instead of random).
        position_init="normal",
        # An explicit generator shape (0: from generator_fraction / the discriminator's depth);
        # init.hf_generator sets the widths.
        generator_num_layers=0,
        generator_hidden_size=0,
        generator_num_heads=0,
        generator_intermediate_size=0,
    ))

    # Continue pretraining from HuggingFace ELECTRA directories (e.g. a local copy of
    # google/electra-small-discriminator and -generator): the model shape comes from their
    # config.json, the weights replace the random initialisation. Prepare the data with the same
    # tokenizer (`electra-jax prepare --tokenizer DIR`).
    c.init = ml_collections.ConfigDict(dict(hf_discriminator="", hf_generator=""))

    c.pretrain = ml_collections.ConfigDict(dict(
        mask_prob=0.25 if size == "large" else 0.15,
        max_predictions_per_seq=0,  # 0: int((mask_prob + 0.005) * seq_length), as the reference
        generator_weight=1.0,
        discriminator_weight=50.0,
        temperature=1.0,  # the generator's sampling temperature (at the end of a schedule)
        # A curriculum of easy replacements first (Fast-ELECTRA): the temperature falls from
        # temperature_start to `temperature` over temperature_steps (0: the whole run) along
        # temperature_schedule: "constant" (no curriculum), "linear" or "cosine".
        temperature_schedule="constant",
        temperature_start=1.0,
        temperature_steps=0,
        discriminator_warmup_steps=0,  # the discriminator's weight rises linearly from 0 over these steps
        # The share of chosen positions that take a token shuffled from the batch's other chosen
        # positions (a unigram replacement) instead of the generator's sample. 0: the reference.
        shuffled_replacement_prob=0.0,
        # "token": positions chosen one by one (the reference); "whole_word": all pieces of a word
        # together ("▁" starts a SentencePiece word, "##" continues a WordPiece one), and the
        # 85/15 [MASK]/keep choice made once per word.
        masking="token",
    ))

    c.data = ml_collections.ConfigDict(dict(
        dir="",          # output of `electra-jax prepare`
        seq_length=training["seq_length"],  # must equal the prepared data's
        worker_count=0,  # grain worker processes (0: read in the main process)
    ))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=training["batch_size"],  # global batch, over all processes
        # Micro-batches per update: the batch runs in this many slices whose gradients are summed
        # (the same update as the whole batch at once, in a slice's memory).
        grad_accum_steps=1,
        num_steps=training["num_steps"],
        learning_rate=training["learning_rate"],
        warmup_steps=training["warmup_steps"],
        schedule="reference",  # "reference": lr*(1-t/T)*min(1,t/W); "warmup_linear": optax warmup then decay
        weight_decay=0.01,
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-6,
        optimizer="adamw",  # "adamw" (the reference) or "lamb": AdamW with a per-tensor trust ratio (large batches)
        bias_correction=False,  # the reference's Adam has none
        # ELECTRA: the generator's learning rate as a multiple of learning_rate (a per-network rate;
        # shared embeddings follow the discriminator's). 1: the reference, one rate for both.
        generator_learning_rate_scale=1.0,
        decay_norm_and_bias=False,  # the reference does not decay LayerNorm and bias parameters
        grad_clip_norm=1.0,
        log_every=100,
        eval_every=5_000,
        eval_steps=20,
        checkpoint_every=10_000,
        keep_checkpoints=3,  # 0: keep every checkpoint
        nonfinite="skip",  # non-finite loss/gradients: "skip" the update (counted), or "stop" with a debug checkpoint
    ))

    if size == "tiny":  # minutes, not days: log, evaluate and checkpoint more often
        c.train.update(log_every=50, eval_every=500, checkpoint_every=500)

    # Mesh axes: -1 takes the devices left over. Logical axis rules map the model's annotations.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.axis_rules = (
        ("batch", ("data", "fsdp")),
        ("length", None),
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
    )
    apply_overrides(c, RECIPES[recipe].items())
    return c


def apply_overrides(config, overrides) -> None:
    """Set ("section.field", value) pairs, as `--config.section.field=value` would."""
    for name, value in overrides:
        *sections, field = name.split(".")
        node = config
        for section in sections:
            node = node[section]
        if field not in node:
            raise ConfigError(f"override {name}: the config has no such field")
        node[field] = value


def max_predictions(config) -> int:
    p = config.pretrain
    if p.max_predictions_per_seq:
        return p.max_predictions_per_seq
    return max(1, int((p.mask_prob + 0.005) * config.data.seq_length))


def generator_size(config) -> dict:
    """Generator width from the fraction; heads = max(1, width/64) and FFN = 4 * width, as the reference;
    the discriminator's depth unless generator_num_layers says otherwise."""
    m = config.model
    hidden = m.get("generator_hidden_size") or max(1, int(round(m.hidden_size * m.generator_fraction)))
    return dict(hidden_size=hidden, num_heads=m.get("generator_num_heads") or max(1, hidden // 64),
                intermediate_size=m.get("generator_intermediate_size") or 4 * hidden,
                num_layers=m.get("generator_num_layers") or m.num_layers)


def validate(config, *, vocab_size: int | None = None) -> None:
    """Raise ConfigError naming the first field that cannot work."""
    m, t, p = config.model, config.train, config.pretrain
    need(bool(config.data.dir), "data.dir is empty: point it at the output of `electra-jax prepare` "
         "(--config.data.dir=PATH)")
    need(config.objective in ("electra", "mlm"),
         f"objective={config.objective!r}: choose 'electra' or 'mlm'")
    need(m.hidden_size % m.num_heads == 0,
         f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    need(0 < m.generator_fraction <= 1,
         f"model.generator_fraction={m.generator_fraction} must lie in (0, 1]")
    need(min(m.num_layers, m.hidden_size, m.embedding_size, m.intermediate_size) > 0,
         "model.num_layers, hidden_size, embedding_size and intermediate_size must be positive")
    g = generator_size(config)
    need(g["hidden_size"] % g["num_heads"] == 0,
         f"generator width {g['hidden_size']} (hidden_size * generator_fraction) is not divisible by "
         f"its {g['num_heads']} heads")
    need(config.data.seq_length <= m.max_position_embeddings,
         f"data.seq_length={config.data.seq_length} exceeds model.max_position_embeddings="
         f"{m.max_position_embeddings}")
    need(config.data.seq_length >= 8, f"data.seq_length={config.data.seq_length} is too short (min 8)")
    need(m.get("attention_bias", "none") in ATTENTION_BIASES,
         f"model.attention_bias={m.get('attention_bias')!r}: choose one of {ATTENTION_BIASES}")
    need(m.get("position_init", "normal") in POSITION_INITS,
         f"model.position_init={m.get('position_init')!r}: choose one of {POSITION_INITS}")
    need(m.get("remat", "none") in REMAT_POLICIES,
         f"model.remat={m.get('remat')!r}: choose one of {REMAT_POLICIES}")
    need(m.embedding_sharing in EMBEDDING_SHARING,
         f"model.embedding_sharing={m.embedding_sharing!r}: choose one of {EMBEDDING_SHARING}")
    need(m.generator_num_layers >= 0,
         f"model.generator_num_layers={m.generator_num_layers} must be positive (0: the discriminator's depth)")
    need(0 < p.mask_prob < 1, f"pretrain.mask_prob={p.mask_prob} must lie in (0, 1)")
    need(p.temperature > 0 and p.temperature_start > 0,
         f"pretrain.temperature={p.temperature} and temperature_start={p.temperature_start} must be positive")
    need(p.temperature_schedule in TEMPERATURE_SCHEDULES,
         f"pretrain.temperature_schedule={p.temperature_schedule!r}: choose one of {TEMPERATURE_SCHEDULES}")
    need(p.get("masking", "token") in MASKING, f"pretrain.masking={p.get('masking')!r}: choose one of {MASKING}")
    need(0 <= p.shuffled_replacement_prob <= 1,
         f"pretrain.shuffled_replacement_prob={p.shuffled_replacement_prob} must lie in [0, 1]")
    need(p.temperature_steps >= 0 and p.discriminator_warmup_steps >= 0,
         "pretrain.temperature_steps and discriminator_warmup_steps must not be negative")
    need(0 < max_predictions(config) <= config.data.seq_length,
         f"pretrain.max_predictions_per_seq={max_predictions(config)} must lie in [1, data.seq_length]")
    need(m.dtype in ("float32", "bfloat16", "float16") and m.param_dtype in ("float32", "bfloat16"),
         f"model.dtype={m.dtype!r} / model.param_dtype={m.param_dtype!r}: use float32, bfloat16 or float16")
    need(m.get("attention_impl", "flax") in ("flax", "jax"),
         f"model.attention_impl={m.get('attention_impl')!r}: choose 'flax' or 'jax'")
    need(m.get("attention_impl", "flax") == "flax" or m.attention_dropout_rate == 0,
         f"model.attention_impl='jax' has no attention dropout; set model.attention_dropout_rate=0 "
         f"(it is {m.attention_dropout_rate})")
    for name in ("dropout_rate", "attention_dropout_rate"):
        need(0 <= m[name] < 1, f"model.{name}={m[name]} must lie in [0, 1)")
    need(t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps} must not be negative")
    need(t.keep_checkpoints >= 0, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 0 (0: keep all)")
    need(t.eval_steps > 0, f"train.eval_steps={t.eval_steps} must be positive")
    need(t.weight_decay >= 0 and t.grad_clip_norm >= 0,
         f"train.weight_decay={t.weight_decay} and grad_clip_norm={t.grad_clip_norm} must not be negative")
    need(p.discriminator_weight >= 0 and p.generator_weight >= 0,
         "pretrain.discriminator_weight and generator_weight must not be negative")
    need(t.generator_learning_rate_scale > 0,
         f"train.generator_learning_rate_scale={t.generator_learning_rate_scale} must be positive")
    need(t.batch_size > 0, f"train.batch_size={t.batch_size} must be positive")
    accum_steps = t.get("grad_accum_steps", 1)
    need(accum_steps >= 1 and t.batch_size % accum_steps == 0,
         f"train.grad_accum_steps={accum_steps} must be a positive divisor of train.batch_size={t.batch_size}")
    need(t.num_steps > 0, f"train.num_steps={t.num_steps} must be positive")
    need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be positive")
    need(t.get("optimizer", "adamw") in ("adamw", "lamb"),
         f"train.optimizer={t.get('optimizer')!r}: choose 'adamw' or 'lamb'")
    need(t.schedule in ("reference", "warmup_linear"),
         f"train.schedule={t.schedule!r}: choose 'reference' or 'warmup_linear'")
    need(t.nonfinite in ("skip", "stop"), f"train.nonfinite={t.nonfinite!r}: choose 'skip' or 'stop'")
    need(t.log_every > 0 and t.eval_every > 0 and t.checkpoint_every > 0,
         "train.log_every, eval_every and checkpoint_every must be positive")
    if vocab_size is not None:
        need(m.vocab_size in (0, vocab_size),
             f"model.vocab_size={m.vocab_size} does not match the tokenizer's vocabulary of {vocab_size}; "
             f"set model.vocab_size=0 to take it from the data")
