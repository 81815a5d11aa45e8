"""Loading a trained network (our export or a HuggingFace directory) and running it:
fill-mask with the generator, replaced-token detection with the discriminator, and conversion
between the two checkpoint formats."""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from electra_jax import hf
from electra_jax.export import EXPORT_FORMAT, pretrained_networks, write_export
from electra_jax.data.corpus import DataError, read_json_file
from electra_jax.data.tokenizer import BaseTokenizer, load_tokenizer
from electra_jax.model import ElectraDiscriminator, ElectraGenerator, ModelConfig
from electra_jax.train import load_run_config

# The masked-LM baseline's "encoder" network has a generator's shape: encoder + masked-LM head.
MODULES = {"discriminator": ElectraDiscriminator, "generator": ElectraGenerator, "encoder": ElectraGenerator}
HF_HEAD = {"discriminator": "discriminator", "generator": "generator", "encoder": "generator"}


def _available_part(ckpt: str, part: str, parts) -> str:
    """`part`, or for a masked LM ("generator") the masked-LM baseline's "encoder" (also a masked LM)."""
    if part in parts:
        return part
    if part == "generator" and "encoder" in parts:
        return "encoder"
    raise DataError(f"{ckpt} holds {sorted(parts)}, not a {part}")


def network_parts(ckpt: str) -> list[str]:
    """The networks `load_network` can give for `ckpt`: "discriminator" and/or "generator" (a
    masked-LM baseline's encoder, a BERT masked LM and ELECTRA's generator all count as generators)."""
    if os.path.isdir(os.path.join(ckpt, "checkpoints")):
        return ["discriminator", "generator"] if load_run_config(ckpt).objective == "electra" else ["generator"]
    config_file = os.path.join(ckpt, "config.json")
    if os.path.isfile(config_file) and read_json_file(config_file).get("format") == EXPORT_FORMAT:
        parts = read_json_file(config_file)["parts"]
    elif os.path.isfile(config_file):
        _, arch, _ = hf.read_config(ckpt)
        parts = [hf.HEAD_OF_ARCHITECTURE.get(arch, "encoder")]
    else:  # a HuggingFace conversion's OUT/{discriminator,generator}
        parts = [p for p in ("discriminator", "generator") if os.path.isfile(os.path.join(ckpt, p, "config.json"))]
    return sorted({"encoder": "generator"}.get(p, p) for p in parts if p in MODULES)


def load_network(ckpt: str, part: str):
    """(module, params, tokenizer) for `part` ("discriminator" or "generator") of an electra-jax
    export, a pretraining workdir (its newest checkpoint), or a HuggingFace directory (the directory
    itself, or its PART/ subfolder)."""
    if os.path.isdir(os.path.join(ckpt, "checkpoints")):
        networks, tokenizer, _ = pretrained_networks(ckpt)
        part = _available_part(ckpt, part, networks)
        cfg, params = networks[part]
        return MODULES[part](cfg), jax.tree.map(np.asarray, params), tokenizer
    config_file = os.path.join(ckpt, "config.json")
    if not os.path.isfile(config_file) and not os.path.isfile(os.path.join(ckpt, part, "config.json")):
        raise FileNotFoundError(f"{ckpt} has no config.json (nor {part}/config.json): not an export, a pretraining "
                                f"workdir or a HuggingFace directory")
    info = read_json_file(config_file) if os.path.isfile(config_file) else {}
    if info.get("format") == EXPORT_FORMAT:
        part = _available_part(ckpt, part, info["parts"])
        module = MODULES[part](ModelConfig(**info["networks"][part]))
        try:
            params = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(ckpt, part)))
        except Exception as e:  # Orbax/TensorStore report damage in many types; the user needs one line
            raise DataError(f"{os.path.join(ckpt, part)} cannot be read ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120]}); the export is damaged or incomplete: export it "
                            f"again") from None
        tokenizer = load_tokenizer(os.path.join(ckpt, info["tokenizer"]), info.get("tokenizer_lowercase"))
        return module, jax.tree.map(np.asarray, params), tokenizer
    directory = os.path.join(ckpt, part) if os.path.isfile(os.path.join(ckpt, part, "config.json")) else ckpt
    module, params = hf.load(directory, head=HF_HEAD[part])
    return module, params, load_tokenizer(directory)


