"""ELECTRA-Tiny: 2 layers, hidden 128, for CPU runs and tests (trains in minutes).

The variant after the file name picks the recipe (electra_jax/config.py, RECIPES):
  --config configs/electra_tiny.py                 the small-budget recipe (the demo's)
  --config configs/electra_tiny.py:reference       the paper's recipe at this size
Override any field on the command line, e.g. --config.data.dir=data/my_corpus --config.train.batch_size=64.
"""
from electra_jax.config import default_config


def get_config(recipe: str = "small_budget"):
    return default_config("tiny", recipe)
