"""The PyTorch references of `electra-jax bench step --reference` and `bench finetune --reference`.

The pretraining step: the same ELECTRA joint step
written with transformers (ElectraForMaskedLM generator + ElectraForPreTraining discriminator
sharing one embedding block), with the same masking (85% [MASK], 15% kept), the generator head
only at the masked positions, float32 sampling without gradient (torch.multinomial: one draw per position), loss = generator +
50 x discriminator, AdamW and gradient clipping. The fine-tuning step and the batched forward
at the discriminator's size (bench_task_reference). Fine-tuning: the checkpoint loaded by transformers,
trained on the Finetuner's own arrays (finetune_reference). Needs the `bench` extra (torch,
transformers).
"""
from __future__ import annotations

import os
import time

from electra_jax.bench import synthetic_task_batch
from electra_jax.step_bench import SPECIAL_IDS, median_seconds, synthetic_batch
from electra_jax.config import max_predictions
from electra_jax.finetune.features import IGNORE
from electra_jax.finetune.run import INPUTS, PADDING_LOGIT, batch_length, cut_rows, epoch_batches
from electra_jax.hf import require_bert_attention
from electra_jax.model import model_configs


def _hf_config(transformers, cfg, dropout: float):
    require_bert_attention(cfg.attention_bias)  # else the reference would time another model
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
    with torch.no_grad():  # one draw per position from the tempered softmax, as electra-jax samples
        probs = torch.softmax(logits.float() / config.pretrain.temperature, -1)
        sampled = torch.multinomial(probs.flatten(0, 1), 1).view(positions.shape)
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
    losses = []
    step = lambda: losses.append(joint_step(disc, gen, params, optimizer, batch, config, max_predictions(config)))
    step_seconds = median_seconds(step, steps, warmup)
    loss = losses[-1]
    return dict(step_seconds=step_seconds,
                tokens_per_second=config.train.batch_size * config.data.seq_length / step_seconds,
                threads=torch.get_num_threads(), torch=torch.__version__, loss=loss)


def _pretrained_task_model(torch, transformers, init: str, kind: str, num_outputs: int, dropout: float):
    """The checkpoint's encoder (transformers' AutoModel) under the head electra-jax puts on it."""
    config = transformers.AutoConfig.from_pretrained(init, hidden_dropout_prob=dropout,
                                                     attention_probs_dropout_prob=dropout)
    extra = dict(add_pooling_layer=False) if config.model_type == "bert" else {}
    return _task_model(torch, transformers.AutoModel.from_pretrained(init, config=config, **extra), config, kind,
                       num_outputs, dropout)


def _task_model(torch, encoder, config, kind: str, num_outputs: int, dropout: float):
    """`encoder` under electra-jax's task head: dropout + one linear layer on the [CLS] vector
    (sentence tasks) or on every token (tagging, spans), initialised as transformers initialises
    linear layers."""

    class TaskModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.dropout = encoder, torch.nn.Dropout(dropout)
            self.output = torch.nn.Linear(config.hidden_size, num_outputs)
            torch.nn.init.normal_(self.output.weight, std=config.initializer_range)
            torch.nn.init.zeros_(self.output.bias)

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            logits = self.output(self.dropout(hidden[:, 0] if kind in ("classification", "regression") else hidden))
            return logits[..., 0] if kind == "regression" else logits

    return TaskModel()


def _task_loss(F, kind: str, outputs, batch):
    """The loss electra-jax's finetune.run.task_loss computes, in torch."""
    if kind == "classification":
        return F.cross_entropy(outputs, batch["labels"])
    if kind == "regression":
        return F.mse_loss(outputs, batch["labels"].float())
    if kind == "tagging":
        return F.cross_entropy(outputs.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)
    outputs = outputs.masked_fill(batch["attention_mask"][..., None] == 0, PADDING_LOGIT)
    return (F.cross_entropy(outputs[..., 0], batch["start_positions"])
            + F.cross_entropy(outputs[..., 1], batch["end_positions"])) / 2


