"""The GLUE-scored compute-matched study and the recipe search on the 2-core CPU machine: ELECTRA
vs masked-LM pretraining of the same tiny encoder (2 layers, hidden 128) on WikiText-2 and a few
Gutenberg books for equal FLOPs, fine-tuned on SST-2, CoLA, MRPC and STS-B with 3 seeds each,
beside the same encoder with random weights, and probed frozen. configs/study/blimp_cpu.py is the
study that scores what such small models learn (zero-shot minimal pairs, few labels).

    electra-jax study --config configs/study/small_cpu.py --workdir runs/study
    electra-jax search --config configs/study/small_cpu.py --workdir runs/search

Paths are relative to the repository root (../shared/data beside it).
"""
import ml_collections

from electra_jax.config import RECIPES

SMALL_BUDGET = tuple(RECIPES["small_budget"].items())
ADAM_1E3_NO_DROPOUT = (("train.bias_correction", True), ("train.learning_rate", 1e-3),
                       ("model.dropout_rate", 0.0), ("model.attention_dropout_rate", 0.0))
ALIBI = (("model.attention_bias", "alibi"), ("model.position_init", "zeros"))


def get_config():
    c = ml_collections.ConfigDict()
    c.corpus = ("../shared/data/pretrain/wikitext-2-raw", "../shared/data/pretrain/gutenberg_nltk_tokenized")
    c.glue_dir = "../shared/data/glue"
    c.vocab_size = 8000
    c.seq_length = 128
    c.size = "tiny"
    c.model = ml_collections.ConfigDict(dict(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512,
                                             embedding_size=128))
    c.train = ml_collections.ConfigDict(dict(batch_size=32, learning_rate=1e-3, log_every=100))
    c.warmup_fraction = 0.05
    c.pretrain_flops = 6e13     # per objective
    c.budgets = 1               # checkpoints fine-tuned: 1 = the whole budget only
    c.tasks = ("sst2", "cola", "mrpc", "stsb")
    c.seeds = 3
    # a logistic regression on each encoder's frozen features ('' for none): what pretraining left
    # in the encoder before fine-tuning moves it
    c.probe_task = "sst2"
    # Each objective's recipe: (field, value) overrides of the reference defaults.
    c.recipe = ml_collections.ConfigDict(dict(electra=SMALL_BUDGET, mlm=ADAM_1E3_NO_DROPOUT))
    # The recipe search: one short run per candidate at 1/6 of the study's budget, on the same data
    # and model, ranked on held-out pretraining signals (never on dev scores). Each candidate is
    # named by what it changes; WORKDIR/search.json keeps every measured row with its overrides.
    c.search = ml_collections.ConfigDict(dict(flops=1e13, candidates=(
        ("reference", "electra", ()),
        ("small_budget", "electra", SMALL_BUDGET),
        ("small_budget_alibi", "electra", SMALL_BUDGET + ALIBI),
        ("small_budget_gdes", "electra", SMALL_BUDGET + (("model.embedding_sharing", "gdes"),)),
        ("small_budget_temperature_curriculum", "electra", SMALL_BUDGET + (
            ("pretrain.temperature_schedule", "cosine"), ("pretrain.temperature_start", 3.0))),
        ("mlm_reference", "mlm", ()),
        ("mlm_adam_1e-3_no_dropout", "mlm", ADAM_1E3_NO_DROPOUT),
        ("mlm_adam_1e-3_no_dropout_alibi_zero_positions", "mlm", ADAM_1E3_NO_DROPOUT + ALIBI),
    )))
    c.seed = 0
    # 3 epochs for every task (STS-B too) and at most 6000 training examples keep the 84 fine-tuning
    # runs (7 encoders x 4 tasks x 3 seeds) near an hour; dev sets are scored whole.
    c.finetune = ml_collections.ConfigDict(dict(max_seq_length=64, batch_size=32, epochs=3,
                                                max_train_examples=6000, max_eval_examples=0))
    return c
