"""Model FLOPs of a training step, and the nominal peaks of accelerators (for MFU in the logs).

FLOPs count the matmuls of the forward pass (2 per multiply-add) and take training as 3x forward
(the backward pass costs two forward passes). Per token and layer of an encoder with hidden H,
feed-forward F and sequence S: 8H^2 (Q, K, V, output projections) + 4HF (feed-forward) + 4SH
(attention scores and the weighted sum). Plus 2EH per token for the embedding projection when
E != H. ELECTRA adds the discriminator head (2H^2 + 2H per token) and the generator (an encoder of
its own width) whose masked-LM head runs only at the P masked positions: 2hE + 2EV per position.
Embedding lookups, LayerNorms, softmax and GELU are not counted (they are not matmuls).
"""
from __future__ import annotations

from electra_jax.config import max_predictions
from electra_jax.model import ModelConfig, model_configs

# Dense bf16 matmul peaks of accelerators by device_kind (vendor datasheets), for MFU on real hardware.
NOMINAL_PEAK_FLOPS = {
    "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "RTX 4090": 165e12,
    "V100": 125e12,
}
# What float32 matmuls run at where it differs from the bf16 peak: TF32 tensor cores (A100 and
# later, XLA's default for float32 dots on them), CUDA cores on V100. TPUs run float32 dots at
# JAX's default precision as one bf16 pass: the bf16 peak.
NOMINAL_FLOAT32_PEAK_FLOPS = {
    "H100": 495e12, "H200": 495e12, "A100": 156e12, "L4": 60e12, "A10G": 62.5e12, "RTX 4090": 82.6e12,
    "V100": 15.7e12,
}


def encoder_flops_per_token(cfg: ModelConfig, seq_length: int) -> float:
    h, f = cfg.hidden_size, cfg.intermediate_size
    per_layer = 8 * h * h + 4 * h * f + 4 * seq_length * h
    projection = 2 * cfg.embedding_size * h if cfg.embedding_size != h else 0
    return cfg.num_layers * per_layer + projection


def masked_lm_head_flops(cfg: ModelConfig) -> float:
    """Per masked position: dense(hidden -> E) and the tied vocabulary projection."""
    return 2 * cfg.hidden_size * cfg.embedding_size + 2 * cfg.embedding_size * cfg.vocab_size


def train_flops_per_step(config, vocab_size: int) -> dict:
    """Model FLOPs of one training step (forward + backward) of config, by part."""
    disc, gen = model_configs(config, vocab_size)
    batch, seq, positions = config.train.batch_size, config.data.seq_length, max_predictions(config)
    tokens = batch * seq
    parts = {"discriminator": tokens * encoder_flops_per_token(disc, seq)}
    if config.objective == "electra":
        parts["discriminator"] += tokens * (2 * disc.hidden_size ** 2 + 2 * disc.hidden_size)
        parts["generator"] = tokens * encoder_flops_per_token(gen, seq) + batch * positions * masked_lm_head_flops(gen)
    else:
        parts["masked_lm_head"] = batch * positions * masked_lm_head_flops(disc)
    parts = {k: 3.0 * v for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def nominal_peak(device, dtype: str = "bfloat16") -> float | None:
    """The datasheet matmul peak of a device for a compute dtype; None for CPUs and unknown devices."""
    kind = getattr(device, "device_kind", "").lower()
    bf16 = next((v for k, v in NOMINAL_PEAK_FLOPS.items() if k.lower() in kind), None)
    if bf16 is None or dtype != "float32":
        return bf16
    return next((v for k, v in NOMINAL_FLOAT32_PEAK_FLOPS.items() if k.lower() in kind), bf16)
