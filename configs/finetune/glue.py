"""GLUE fine-tuning (reference hyperparameters: batch 32, warmup 10%, layer-wise LR decay 0.8,
lr by model size, 3 epochs; 10 for RTE and STS-B).

    electra-jax finetune --config configs/finetune/glue.py --config.task=sst2 \\
        --config.init=PRETRAINED --config.data.dir=glue_data --workdir runs/sst2

task: cola sst2 mrpc stsb qqp mnli qnli rte wnli. data.dir is the GLUE distribution folder (or the
task's own folder); --config.data.source=tfds reads glue/TASK from tfds instead. A test.tsv next to
dev.tsv gets predictions in the GLUE submission format.
"""
from electra_jax.finetune.config import finetune_config


def get_config():
    return finetune_config("sst2")
