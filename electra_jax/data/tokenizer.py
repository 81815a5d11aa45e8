"""SentencePiece tokenization with BERT's special tokens.

Ids 0 and 1 are [PAD] and [UNK]; [CLS], [SEP] and [MASK] are control symbols, so text that happens
to contain the string "[MASK]" never turns into the mask id.
"""
from __future__ import annotations

import io
import os
from typing import Iterable, Iterator

import sentencepiece as spm

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


class Tokenizer:
    def __init__(self, model_path: str):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"tokenizer model {model_path} does not exist")
        self.path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        self.special_ids = {}
        for name, piece in SPECIAL_TOKENS.items():
            idx = self.sp.piece_to_id(piece)
            if self.sp.id_to_piece(idx) != piece:
                raise ValueError(f"tokenizer {model_path} has no {piece} token; train it with "
                                 f"`electra-jax prepare` or add {sorted(SPECIAL_TOKENS.values())}")
            self.special_ids[name] = idx

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, idx: int) -> str:
        return self.sp.id_to_piece(int(idx))


def train_sentencepiece(sentences: Iterable[str], model_path: str, vocab_size: int,
                        max_sentences: int = 2_000_000, seed_sentencepiece_size: int = 1_000_000) -> Tokenizer:
    """Train a unigram SentencePiece model on `sentences` and write it to `model_path`.

    character_coverage 0.9995 keeps rare CJK characters out of the vocabulary, as SentencePiece
    recommends for languages with large alphabets; hard_vocab_limit=False lets a small corpus
    produce a smaller vocabulary instead of failing.
    """
    def limited(it: Iterable[str]) -> Iterator[str]:
        for i, s in enumerate(it):
            if i >= max_sentences:
                return
            yield s

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=limited(sentences), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, pad_piece=SPECIAL_TOKENS["pad"], unk_id=1, unk_piece=SPECIAL_TOKENS["unk"], bos_id=-1, eos_id=-1,
        control_symbols=[SPECIAL_TOKENS[k] for k in ("cls", "sep", "mask")],
        character_coverage=0.9995, hard_vocab_limit=False, max_sentence_length=8192,
        seed_sentencepiece_size=seed_sentencepiece_size, num_threads=os.cpu_count() or 1,
        minloglevel=2)
    tmp = model_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, model_path)
    return Tokenizer(model_path)
