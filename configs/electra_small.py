"""ELECTRA-Small (paper Table 6): 12 layers, hidden 256, generator 1/4, lr 5e-4, batch 128, seq 128, 1M steps.

Values live in electra_jax/config.py (MODEL_SIZES, TRAINING_BY_SIZE); override any field on the
command line, e.g. --config.data.dir=data/my_corpus --config.train.batch_size=64.
"""
from electra_jax.config import default_config


def get_config():
    return default_config("small")
