"""The frozen-feature probe: mean pooling checked against NumPy, and a probe that finds a signal
the features carry and none where the labels are noise."""
import numpy as np
import pytest

from electra_jax.config import ConfigError
from electra_jax.finetune.config import finetune_config
from electra_jax.finetune.pretrained import load_encoder
from electra_jax.model import ElectraEncoderModel
from electra_jax.probe import frozen_probe_accuracy, mean_pooled_features


def test_mean_pooling_matches_numpy_and_ignores_padding(pretrained_export):
    cfg, params, _, _ = load_encoder(str(pretrained_export))
    ids = np.random.RandomState(0).randint(5, cfg.vocab_size, (3, 12)).astype(np.int32)
    mask = (np.arange(12)[None] < np.array([[12], [7], [3]])).astype(np.int32)
    arrays = dict(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
    got = mean_pooled_features(cfg, params, arrays, batch_size=2)  # a full batch and a partial one
    hidden = np.asarray(ElectraEncoderModel(cfg).apply({"params": params}, ids, mask, arrays["token_type_ids"]))
    want = np.stack([hidden[i, :n].mean(0) for i, n in enumerate(mask.sum(1))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    repadded = dict(arrays, input_ids=np.where(mask == 1, ids, 9))
    np.testing.assert_allclose(mean_pooled_features(cfg, params, repadded), got, rtol=1e-5, atol=1e-5)


def _write_task(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return str(path)


def _probe_config(init, tmp_path, shuffle_labels: bool):
    """Sentences from two disjoint word lists, labelled by their list (or at random)."""
    rng = np.random.RandomState(1)
    words = {"a": "king queen castle crown knight sword horse battle".split(),
             "b": "river garden flower summer tree meadow bird rain".split()}
    rows = []
    for i in range(400):
        label = "ab"[i % 2]
        rows.append((" ".join(rng.choice(words[label], 6)), "ab"[rng.randint(2)] if shuffle_labels else label))
    c = finetune_config("text")
    c.init, c.max_seq_length = str(init), 32
    c.data.update(train_file=_write_task(tmp_path / "train.tsv", rows[:200]),
                  dev_file=_write_task(tmp_path / "dev.tsv", rows[200:]))
    return c


def test_probe_finds_what_the_words_say_and_nothing_in_noise(pretrained_export, tmp_path):
    assert frozen_probe_accuracy(_probe_config(pretrained_export, tmp_path, shuffle_labels=False)) >= 0.95
    noise = frozen_probe_accuracy(_probe_config(pretrained_export, tmp_path, shuffle_labels=True), from_scratch=True)
    assert 0.3 < noise < 0.7


def test_probe_refuses_a_regression_task(shared_data, pretrained_export):
    c = finetune_config("stsb")
    c.init, c.data.dir = str(pretrained_export), str(shared_data / "glue")
    with pytest.raises(ConfigError, match="task='stsb'.*classification"):
        frozen_probe_accuracy(c)
