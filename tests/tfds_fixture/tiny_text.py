"""A tfds builder over a local text file, so the tfds path is tested without any download."""
import os

import tensorflow_datasets as tfds

SOURCE_ENV = "ELECTRA_TINY_TEXT_SOURCE"


class TinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(os.environ[SOURCE_ENV])}

    def _generate_examples(self, path):
        with open(path, encoding="utf-8") as f:
            paragraphs = [p for p in f.read().split("\n\n") if p.strip()]
        for i, p in enumerate(paragraphs):
            yield i, {"text": p}
