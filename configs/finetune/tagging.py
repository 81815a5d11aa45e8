"""Token tagging on CoNLL column files: task=ner (CoNLL-2003, the last column) or task=chunk
(CoNLL-2000 files, or CoNLL-2003 with --config.data.label_column=2). Tags sit on each word's first
sub-token; scores are conlleval's entity-level precision / recall / F1.

    electra-jax finetune --config configs/finetune/tagging.py --config.init=PRETRAINED \\
        --config.data.train_file=conll2003/train.txt --config.data.dev_file=conll2003/valid.txt \\
        --workdir runs/ner
"""
from electra_jax.finetune.config import finetune_config


def get_config():
    return finetune_config("ner")
