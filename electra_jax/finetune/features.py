"""Tokenized, fixed-length model inputs for each kind of task.

Every converter returns a dict of numpy arrays with a leading example axis: input_ids,
attention_mask, token_type_ids and the targets. Sequences are [CLS] a [SEP] (b [SEP]).
Words (CoNLL tokens, SQuAD context words) are tokenized one by one so that every sub-token knows
its word: tags sit on a word's first sub-token, SQuAD spans map back to character offsets.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from electra_jax.data.tokenizer import BaseTokenizer

IGNORE = -1  # target of positions that carry no label (padding, non-first sub-tokens)


def _empty(n: int, length: int) -> dict:
    return dict(input_ids=np.zeros((n, length), np.int32), attention_mask=np.zeros((n, length), np.int32),
                token_type_ids=np.zeros((n, length), np.int32))


def _put(arrays: dict, i: int, segments: list[list[int]], tok: BaseTokenizer) -> None:
    """Row i = [CLS] seg0 [SEP] seg1 [SEP] ...; token type k for segment k (its [SEP] included)."""
    ids, types = [tok.special_ids["cls"]], [0]
    for k, seg in enumerate(segments):
        ids += list(seg) + [tok.special_ids["sep"]]
        types += [k] * (len(seg) + 1)
    arrays["input_ids"][i, :len(ids)] = ids
    arrays["attention_mask"][i, :len(ids)] = 1
    arrays["token_type_ids"][i, :len(ids)] = types


def _truncate_longest_first(segments: list[list[int]], budget: int) -> list[list[int]]:
    segments = [list(s) for s in segments]
    while sum(map(len, segments)) > budget:
        max(segments, key=len).pop()
    return segments


def classification_features(examples: list[dict], tok: BaseTokenizer, max_length: int, labels=None) -> dict:
    """Sentence or sentence-pair inputs; `labels` maps label strings to ids (None: float targets)."""
    n_texts = len(examples[0]["texts"])
    encoded = [tok.encode([ex["texts"][k] for ex in examples]) for k in range(n_texts)]
    arrays = _empty(len(examples), max_length)
    for i in range(len(examples)):
        _put(arrays, i, _truncate_longest_first([e[i] for e in encoded], max_length - 1 - n_texts), tok)
    has_labels = all(ex["label"] is not None for ex in examples)
    if labels is None:
        arrays["labels"] = np.array([ex["label"] if has_labels else 0.0 for ex in examples], np.float32)
    else:
        index = {name: k for k, name in enumerate(labels)}
        arrays["labels"] = np.array([index[ex["label"]] if has_labels else 0 for ex in examples], np.int32)
    return arrays


def _encode_words(tok: BaseTokenizer, words: list[str]) -> list[list[int]]:
    """Sub-tokens of each word; a word the tokenizer drops entirely (e.g. a lone control character)
    becomes [UNK] so that it still has a position."""
    unique = sorted(set(words))
    table = dict(zip(unique, tok.encode(unique)))
    return [table[w] or [tok.special_ids["unk"]] for w in words]


def tagging_features(sentences: list[dict], tok: BaseTokenizer, max_length: int, labels) -> tuple[dict, dict]:
    """Tags on each word's first sub-token; words beyond max_length are cut (and counted)."""
    index = {name: k for k, name in enumerate(labels)}
    pieces = _encode_words(tok, [w for s in sentences for w in s["words"]])
    arrays = _empty(len(sentences), max_length)
    arrays["labels"] = np.full((len(sentences), max_length), IGNORE, np.int32)
    first_position = []  # per sentence: the position of each kept word's first sub-token
    truncated_words, cursor = 0, 0
    for i, s in enumerate(sentences):
        ids, positions = [], []
        for word, tag in zip(s["words"], s["tags"]):
            word_pieces = pieces[cursor]
            cursor += 1
            if len(ids) + len(word_pieces) > max_length - 2:
                truncated_words += 1
                continue
            positions.append(1 + len(ids))
            arrays["labels"][i, 1 + len(ids)] = index.get(tag, IGNORE)
            ids += word_pieces
        _put(arrays, i, [ids], tok)
        first_position.append(positions)
    return arrays, dict(first_position=first_position, truncated_words=truncated_words)