def _batch(tokenizer: BaseTokenizer, token_lists: list[list[int]], max_length: int):
    """[CLS] tokens [SEP], padded; a text longer than the model's positions is cut, with a notice."""
    cls, sep = tokenizer.special_ids["cls"], tokenizer.special_ids["sep"]
    for i, tokens in enumerate(token_lists):
        if len(tokens) > max_length - 2:
            logging.warning("text %d has %d tokens; the model reads the first %d (its positions end there)", i + 1,
                            len(tokens), max_length - 2)
    rows = [[cls] + t[:max_length - 2] + [sep] for t in token_lists]
    lengths = np.array([len(r) for r in rows])
    ids = np.zeros((len(rows), lengths.max()), np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int32)


def fill_mask(module, params, tokenizer: BaseTokenizer, texts: list[str], top_k: int = 5) -> list[list[dict]]:
    """For each text, each [MASK]: the top_k tokens with their probabilities."""
    if top_k < 1:
        raise DataError(f"top_k={top_k}: ask for at least 1 candidate")
    token_lists = [tokenizer.encode_with_masks(t) for t in texts]
    limit = module.cfg.max_position_embeddings - 2
    for i, tokens in enumerate(token_lists):
        beyond = [p for p, t in enumerate(tokens) if t == tokenizer.special_ids["mask"] and p >= limit]
        if beyond:
            raise DataError(f"text {i + 1}: a [MASK] at token {beyond[0] + 1}, beyond the model's {limit} "
                            f"positions; shorten the text before it")
    ids, mask = _batch(tokenizer, token_lists, module.cfg.max_position_embeddings)
    logits = module.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
    results = []
    for row, p in zip(ids, probs):
        slots = []
        for pos in np.flatnonzero(row == tokenizer.special_ids["mask"]):
            best = np.argsort(-p[pos])[:top_k]
            slots.append(dict(position=int(pos), candidates=[dict(token=tokenizer.id_to_piece(i), id=int(i),
                                                                   probability=float(p[pos, i])) for i in best]))
        results.append(slots)
    return results


def detect(module, params, tokenizer: BaseTokenizer, texts: list[str]) -> list[list[dict]]:
    """For each text, each token: the discriminator's probability that it was replaced."""
    token_lists = tokenizer.encode(texts)
    ids, mask = _batch(tokenizer, token_lists, module.cfg.max_position_embeddings)
    logits = module.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    probs = np.asarray(jax.nn.sigmoid(logits.astype(jnp.float32)))
    return [[dict(token=tokenizer.id_to_piece(t), id=int(t), replaced_probability=float(p))
             for t, p in zip(row[1:int(m.sum()) - 1], prow[1:int(m.sum()) - 1])]
            for row, prow, m in zip(ids, probs, mask)]


def from_hf(discriminator: str, generator: str | None, out: str) -> dict:
    """HuggingFace discriminator (and generator) directories -> an electra-jax export."""
    networks, tokenizer = {}, load_tokenizer(discriminator)
    for part, path in (("discriminator", discriminator), ("generator", generator)):
        if path:
            module, params = hf.load(path, head=HF_HEAD[part])
            networks[part] = (module.cfg, params)
    return write_export(out, networks, tokenizer, objective="electra", source=os.path.abspath(discriminator))


def to_hf(ckpt: str, out: str) -> list[str]:
    """An electra-jax export -> OUT/discriminator and OUT/generator in HuggingFace format."""
    info = read_json_file(os.path.join(ckpt, "config.json"))
    written = []
    for part in info["parts"]:
        if part not in MODULES:
            continue
        module, params, tokenizer = load_network(ckpt, part)
        hf.save(module, params, os.path.join(out, part), tokenizer=tokenizer)
        written.append(os.path.join(out, part))
    return written
