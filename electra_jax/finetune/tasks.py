"""Fine-tuning tasks: where the data comes from, how it becomes model inputs, how predictions are
scored and written. One class per kind of task; `get_task(config)` picks it from config.task."""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from electra_jax.config import ConfigError
from electra_jax.data import task_readers as readers
from electra_jax.data.corpus import DataError
from electra_jax.finetune import features, metrics, squad

EPOCHS = {"rte": 10, "stsb": 10, "squad": 2}  # the reference's; 3 for every other task


def _limit(examples: list | None, n: int) -> list | None:
    """A seeded random subset of n examples in file order (files are often sorted by label)."""
    if not n or not examples or n >= len(examples):
        return examples
    return [examples[i] for i in sorted(np.random.RandomState(0).choice(len(examples), n, replace=False))]


class Task:
    name: str
    kind: str            # classification | regression | tagging | span
    main_metric: str     # the dev metric that picks the best epoch
    splits = ("train", "dev", "test")

    def __init__(self, config):
        self.config = config
        self.data = config.data

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def read(self, split: str) -> list[dict] | None:
        """Examples of a split, or None when the split does not exist (e.g. no test file)."""
        raise NotImplementedError

    def featurize(self, examples: list[dict], tokenizer, split: str):
        """(arrays, aux): model inputs with targets, and what decoding needs."""
        raise NotImplementedError

    def evaluate(self, examples, aux, outputs) -> dict:
        raise NotImplementedError

    def write_predictions(self, directory: str, split: str, examples, aux, outputs) -> str:
        raise NotImplementedError

    def epochs(self) -> int:
        return self.config.train.epochs or EPOCHS.get(self.name, 3)

    def _file(self, split: str) -> str:
        d = self.data
        return dict(train=d.train_file, dev=d.dev_file, test=d.test_file)[split]

    def _limit(self, examples: list | None, split: str) -> list | None:
        d = self.data
        return _limit(examples, d.max_train_examples if split == "train" else d.max_eval_examples)


# ---- sentence(-pair) classification and regression ------------------------------------------------

