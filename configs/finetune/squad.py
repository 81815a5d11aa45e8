"""SQuAD 1.1 (task=squad) and 2.0 (task=squad_v2): windows of 384 tokens, doc stride 128, questions
up to 64 tokens, 2 epochs.

    electra-jax finetune --config configs/finetune/squad.py --config.init=PRETRAINED \\
        --config.data.train_file=train-v1.1.json --config.data.dev_file=dev-v1.1.json --workdir runs/squad

Writes dev_predictions.json (and dev_null_odds.json for 2.0), the official evaluator's inputs.
"""
from electra_jax.finetune.config import finetune_config


def get_config():
    c = finetune_config("squad")
    c.max_seq_length = 384
    return c
