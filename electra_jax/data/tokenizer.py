"""Tokenizers with BERT's special tokens: a SentencePiece model (trained by `prepare`) or a BERT
WordPiece vocab.txt (the released ELECTRA checkpoints), behind one interface.

SentencePiece: ids 0 and 1 are [PAD] and [UNK]; [CLS], [SEP] and [MASK] are control symbols, so
text that happens to contain "[MASK]" never becomes the mask id.
WordPiece: HuggingFace `tokenizers`' BertWordPieceTokenizer, the implementation transformers uses.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from tokenizers import (BertWordPieceTokenizer, Regex, Tokenizer as HFTokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors)

from electra_jax.data.corpus import DataError, read_json_file, strict_text_lines

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
SPM_FILE, WORDPIECE_FILE = "tokenizer.model", "vocab.txt"


class BaseTokenizer:
    path: str
    file_name: str
    special_ids: dict

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, one list per text."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def id_to_piece(self, idx: int) -> str:
        raise NotImplementedError

    def word_starts(self) -> np.ndarray:
        """[vocab_size] bool: the token begins a word (whole-word masking reads this)."""
        return np.array([self.begins_word(self.id_to_piece(i)) for i in range(self.vocab_size)])

    @staticmethod
    def begins_word(piece: str) -> bool:
        raise NotImplementedError

    def encode_with_masks(self, text: str) -> list[int]:
        """Ids of `text` where each literal "[MASK]" becomes the mask id (for fill-mask)."""
        parts = text.split(SPECIAL_TOKENS["mask"])
        ids: list[int] = []
        for i, part in enumerate(parts):
            if part.strip():
                ids += self.encode([part.strip()])[0]
            if i < len(parts) - 1:
                ids.append(self.special_ids["mask"])
        return ids

    def _check_specials(self, lookup) -> None:
        self.special_ids = {}
        for name, token in SPECIAL_TOKENS.items():
            idx = lookup(token)
            if idx is None:
                raise DataError(f"tokenizer {self.path} has no {token} token; it needs "
                                 f"{sorted(SPECIAL_TOKENS.values())}")
            self.special_ids[name] = idx

    def _special_token_config(self) -> dict:
        return {f"{k}_token": v for k, v in SPECIAL_TOKENS.items()}


class Tokenizer(BaseTokenizer):
    """A SentencePiece model."""
    file_name = SPM_FILE

    def __init__(self, model_path: str):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"tokenizer model {model_path} does not exist")
        self.path = model_path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=model_path)
        except (RuntimeError, OSError) as e:
            raise DataError(f"{model_path} is not a SentencePiece model ({str(e).splitlines()[0]}); give a "
                            f"tokenizer.model, a WordPiece vocab.txt or a directory holding one") from None

        def lookup(token):
            idx = self.sp.piece_to_id(token)
            return idx if self.sp.id_to_piece(idx) == token else None
        self._check_specials(lookup)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, idx: int) -> str:
        return self.sp.id_to_piece(int(idx))

    @staticmethod
    def begins_word(piece: str) -> bool:
        """SentencePiece marks the start of a word with "▁" (the space before it); special
        tokens stand alone."""
        return piece.startswith("▁") or piece in SPECIAL_TOKENS.values()

    def save_for_transformers(self, directory: str) -> None:
        """tokenizer.json (a `tokenizers` Unigram model with this vocabulary and scores) that
        transformers' PreTrainedTokenizerFast loads, plus the SentencePiece model itself."""
        vocab = [(self.sp.id_to_piece(i), self.sp.get_score(i)) for i in range(self.vocab_size)]
        tok = HFTokenizer(models.Unigram(vocab, unk_id=self.special_ids["unk"], byte_fallback=False))
        # SentencePiece's nmt_nfkc with remove_extra_whitespaces: NFKC, any whitespace run (tabs and
        # newlines too) to one space, none at either end. The rule must be a Regex: a plain string
        # is matched literally. Stripping also applies to each piece between special tokens, as
        # electra-jax encodes the text around a [MASK].
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Strip()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.add_special_tokens(list(SPECIAL_TOKENS.values()))
        cls, sep = (SPECIAL_TOKENS[k] for k in ("cls", "sep"))
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, self.special_ids["cls"]), (sep, self.special_ids["sep"])])
        os.makedirs(directory, exist_ok=True)
        tok.save(os.path.join(directory, "tokenizer.json"))
        shutil.copyfile(self.path, os.path.join(directory, SPM_FILE))
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=512,
                           **self._special_token_config()), f, indent=2)


class WordPieceTokenizer(BaseTokenizer):
    """A BERT vocab.txt; uncased models lowercase and strip accents, cased ones do neither."""
    file_name = WORDPIECE_FILE

    def __init__(self, vocab_path: str, lowercase: bool = True):
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(f"vocabulary {vocab_path} does not exist")
        self.path, self.lowercase = vocab_path, lowercase
        for _ in strict_text_lines(vocab_path):  # a binary or non-UTF-8 file fails here, naming its line
            pass
        self.tok = BertWordPieceTokenizer(vocab_path, lowercase=lowercase, clean_text=True, handle_chinese_chars=True)
        self._check_specials(self.tok.token_to_id)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def id_to_piece(self, idx: int) -> str:
        return self.tok.id_to_token(int(idx))

    @staticmethod
    def begins_word(piece: str) -> bool:
        """WordPiece marks the pieces that continue a word with "##"."""
        return not piece.startswith("##")

    def save_for_transformers(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        shutil.copyfile(self.path, os.path.join(directory, WORDPIECE_FILE))
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(dict(tokenizer_class="ElectraTokenizer", do_lower_case=self.lowercase, model_max_length=512,
                           **self._special_token_config()), f, indent=2)


def load_tokenizer(path: str, lowercase: bool | None = None) -> BaseTokenizer:
    """A SentencePiece .model, a WordPiece vocab.txt, or a directory holding one (a HuggingFace
    model directory's tokenizer_config.json decides lowercasing unless `lowercase` is given)."""
    if os.path.isdir(path):
        for name in (SPM_FILE, WORDPIECE_FILE):
            if os.path.isfile(os.path.join(path, name)):
                if lowercase is None and os.path.isfile(os.path.join(path, "tokenizer_config.json")):
                    lowercase = read_json_file(os.path.join(path, "tokenizer_config.json")).get("do_lower_case")
                return load_tokenizer(os.path.join(path, name), lowercase)
        raise FileNotFoundError(f"{path} has no {SPM_FILE} or {WORDPIECE_FILE}")
    if path.endswith(".txt"):
        return WordPieceTokenizer(path, lowercase=True if lowercase is None else lowercase)
    return Tokenizer(path)


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