class ClassificationTask(Task):
    """GLUE tasks (config.task = cola, sst2, ...) and the user's own CSV/TSV/JSONL ("text")."""

    def __init__(self, config):
        super().__init__(config)
        self.name = config.task
        if self.name in readers.GLUE:
            self.labels = readers.GLUE[self.name].labels
        else:
            self.labels = tuple(self.data.labels) or None  # None: discovered from the training file
        self.kind = "regression" if self.name == "stsb" else "classification"
        self._held_out = None
        if self.name == "mnli":  # scored beside dev (matched) when dev_mismatched.tsv is there
            self.splits = ("train", "dev", "dev_mismatched", "test")

    @property
    def metric_names(self) -> tuple:
        if self.name in readers.GLUE:
            return readers.GLUE[self.name].metrics
        return ("accuracy", "f1") if self.labels and len(self.labels) == 2 else ("accuracy",)

    @property
    def main_metric(self) -> str:
        return self.metric_names[0]

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    def read(self, split):
        d = self.data
        if self.name not in readers.GLUE:
            return self._limit(self._read_own_files(split), split)
        if d.source == "tfds":
            if split == "test":
                return None  # GLUE test labels are hidden; predict from the distribution's test.tsv
            return self._limit(readers.read_glue_tfds(self.name, split, d.tfds_data_dir, d.tfds_name), split)
        return self._limit(readers.read_glue(self.name, d.dir, split), split)

    def _read_own_files(self, split):
        d = self.data
        file = self._file(split)
        if split != "train" and not file:
            if split == "test":
                return None
            if self._held_out is None:
                self._read_own_files("train")
            return self._held_out  # the dev split is held out of the training file
        if not file:
            raise ConfigError("data.train_file is empty: name the CSV/TSV/JSONL file to train on")
        text_columns = (d.text_columns,) if isinstance(d.text_columns, str) else tuple(d.text_columns)
        if d.label_column in text_columns:
            raise ConfigError(f"data.label_column={d.label_column!r} is also one of data.text_columns={list(text_columns)}: "
                              f"the label cannot be the text")
        rows = readers.read_table(file, text_columns, d.label_column, labels=self.labels or readers.ANY_LABEL,
                                  require_label=split != "test")
        if self.labels is None:  # discover the label set from the training file, sorted
            if split != "train":
                raise ConfigError("data.labels is empty; read the training file first")
            self.labels = tuple(sorted({r["label"] for r in rows}, key=_label_order))
            if len(self.labels) > MAX_LABEL_SHARE * len(rows) and len(self.labels) > MIN_LABELS_CHECKED:
                raise DataError(f"{file}: column {d.label_column!r} has {len(self.labels)} distinct values in {len(rows)} "
                                f"rows, which looks like text, not labels (a label repeats across rows); set "
                                f"data.label_column, or list the classes in data.labels")
            if len(self.labels) < 2:
                raise DataError(f"{file}: every row has the label {self.labels}; a classifier needs at least two "
                                f"(check data.label_column={d.label_column!r})")
        if split == "train" and not d.dev_file:
            order = np.random.RandomState(0).permutation(len(rows))
            n_dev = max(1, int(round(d.dev_fraction * len(rows))))
            self._held_out = [rows[i] for i in sorted(order[:n_dev])]
            rows = [rows[i] for i in sorted(order[n_dev:])]
        return rows

    def featurize(self, examples, tokenizer, split):
        labels = None if self.kind == "regression" else self.labels
        return features.classification_features(examples, tokenizer, self.config.max_seq_length, labels), None

    def predictions(self, outputs):
        return outputs if self.kind == "regression" else outputs.argmax(-1)

    def evaluate(self, examples, aux, outputs):
        pred = self.predictions(outputs)
        if self.kind == "regression":
            gold = np.array([ex["label"] for ex in examples], np.float32)
        else:
            index = {name: k for k, name in enumerate(self.labels)}
            gold = np.array([index[ex["label"]] for ex in examples])
        return metrics.classification_metrics(self.metric_names, gold, pred)

    def write_predictions(self, directory, split, examples, aux, outputs):
        """GLUE submission format for test sets ({Task}.tsv: index, prediction); the same layout,
        with the gold label beside it, for dev sets."""
        pred = self.predictions(outputs)
        name = readers.GLUE_SUBMISSION.get(self.name, self.name) if split == "test" else f"{split}_predictions"
        path = os.path.join(directory, f"{name}.tsv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("index\tprediction" + ("\tlabel" if split != "test" else "") + "\n")
            for ex, p in zip(examples, pred):
                value = f"{min(5.0, max(0.0, float(p))):.3f}" if self.kind == "regression" else self.labels[int(p)]
                gold = f"\t{ex['label']}" if split != "test" else ""
                f.write(f"{ex['index']}\t{value}{gold}\n")
        return path


# A label column whose distinct values exceed this share of the rows (and this count) holds text.
MAX_LABEL_SHARE, MIN_LABELS_CHECKED = 0.5, 10


def _label_order(label: str):
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


# ---- token tagging ---------------------------------------------------------------------------------

class TaggingTask(Task):
    """CoNLL-2003 NER ("ner"), chunking ("chunk": CoNLL-2000 files, or CoNLL-2003's chunk column)."""
    kind = "tagging"
    main_metric = "f1"

    def __init__(self, config):
        super().__init__(config)
        self.name = config.task
        self.labels = tuple(self.data.labels) or None

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def read(self, split):
        d = self.data
        if d.source == "tfds":
            feature = "chunks" if self.name == "chunk" else "ner"
            name = d.tfds_name or "conll2003"
            if split == "test" and not readers.tfds_has_split(name, split, d.tfds_data_dir):
                return None
            sentences = readers.read_conll_tfds(name, split, d.tfds_data_dir, feature)
        else:
            file = self._file(split)
            if not file:
                if split == "train":
                    raise ConfigError("data.train_file is empty: name the CoNLL file to train on")
                return None
            sentences = readers.read_conll(file, d.label_column if isinstance(d.label_column, int) else -1)
        if self.labels is None:
            if split != "train":
                raise ConfigError("data.labels is empty; read the training file first")
            tags = sorted({t for s in sentences for t in s["tags"]} - {"O"}, key=lambda t: (t[2:], t))
            self.labels = ("O",) + tuple(tags)
        unknown = {t for s in sentences for t in s["tags"]} - set(self.labels)
        if unknown:  # the rule of every task kind: a label the model cannot predict is refused, not scored
            raise DataError(f"{split} data has tags {sorted(unknown)} outside the label set {list(self.labels)} "
                            f"(data.labels, or the training file's tags); fix the file or add them to data.labels")
        return self._limit(sentences, split)

    def featurize(self, examples, tokenizer, split):
        arrays, aux = features.tagging_features(examples, tokenizer, self.config.max_seq_length, self.labels)
        if aux["truncated_words"]:
            logging.warning("%s: %d words beyond max_seq_length=%d are cut (predicted 'O' when scoring)", split,
                            aux["truncated_words"], self.config.max_seq_length)
        return arrays, aux

    def predicted_tags(self, examples, aux, outputs):
        best = outputs.argmax(-1)
        tags = []
        for i, ex in enumerate(examples):
            positions = aux["first_position"][i]
            row = [self.labels[int(best[i, p])] for p in positions]
            tags.append(row + ["O"] * (len(ex["words"]) - len(row)))  # words cut by max_seq_length
        return tags

    def evaluate(self, examples, aux, outputs):
        return metrics.entity_metrics([ex["tags"] for ex in examples], self.predicted_tags(examples, aux, outputs))

    def write_predictions(self, directory, split, examples, aux, outputs):
        """CoNLL columns: token, gold tag, predicted tag; a blank line after each sentence
        (the input conlleval.pl reads)."""
        path = os.path.join(directory, f"{split}_predictions.conll")
        with open(path, "w", encoding="utf-8") as f:
            for ex, tags in zip(examples, self.predicted_tags(examples, aux, outputs)):
                for word, gold, pred in zip(ex["words"], ex["tags"], tags):
                    f.write(f"{word} {gold} {pred}\n")
                f.write("\n")
        return path


# ---- SQuAD ------------------------------------------------------------------------------------------

class SquadTask(Task):
    """SQuAD 1.1 ("squad") and 2.0 ("squad_v2": unanswerable questions, a no-answer threshold)."""
    kind = "span"
    num_outputs = 2
    main_metric = "f1"
    splits = ("train", "dev")

    def __init__(self, config):
        super().__init__(config)
        self.name = "squad"
        self.version2 = config.task == "squad_v2"

    def read(self, split):
        d = self.data
        if split == "test":
            return None
        if d.source == "tfds":
            name = d.tfds_name or ("squad/v2.0" if self.version2 else "squad/v1.1")
            examples = readers.read_squad_tfds(name, split, d.tfds_data_dir)
        elif split == "dev" and not d.dev_file:
            examples = self._held_out_articles(readers.read_squad(d.train_file, training=False)[0], held_out=True)
        else:
            file = self._file(split)
            if not file:
                raise ConfigError(f"data.{split}_file is empty: name the SQuAD .json file")
            examples, _ = readers.read_squad(file, training=split == "train")
            if split == "train" and not d.dev_file:
                examples = self._held_out_articles(examples, held_out=False)
        return self._limit(examples, split)

    def _held_out_articles(self, examples, held_out: bool):
        """Without a dev_file, data.dev_fraction of the training file's articles (never single
        questions, so no dev context is seen in training) is the dev set."""
        articles = sorted({e["article"] for e in examples})
        order = np.random.RandomState(0).permutation(len(articles))
        n_dev = max(1, int(round(self.data.dev_fraction * len(articles))))
        if n_dev >= len(articles):
            raise DataError(f"{self.data.train_file}: {len(articles)} article(s); too few to hold out a dev set "
                            f"(give data.dev_file)")
        dev = {articles[i] for i in order[:n_dev]}
        return [e for e in examples if (e["article"] in dev) == held_out]

    def featurize(self, examples, tokenizer, split):
        s = self.config.squad
        arrays, windows, word_spans = features.squad_features(
            examples, tokenizer, self.config.max_seq_length, s.doc_stride, s.max_query_length,
            training=split == "train")
        return arrays, dict(windows=windows, word_spans=word_spans)

    def decode(self, examples, aux, outputs):
        s = self.config.squad
        return squad.decode(examples, aux["windows"], aux["word_spans"], outputs[..., 0], outputs[..., 1],
                            n_best=s.n_best, max_answer_length=s.max_answer_length,
                            null_threshold=s.null_threshold, allow_null=self.version2)

    def evaluate(self, examples, aux, outputs):
        return metrics.squad_metrics(examples, self.decode(examples, aux, outputs)[0])

    def write_predictions(self, directory, split, examples, aux, outputs):
        """predictions.json ({question id: answer}, the official evaluator's input) and, for 2.0,
        null_odds.json (null score minus best span score: the evaluator's threshold search input)."""
        predictions, null_odds = self.decode(examples, aux, outputs)
        path = os.path.join(directory, f"{split}_predictions.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(predictions, f, ensure_ascii=False, indent=1)
        if self.version2:
            with open(os.path.join(directory, f"{split}_null_odds.json"), "w") as f:
                json.dump(null_odds, f, indent=1)
        return path


TAGGING_TASKS = ("ner", "chunk", "tagging")
SQUAD_TASKS = ("squad", "squad_v2")


def get_task(config) -> Task:
    name = config.task
    if name in readers.GLUE or name == "text":
        return ClassificationTask(config)
    if name in TAGGING_TASKS:
        return TaggingTask(config)
    if name in SQUAD_TASKS:
        return SquadTask(config)
    raise ConfigError(f"task={name!r} is unknown; choose one of {sorted(readers.GLUE)} (GLUE), 'text' "
                      f"(your own CSV/TSV/JSONL), {list(TAGGING_TASKS)} or {list(SQUAD_TASKS)}")
