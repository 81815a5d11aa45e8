"""ELECTRA against masked-LM pretraining at equal FLOPs, measured the way small-compute research
measures: zero-shot grammatical minimal pairs (BLiMP) and few-label fine-tuning. Sized for a
2-core CPU (about 1.5 hours; docs/study.md has the wall time).

    electra-jax study --config configs/study/blimp_cpu.py --workdir runs/blimp_study

- corpus: 262 Project Gutenberg children's books (12M words; headers and licences stripped),
  packed into 32-token examples: one or two lines of a book, a sentence or a short passage;
- the same encoder (4 layers x 256) for ELECTRA, masked LM and random weights, with the same
  optimizer settings for both objectives (Adam with bias correction at 1e-3, no dropout: a run of
  this length sees most text once) and BERT's attention (every model exports to HuggingFace);
  ELECTRA keeps the reference's generator (a quarter as wide, the same depth, tied embeddings);
- checkpoints at 1/3, 2/3 and all of the budget: a learning curve from one run per objective;
- BLiMP on its test paradigms (every fourth file in sorted order is dev, used only to pick ELECTRA's
  reported scorer), the first 100 pairs of each; random weights from two initialisations; unigram,
  bigram and trigram models of the same training data as yardsticks;
- SST-2 with 100, 300 and 1000 labels, 5 seeds each, the last epoch's dev accuracy;
- the frozen-feature probe on SST-2. GLUE fine-tuning is off here (tasks=()): at this scale CoLA and
  MRPC sit at floor for every model; configs/study/small_cpu.py runs it.

Paths are relative to the repository root (../shared/data beside it).
"""
import ml_collections

SHORT_RUN_OPTIMIZER = (("train.bias_correction", True), ("train.learning_rate", 1e-3),
                       ("model.dropout_rate", 0.0), ("model.attention_dropout_rate", 0.0))


def get_config():
    c = ml_collections.ConfigDict()
    c.corpus = ("../shared/data/pretrain/gutenberg_children",)
    c.glue_dir = "../shared/data/glue"
    c.vocab_size = 8000
    c.seq_length = 32
    c.size = "tiny"
    c.model = ml_collections.ConfigDict(dict(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024,
                                             embedding_size=128))
    c.train = ml_collections.ConfigDict(dict(batch_size=128, log_every=50))
    c.warmup_fraction = 0.05
    c.pretrain_flops = 1e14  # per objective
    c.budgets = 3
    c.recipe = ml_collections.ConfigDict(dict(electra=SHORT_RUN_OPTIMIZER, mlm=SHORT_RUN_OPTIMIZER))
    c.seed = 0
    c.tasks = ()
    c.seeds = 3
    c.probe_task = "sst2"
    c.finetune = ml_collections.ConfigDict(dict(max_seq_length=64, batch_size=32, epochs=3,
                                                max_train_examples=6000, max_eval_examples=0))
    c.minimal_pairs = ml_collections.ConfigDict(dict(data="../shared/data/blimp", max_pairs=100, batch_rows=256,
                                                     random_seeds=(0, 1), ngram_orders=(1, 2, 3)))
    # fewer labels, more epochs: every size sees about the same number of updates
    c.fewshot = ml_collections.ConfigDict(dict(task="sst2", sizes=(100, 300, 1000), epochs=(10, 5, 3), seeds=5,
                                               batch_size=16))
    return c
