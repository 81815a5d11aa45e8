"""The PyTorch reference for `electra-jax bench step --reference`: the same ELECTRA joint step
written with transformers (ElectraForMaskedLM generator + ElectraForPreTraining discriminator
sharing one embedding block), with the same masking (85% [MASK], 15% kept), the generator head
only at the masked positions, float32 Gumbel-max sampling without gradient, loss = generator +
50 x discriminator, AdamW and gradient clipping. Needs the `bench` extra (torch, transformers).
"""
from __future__ import annotations

import os
import statistics
import time

from electra_jax.bench import SPECIAL_IDS, synthetic_batch
from electra_jax.config import max_predictions
from electra_jax.model import model_configs


def _hf_config(transformers, cfg, dropout: float):
    return transformers.ElectraConfig(
        vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, layer_norm_eps=cfg.layer_norm_eps)


def build(config, vocab_size: int):
    import torch
    import transformers
    disc_cfg, gen_cfg = model_configs(config, vocab_size)
    dropout = config.model.dropout_rate
    disc = transformers.ElectraForPreTraining(_hf_config(transformers, disc_cfg, dropout))
    gen = transformers.ElectraForMaskedLM(_hf_config(transformers, gen_cfg, dropout))
    gen.electra.embeddings = disc.electra.embeddings  # one shared embedding block
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    params = list({id(p): p for p in list(disc.parameters()) + list(gen.parameters())}.values())
    optimizer = torch.optim.AdamW(params, lr=config.train.learning_rate, eps=config.train.adam_eps,
                                  weight_decay=config.train.weight_decay)
    return disc, gen, params, optimizer


def joint_step(disc, gen, params, optimizer, batch, config, max_predictions: int):
    import torch
    import torch.nn.functional as F
    ids, attn, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    special = (ids == SPECIAL_IDS["cls"]) | (ids == SPECIAL_IDS["sep"]) | (ids == SPECIAL_IDS["mask"])
    candidates = attn.bool() & ~special
    count = torch.clamp(torch.round(attn.sum(-1) * config.pretrain.mask_prob), 1, max_predictions).long()
    priority = torch.where(candidates, torch.rand(ids.shape), torch.full(ids.shape, -1.0))
    positions = priority.topk(max_predictions, dim=-1).indices
    weights = (torch.arange(max_predictions)[None] < count[:, None]).float()
    labels = ids.gather(1, positions)
    use_mask = (torch.rand(positions.shape) < 0.85) & (weights > 0)
    masked = ids.clone().scatter_(1, positions, torch.where(use_mask, SPECIAL_IDS["mask"], labels))

    hidden = gen.electra(masked, attention_mask=attn, token_type_ids=types).last_hidden_state
    picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    logits = gen.generator_lm_head(gen.generator_predictions(picked))
    gen_loss = (F.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * weights).sum() / weights.sum()
    with torch.no_grad():
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape).clamp_min(1e-9)))
        sampled = (logits.float() / config.pretrain.temperature + gumbel).argmax(-1)
        sampled = torch.where(weights > 0, sampled, labels)
        corrupted = ids.clone().scatter_(1, positions, sampled)
        replaced = ((corrupted != ids) & attn.bool()).float()
    disc_logits = disc(corrupted, attention_mask=attn, token_type_ids=types).logits
    disc_loss = (F.binary_cross_entropy_with_logits(disc_logits, replaced, reduction="none") * attn).sum() / attn.sum()
    loss = gen_loss + config.pretrain.discriminator_weight * disc_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip_norm)
    optimizer.step()
    return float(loss.detach())


def bench_reference(config, vocab_size: int, steps: int = 10, warmup: int = 2, threads: int | None = None) -> dict:
    import torch
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    disc, gen, params, optimizer = build(config, vocab_size)
    disc.train(), gen.train()
    batch = {k: torch.from_numpy(v).long() for k, v in
             synthetic_batch(config.train.batch_size, config.data.seq_length, vocab_size).items()}
    for _ in range(warmup):
        joint_step(disc, gen, params, optimizer, batch, config, max_predictions(config))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = joint_step(disc, gen, params, optimizer, batch, config, max_predictions(config))
        times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times)
    return dict(step_seconds=step_seconds,
                tokens_per_second=config.train.batch_size * config.data.seq_length / step_seconds,
                threads=torch.get_num_threads(), torch=torch.__version__, loss=loss)
