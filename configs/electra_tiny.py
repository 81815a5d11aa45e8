"""ELECTRA-Tiny: 2 layers, hidden 128, for CPU runs and tests (trains in minutes), with the
small-budget recipe (SMALL_BUDGET_RECIPE: Adam with bias correction at 1e-3 for the
discriminator and 3e-4 for the generator, no dropout, ALiBi attention biases, a position table
that starts at zero, untied embeddings, a one-layer generator, the discriminator's loss weighted
100, 20% of the tokens masked), which the recipe search chose at this scale (docs/study.md). ALiBi
models do not export to HuggingFace; add --config.model.attention_bias=none for one that must.

Values live in electra_jax/config.py (MODEL_SIZES, TRAINING_BY_SIZE); override any field on the
command line, e.g. --config.data.dir=data/my_corpus --config.train.batch_size=64.
"""
from electra_jax.config import SMALL_BUDGET_RECIPE, apply_overrides, default_config


def get_config():
    c = default_config("tiny")
    apply_overrides(c, SMALL_BUDGET_RECIPE)
    return c