def finetune_reference(finetuner, seeds: list[int]) -> list[dict]:
    """Fine-tune the same HuggingFace checkpoint with transformers + torch: the Finetuner's own
    tokenized arrays, batch order and batch lengths, its head, loss, learning rate, epochs and warmup, AdamW
    (bias-corrected; no weight decay on biases and LayerNorms), gradient clipping; each epoch scored
    by the task's own evaluation. One dict per seed, shaped like Finetuner.run_seed's."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    config, task, t = finetuner.config, finetuner.task, finetuner.config.train
    torch.set_num_threads(os.cpu_count() or 1)
    _, train_arrays, _ = finetuner.splits["train"]
    train_arrays = {k: np.asarray(v) for k, v in train_arrays.items()}
    as_tensor = lambda v: torch.from_numpy(np.asarray(v, np.int64) if np.issubdtype(v.dtype, np.integer) else v)
    total = finetuner.steps_per_epoch * finetuner.epochs
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = _pretrained_task_model(torch, transformers, config.init, task.kind, task.num_outputs,
                                       config.model.dropout_rate)
        groups = {t.weight_decay: [], 0.0: []}  # no weight decay on biases and LayerNorms, as optim.decay_mask
        for name, p in model.named_parameters():
            groups[0.0 if name.endswith("bias") or "LayerNorm" in name else t.weight_decay].append(p)
        optimizer = torch.optim.AdamW([dict(params=ps, weight_decay=wd) for wd, ps in groups.items()],
                                      lr=finetuner.learning_rate,
                                      betas=(t.adam_b1, t.adam_b2), eps=t.adam_eps)
        schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(t.warmup_fraction * total), total)
        history, train_seconds = [], 0.0
        for epoch in range(1, finetuner.epochs + 1):
            model.train()
            start = time.perf_counter()
            for rows in epoch_batches(len(train_arrays["input_ids"]), t.batch_size, seed, epoch):
                # the same cut of the padding as electra-jax's (transformers' dynamic padding, bucketed)
                length = batch_length(train_arrays, rows, t.length_bucket)
                batch = {k: as_tensor(v) for k, v in cut_rows(train_arrays, rows, length).items()}
                loss = _task_loss(F, task.kind, model(*(batch[k] for k in INPUTS)), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip_norm)
                optimizer.step()
                schedule.step()
            train_seconds += time.perf_counter() - start
            examples, dev_arrays, aux = finetuner.splits["dev"]
            model.eval()
            with torch.no_grad():
                outputs = np.concatenate([
                    model(*(as_tensor(np.asarray(dev_arrays[k][i:i + t.eval_batch_size])) for k in INPUTS)).numpy()
                    for i in range(0, len(dev_arrays["input_ids"]), t.eval_batch_size)])
            history.append(dict(epoch=epoch, dev=task.evaluate(examples, aux, outputs)))
        best = max(history, key=lambda e: e["dev"][task.main_metric])  # the first best, as Finetuner keeps
        runs.append(dict(seed=seed, best_epoch=best["epoch"], dev=best["dev"], final_dev=history[-1]["dev"],
                         train_seconds=train_seconds, train_examples=total * t.batch_size))
    return runs


def bench_task_reference(config, vocab_size: int, steps: int = 10, warmup: int = 2) -> dict:
    """transformers' ElectraModel at the discriminator's size under electra-jax's 2-class head:
    the fine-tuning train step (AdamW, clipping) and the batched forward in inference mode, on the
    synthetic batch bench.bench_task_steps uses. Seconds per batch, median."""
    import torch
    import torch.nn.functional as F
    import transformers
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    disc_cfg, _ = model_configs(config, vocab_size)
    hf_config = _hf_config(transformers, disc_cfg, config.model.dropout_rate)
    model = _task_model(torch, transformers.ElectraModel(hf_config), hf_config, "classification", 2,
                        config.model.dropout_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=config.train.adam_eps)
    arrays = synthetic_task_batch(config.train.batch_size, config.data.seq_length, vocab_size)
    inputs = [torch.from_numpy(arrays[k]).long() for k in INPUTS]
    labels = torch.from_numpy(arrays["labels"]).long()

    def train_step():
        loss = F.cross_entropy(model(*inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip_norm)
        optimizer.step()

    def forward():
        with torch.inference_mode():
            model(*inputs)

    model.train()
    train = median_seconds(train_step, steps, warmup)
    model.eval()
    return dict(finetune_step_seconds=train, inference_seconds=median_seconds(forward, steps, warmup),
                threads=torch.get_num_threads())

