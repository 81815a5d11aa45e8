"""Task heads on the pretrained discriminator's encoder. Parameters {embeddings, encoder, head}:
the first two load from a pretraining checkpoint, an export or a HuggingFace directory."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.model import ElectraEncoderModel, dense_layer


class TaskHead(nn.Module):
    """Dropout + one linear layer, as the reference: on the [CLS] vector for sentence(-pair) tasks,
    on every token for tagging and span extraction (2 outputs: start and end logits)."""
    cfg: object
    kind: str
    num_outputs: int

    @nn.compact
    def __call__(self, hidden, deterministic: bool):
        x = hidden[:, 0] if self.kind in ("classification", "regression") else hidden
        x = nn.Dropout(self.cfg.dropout_rate)(x, deterministic=deterministic)
        logits = dense_layer(self.cfg, self.num_outputs, ("embed", None), "output")(x).astype(jnp.float32)
        return logits[..., 0] if self.kind == "regression" else logits


class FinetuneModel(ElectraEncoderModel):
    kind: str = "classification"
    num_outputs: int = 2

    def setup(self):
        super().setup()
        self.head = TaskHead(self.cfg, self.kind, self.num_outputs)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        return self.head(self.hidden_states(input_ids, attention_mask, token_type_ids, deterministic), deterministic)
