"""Your own labelled text, any language: a CSV (quoted, header row), TSV (header row) or JSONL file.

    electra-jax finetune --config configs/finetune/text.py --config.init=PRETRAINED \\
        --config.data.train_file=reviews.csv --config.data.text_columns=review \\
        --config.data.label_column=label --workdir runs/reviews

One text column, or two for sentence pairs (--config.data.text_columns="('question','answer')").
Labels are the values seen in the training file (or --config.data.labels). Without a dev_file,
data.dev_fraction of the training rows is held out.
"""
from electra_jax.finetune.config import finetune_config


def get_config():
    return finetune_config("text")
