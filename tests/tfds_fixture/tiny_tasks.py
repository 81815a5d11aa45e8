"""tfds builders with the features of tfds' glue/sst2, conll2003 and squad, filled from the shared
data's files, so the fine-tuning tfds path is tested without any download."""
import json
import os

import numpy as np
import tensorflow_datasets as tfds

SHARED_ENV = "ELECTRA_SHARED_DATA_FOR_TFDS"


def _shared(*parts):
    return os.path.join(os.environ[SHARED_ENV], *parts)


class TinyGlueSst2(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "sentence": tfds.features.Text(), "idx": tfds.features.Scalar(np.int32),
            "label": tfds.features.ClassLabel(names=["negative", "positive"])}))

    def _split_generators(self, dl_manager):
        path = _shared("glue", "SST-2", "dev.tsv")
        return {"train": self._generate_examples(path, 0, 600), "validation": self._generate_examples(path, 600, None)}

    def _generate_examples(self, path, start, stop):
        with open(path, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f][1:][start:stop]
        for i, (sentence, label) in enumerate(rows):
            yield i, {"sentence": sentence, "idx": i, "label": int(label)}


class TinyConll(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Sequence(tfds.features.Text()),
            "ner": tfds.features.Sequence(tfds.features.ClassLabel(names=self.TAGS))}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 300), "validation": self._generate_examples(300, 400)}

    def _generate_examples(self, start, stop):
        from electra_jax.data.task_readers import read_conll
        for i, s in enumerate(read_conll(_shared("conll2003", "valid.txt"))[start:stop]):
            yield i, {"tokens": s["words"], "ner": s["tags"]}


class TinySquad(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "title": tfds.features.Text(), "context": tfds.features.Text(),
            "question": tfds.features.Text(),
            "answers": tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": tfds.features.Scalar(np.int32)})}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 150), "validation": self._generate_examples(150, 200)}

    def _generate_examples(self, start, stop):
        with open(_shared("squad", "v1.1", "dev-v1.1.json"), encoding="utf-8") as f:
            data = json.load(f)["data"]
        qas = [(a["title"], p["context"], q) for a in data for p in a["paragraphs"] for q in p["qas"]][start:stop]
        for title, context, q in qas:
            yield q["id"], {"id": q["id"], "title": title, "context": context, "question": q["question"],
                            "answers": {"text": [a["text"] for a in q["answers"]],
                                        "answer_start": [a["answer_start"] for a in q["answers"]]}}
