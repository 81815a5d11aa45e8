"""Packing tokenized documents into fixed-length pretraining examples, as the reference does.

Sentences of one document accumulate until they reach the target length, then become
[CLS] A [SEP] B [SEP]: segment A takes sentences while it stays under half the budget (and, once,
with probability 1/2, the sentence that crosses it), B takes the rest. 10% of examples are a single
segment; after 5% of examples the next target is a random length in [5, max_length].
Examples never span documents. Unlike the reference, a sentence longer than the budget is split
into budget-sized pieces instead of being truncated away, so megabyte lines still become data.
"""
from __future__ import annotations

import random


def split_long(sentence: list[int], limit: int) -> list[list[int]]:
    return [sentence[i:i + limit] for i in range(0, len(sentence), limit)] or [[]]


def build_example(sentences: list[list[int]], max_length: int, target_length: int, rng: random.Random):
    """Two segments from the accumulated sentences -> (first, second) token lists, trimmed."""
    single_segment = rng.random() < 0.1
    first_budget = 10**9 if single_segment else (target_length - 3) // 2
    first, second = [], []
    for sentence in sentences:
        fits = len(first) + len(sentence) < first_budget
        may_overflow = not second and len(first) < first_budget and rng.random() < 0.5
        if not first or fits or may_overflow:
            first += sentence
        else:
            second += sentence
    first = first[:max_length - 2]
    second = second[:max(0, max_length - len(first) - 3)]
    return first, second


class DocumentPacker:
    """Packs documents one after another; the random target length carries over documents."""

    def __init__(self, max_length: int, rng: random.Random):
        self.max_length, self.rng, self.target_length = max_length, rng, max_length

    def pack(self, sentences: list[list[int]]) -> list[tuple[list[int], list[int]]]:
        examples, current, length = [], [], 0
        pieces = [p for s in sentences if s for p in split_long(s, self.max_length - 2)]
        for i, piece in enumerate(pieces):
            current.append(piece)
            length += len(piece)
            if length >= self.target_length or i == len(pieces) - 1:
                examples.append(build_example(current, self.max_length, self.target_length, self.rng))
                current, length = [], 0
                random_length = self.rng.random() < 0.05
                self.target_length = self.rng.randint(5, self.max_length) if random_length else self.max_length
        return examples
