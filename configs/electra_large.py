"""ELECTRA-Large (paper Table 6): 24 layers, hidden 1024, generator 1/4, mask 25%, lr 2e-4, batch 2048, 400K steps.

Values live in electra_jax/config.py (MODEL_SIZES, TRAINING_BY_SIZE); override any field on the
command line, e.g. --config.data.dir=data/my_corpus --config.train.batch_size=64.
"""
from electra_jax.config import default_config


def get_config():
    return default_config("large")
