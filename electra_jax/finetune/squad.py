"""Decoding span predictions: n-best start/end pairs over every window of a question, mapped back
to the original context characters; for SQuAD 2.0, the no-answer decision."""
from __future__ import annotations

import numpy as np


def decode(examples, windows, word_spans, start_logits, end_logits, *, n_best: int = 20,
           max_answer_length: int = 30, null_threshold: float = 0.0, allow_null: bool = False):
    """({question id: answer text}, {question id: null score - best span score}).

    A candidate span starts and ends on context tokens of one window, ends no earlier than it starts,
    spans at most max_answer_length tokens, and starts where that window gives the token its most
    context. Its score is start + end logit. The null score is the smallest [CLS]+[CLS] score over
    the windows; with allow_null the answer is "" when null - best > null_threshold."""
    best = {}   # example -> (score, text)
    null = {}   # example -> lowest null score
    for w, window in enumerate(windows):
        s_log, e_log = start_logits[w], end_logits[w]
        null[window.example] = min(null.get(window.example, np.inf), float(s_log[0] + e_log[0]))
        starts = np.argsort(-s_log)[:n_best]
        ends = np.argsort(-e_log)[:n_best]
        for s in starts:
            if s not in window.token_to_word or not window.max_context.get(s, False):
                continue
            for e in ends:
                if e not in window.token_to_word or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_log[s] + e_log[e])
                if score > best.get(window.example, (-np.inf, ""))[0]:
                    spans = word_spans[window.example]
                    context = examples[window.example]["context"]
                    text = context[spans[window.token_to_word[s]][0]:spans[window.token_to_word[e]][1]]
                    best[window.example] = (score, text)
    predictions, null_odds = {}, {}
    for i, ex in enumerate(examples):
        score, text = best.get(i, (-np.inf, ""))
        null_odds[ex["id"]] = float(null.get(i, 0.0) - score) if np.isfinite(score) else float("inf")
        predictions[ex["id"]] = "" if allow_null and null_odds[ex["id"]] > null_threshold else text
    return predictions, null_odds
