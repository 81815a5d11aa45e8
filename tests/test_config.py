import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from electra_jax.config import ConfigError, default_config, generator_size, max_predictions, validate
from jax.sharding import AbstractMesh

from electra_jax.sharding import MESH_AXES, check_batch_size, mesh_shape

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load(name, *overrides):
    fv = flags.FlagValues()
    argv = ["prog", f"--config={CONFIGS / name}", *overrides]
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


def test_config_files_hold_the_paper_values():
    small, base, large = (load(f"electra_{s}.py", "--config.data.dir=/d") for s in ("small", "base", "large"))
    assert (small.model.hidden_size, small.model.num_layers, small.model.embedding_size) == (256, 12, 128)
    assert (small.train.learning_rate, small.train.batch_size, small.data.seq_length) == (5e-4, 128, 128)
    assert generator_size(small) == dict(hidden_size=64, num_heads=1, intermediate_size=256, num_layers=12)
    assert max_predictions(small) == 19
    assert generator_size(base) == dict(hidden_size=256, num_heads=4, intermediate_size=1024, num_layers=12)
    assert (base.train.learning_rate, base.train.batch_size, base.train.num_steps) == (2e-4, 256, 766_000)
    assert (large.pretrain.mask_prob, large.train.batch_size, large.model.num_heads) == (0.25, 2048, 16)
    for c in (small, base, large):
        assert c.train.adam_eps == 1e-6 and c.train.weight_decay == 0.01 and c.train.warmup_steps == 10_000
        assert c.pretrain.discriminator_weight == 50.0 and c.train.grad_clip_norm == 1.0
        validate(c, vocab_size=30522)


def test_tiny_config_uses_the_small_budget_recipe_and_paper_sizes_the_reference():
    tiny = load("electra_tiny.py")
    assert (tiny.train.bias_correction, tiny.train.learning_rate, tiny.train.generator_learning_rate_scale,
            tiny.pretrain.mask_prob, tiny.model.dropout_rate, tiny.model.attention_dropout_rate,
            tiny.model.attention_bias) == (True, 1e-3, 0.3, 0.2, 0, 0, "none")
    assert (tiny.model.embedding_sharing, tiny.model.generator_num_layers, tiny.pretrain.discriminator_weight) == \
        ("none", 1, 100.0)
    # the variant after the file name picks the recipe; "tiny" alone means the size
    assert load("electra_tiny.py:reference").to_dict() == default_config("tiny").to_dict()
    assert tiny.to_dict() == default_config("tiny", "small_budget").to_dict()
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; choose one of \\['reference', 'small_budget'\\]"):
        default_config("tiny", "fast")
    for size in ("small", "base", "large"):
        c = load(f"electra_{size}.py")
        assert (c.train.bias_correction, c.model.embedding_sharing, c.pretrain.temperature_schedule) == \
            (False, "tied", "constant")
        assert (c.train.generator_learning_rate_scale, c.pretrain.shuffled_replacement_prob, c.model.dropout_rate,
                c.model.attention_bias) == (1.0, 0.0, 0.1, "none")


def test_command_line_overrides():
    c = load("electra_tiny.py", "--config.train.batch_size=64", "--config.objective=mlm",
             "--config.model.generator_fraction=1.0")
    assert c.train.batch_size == 64 and c.objective == "mlm" and c.model.generator_fraction == 1.0


@pytest.mark.parametrize("field,value,message", [
    ("model.num_heads", 3, "hidden_size=128 is not divisible by model.num_heads=3"),
    ("data.seq_length", 1024, "exceeds model.max_position_embeddings=512"),
    ("model.generator_fraction", 0.0, r"generator_fraction=0.0 must lie in \(0, 1\]"),
    ("model.generator_fraction", 1.5, r"generator_fraction=1.5 must lie in \(0, 1\]"),
    ("model.attention_impl", "jax", "has no attention dropout; set model.attention_dropout_rate=0"),
    ("model.attention_impl", "cudnn", "choose .flax. or .jax."),
    ("objective", "bert", "objective='bert'"),
    ("pretrain.masking", "span", r"pretrain.masking='span': choose one of \('token', 'whole_word'\)"),
    ("model.remat", "all", "model.remat='all': choose one of"),
    ("train.grad_accum_steps", 0, "train.grad_accum_steps=0 must be a positive divisor of train.batch_size"),
    ("model.embedding_sharing", "shared", "embedding_sharing='shared'"),
    ("model.attention_bias", "rope", r"attention_bias='rope': choose one of \('none', 'alibi'\)"),
    ("model.position_init", "sinusoidal", r"position_init='sinusoidal': choose one of \('normal', 'zeros'\)"),
    ("pretrain.temperature_schedule", "exp", "temperature_schedule='exp'"),
    ("pretrain.temperature_start", 0.0, "temperature_start=0.0 must be positive"),
    ("pretrain.discriminator_warmup_steps", -1, "must not be negative"),
    ("pretrain.shuffled_replacement_prob", 1.5, r"shuffled_replacement_prob=1.5 must lie in \[0, 1\]"),
    ("train.generator_learning_rate_scale", 0.0, "generator_learning_rate_scale=0.0 must be positive"),
    ("model.dropout_rate", 2.0, r"model.dropout_rate=2.0 must lie in \[0, 1\)"),
    ("train.warmup_steps", -5, "train.warmup_steps=-5 must not be negative"),
    ("train.keep_checkpoints", -1, "train.keep_checkpoints=-1 must be >= 0"),
    ("model.vocab_size", 999, "vocab_size=999 does not match the tokenizer's vocabulary of 1000"),
    ("data.dir", "", "data.dir is empty"),
    ("pretrain.mask_prob", 1.2, "mask_prob=1.2"),
])
def test_validation_names_the_field(field, value, message):
    c = default_config("tiny")
    c.data.dir = "/d"
    section, _, key = field.rpartition(".")
    (c[section] if section else c)[key] = value
    with pytest.raises(ConfigError, match=message):
        validate(c, vocab_size=1000)


def test_mesh_must_fit_the_devices():
    mesh = default_config("tiny").mesh
    assert mesh_shape(mesh, 8) == (8, 1, 1)
    mesh.update(data=2, fsdp=-1, tensor=2)
    assert mesh_shape(mesh, 8) == (2, 2, 2)
    mesh.update(data=4)
    with pytest.raises(ConfigError, match="do not divide the 6 devices"):
        mesh_shape(mesh, 6)
    mesh.update(data=2, fsdp=2, tensor=1)
    with pytest.raises(ConfigError, match="has 4 devices but 8 are available"):
        mesh_shape(mesh, 8)


def test_one_batch_rule_counts_only_the_data_parallel_devices():
    """Tensor-parallel devices share one batch: batch 2 on data=1 x tensor=4 is valid; the rule
    lives in one place (sharding.check_batch_size), not also in validate()."""
    tensor_parallel = AbstractMesh((1, 1, 4), MESH_AXES)
    check_batch_size("train.batch_size", 2, tensor_parallel)
    c = default_config("tiny")
    c.data.dir = "/d"
    c.train.batch_size = 2
    c.mesh.update(data=1, tensor=4)
    validate(c, vocab_size=1000)
    with pytest.raises(ConfigError, match=r"train.batch_size=6 must be a positive multiple of the data-parallel "
                                          r"size 4 \(mesh.data x mesh.fsdp\)"):
        check_batch_size("train.batch_size", 6, AbstractMesh((2, 2, 2), MESH_AXES))
