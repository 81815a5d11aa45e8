"""The zero-shot study (configs/study/blimp_cpu.py) at one GPU's scale: about 1e16 training FLOPs
per objective, ELECTRA and masked LM with the reference recipe on the same encoder (6 layers x 512),
scored on BLiMP's test paradigms at 1/3, 2/3 and all of the budget, with few-label SST-2.

On a CPU machine with ../shared/data and PyPI, pack what the GPU host reads (at most 40 MB):
    python tools/pack_device_study.py --out device_data
On the GPU host, from the checkout with device_data/ beside it (no network needed):
    launch/study_on_device.sh OUT_DIR

Variants: `:h100` (the default) and `:cpu_smoke`, the same stages at seconds' scale (the suite
runs it through the launch script).
"""
import ml_collections


def get_config(variant: str = "h100"):
    if variant not in ("h100", "cpu_smoke"):
        raise ValueError(f"variant {variant!r}: h100 or cpu_smoke")
    c = ml_collections.ConfigDict()
    c.prepared_data = "device_data/corpus"   # tools/pack_device_study.py writes it
    c.corpus = ()
    c.glue_dir = "device_data/glue"
    c.vocab_size = 8000
    c.seq_length = 32
    c.size = "tiny"
    c.model = ml_collections.ConfigDict(dict(num_layers=6, hidden_size=512, num_heads=8, intermediate_size=2048,
                                             embedding_size=128))
    c.train = ml_collections.ConfigDict(dict(batch_size=256, learning_rate=5e-4, log_every=200))
    c.warmup_fraction = 0.05
    c.pretrain_flops = 1e16  # per objective
    c.budgets = 3
    c.recipe = ml_collections.ConfigDict(dict(electra=(), mlm=()))  # the reference recipe for both
    c.seed = 0
    c.tasks = ()
    c.seeds = 3
    c.probe_task = "sst2"
    c.finetune = ml_collections.ConfigDict(dict(max_seq_length=64, batch_size=32, epochs=3,
                                                max_train_examples=6000, max_eval_examples=0))
    c.minimal_pairs = ml_collections.ConfigDict(dict(data="device_data/blimp", max_pairs=200, batch_rows=1024,
                                                     random_seeds=(0, 1, 2), ngram_orders=(1, 2, 3)))
    c.fewshot = ml_collections.ConfigDict(dict(task="sst2", sizes=(100, 300, 1000), epochs=(10, 5, 3), seeds=5,
                                               batch_size=16))
    if variant == "cpu_smoke":
        c.model.update(num_layers=1, hidden_size=64, num_heads=1, intermediate_size=128, embedding_size=32)
        c.train.update(batch_size=16, log_every=2)
        c.pretrain_flops, c.budgets, c.probe_task = 3e9, 1, ""
        c.minimal_pairs.update(max_pairs=2, batch_rows=64, random_seeds=(0,), ngram_orders=(1,))
        c.fewshot.update(sizes=(24,), epochs=(1,), seeds=2)
    return c