# ---- SQuAD ------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclasses.dataclass
class SquadWindow:
    example: int             # index into the examples list
    token_to_word: dict      # position in the window -> context word index
    max_context: dict        # position -> is this the window where the token has the most context


def context_words(context: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the context's words: runs of letters/digits, and single
    punctuation marks, so that answer boundaries at punctuation fall between words."""
    return [m.span() for m in _WORD.finditer(context)]


def answer_word_span(spans: list[tuple[int, int]], start: int, text: str) -> tuple[int, int]:
    """First and last word overlapping the answer's characters [start, start + len(text))."""
    end = start + len(text)
    first = next(i for i, (s, e) in enumerate(spans) if e > start)
    last = max(i for i, (s, e) in enumerate(spans) if s < end)
    return first, max(first, last)


def squad_features(examples: list[dict], tok: BaseTokenizer, max_length: int, doc_stride: int,
                   max_query_length: int, training: bool) -> tuple[dict, list[SquadWindow], list]:
    """Sliding windows over each context: [CLS] question [SEP] context window [SEP]. Training
    targets are the answer's first and last sub-token, or [CLS] (0, 0) when the window does not
    contain the whole answer or the question has none."""
    queries = tok.encode([ex["question"] for ex in examples])
    word_spans = [context_words(ex["context"]) for ex in examples]
    all_words = [ex["context"][s:e] for ex, spans in zip(examples, word_spans) for s, e in spans]
    word_pieces = _encode_words(tok, all_words) if all_words else []
    rows, windows, starts, ends, cursor = [], [], [], [], 0
    for ei, (ex, spans, query) in enumerate(zip(examples, word_spans, queries)):
        query = query[:max_query_length]
        doc, doc_word = [], []
        for w in range(len(spans)):
            doc += word_pieces[cursor + w]
            doc_word += [w] * len(word_pieces[cursor + w])
        cursor += len(spans)
        target = None
        if training and not ex["impossible"] and ex["answers"]:
            a = ex["answers"][0]
            first, last = answer_word_span(spans, a["start"], a["text"])
            target = (doc_word.index(first), len(doc_word) - 1 - doc_word[::-1].index(last))
        budget = max_length - len(query) - 3
        window_starts = [0]
        while window_starts[-1] + budget < len(doc):
            window_starts.append(window_starts[-1] + min(budget, doc_stride))
        best_window = _max_context_windows(window_starts, budget, len(doc))
        offset = len(query) + 2
        for ws in window_starts:
            length = min(budget, len(doc) - ws)
            rows.append((query, doc[ws:ws + length]))
            window = SquadWindow(ei, {}, {})
            for k in range(length):
                window.token_to_word[offset + k] = doc_word[ws + k]
                window.max_context[offset + k] = best_window[ws + k] == ws
            windows.append(window)
            if target and ws <= target[0] and target[1] < ws + length:
                starts.append(target[0] - ws + offset)
                ends.append(target[1] - ws + offset)
            else:
                starts.append(0)
                ends.append(0)
    arrays = _empty(len(rows), max_length)
    for i, segments in enumerate(rows):
        _put(arrays, i, list(segments), tok)
    arrays["start_positions"] = np.array(starts, np.int32)
    arrays["end_positions"] = np.array(ends, np.int32)
    return arrays, windows, word_spans


def _max_context_windows(window_starts, budget, doc_len) -> list[int]:
    """For each document token, the start of the window where it has the most context: a window's
    score for a token is min(left context, right context) + 0.01 * window length."""
    best, best_score = [0] * doc_len, [-1.0] * doc_len
    for start in window_starts:
        length = min(budget, doc_len - start)
        for position in range(start, start + length):
            score = min(position - start, start + length - 1 - position) + 0.01 * length
            if score > best_score[position]:
                best[position], best_score[position] = start, score
    return best
