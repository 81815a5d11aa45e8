"""ELECTRA-Tiny: 2 layers, hidden 128, for CPU runs and tests (trains in minutes).

Values live in electra_jax/config.py (MODEL_SIZES, TRAINING_BY_SIZE); override any field on the
command line, e.g. --config.data.dir=data/my_corpus --config.train.batch_size=64.
"""
from electra_jax.config import default_config


def get_config():
    return default_config("tiny")
