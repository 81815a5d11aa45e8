"""An independent NumPy forward pass of the BERT/ELECTRA encoder and heads (float64), written from
the paper's equations, to check the flax modules and the losses against."""
import math

import numpy as np


def layer_norm(x, p, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def embed(emb, ids, types):
    L = ids.shape[1]
    x = (emb["word_embeddings"]["embedding"][ids] + emb["position_embeddings"]["embedding"][:L][None]
         + emb["token_type_embeddings"]["embedding"][types])
    return layer_norm(x, emb["LayerNorm"])


def encoder(p, x, mask, num_heads):
    if "embeddings_project" in p:
        x = dense(x, p["embeddings_project"])
    B, L, H = x.shape
    d = H // num_heads
    for i in range(len([k for k in p if k.startswith("layer_")])):
        lp = p[f"layer_{i}"]
        a = lp["attention"]
        q, k, v = (dense(x, a[n]).reshape(B, L, num_heads, d) for n in ("query", "key", "value"))
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        scores = np.where(mask[:, None, None, :] > 0, scores, -1e30)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, L, H)
        x = layer_norm(x + dense(ctx, a["output"]), lp["attention_norm"])
        y = dense(gelu(dense(x, lp["intermediate"])), lp["output"])
        x = layer_norm(x + y, lp["output_norm"])
    return x


def discriminator_logits(params, ids, types, mask, num_heads):
    h = encoder(params["discriminator"], embed(params["embeddings"], ids, types), mask, num_heads)
    head = params["discriminator_head"]
    return dense(gelu(dense(h, head["dense"])), head["dense_prediction"])[..., 0]


def generator_logits(params, ids, types, mask, positions, num_heads):
    h = encoder(params["generator"], embed(params["embeddings"], ids, types), mask, num_heads)
    h = np.take_along_axis(h, positions[..., None], axis=1)
    head = params["generator_head"]
    h = layer_norm(gelu(dense(h, head["dense"])), head["LayerNorm"])
    return h @ params["embeddings"]["word_embeddings"]["embedding"].T + head["output_bias"]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def sigmoid_bce(logits, labels):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
