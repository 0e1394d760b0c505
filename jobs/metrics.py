"""ROUGE on generations (not logits: the seed decoded argmax logits, which is not what a summary is).

`rouge-score` is the package `evaluate.load("rouge")` wraps; using it directly needs no hub access.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np

from jobs.data import IGNORE_INDEX

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge(predictions: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Mean F1 of each ROUGE type, in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = {k: 0.0 for k in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        # rougeLsum splits summaries on newlines
        scores = scorer.score(ref.strip(), pred.strip())
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: v / n for k, v in totals.items()}


def decode(tokenizer, ids) -> List[str]:
    ids = np.where(np.asarray(ids) == IGNORE_INDEX, tokenizer.pad_token_id, ids)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def rouge_metrics_fn(tokenizer) -> Callable:
    """compute_metrics for Seq2SeqTrainer with predict_with_generate: predictions are generated ids."""

    def compute(eval_pred) -> Dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        scores = rouge(decode(tokenizer, preds), decode(tokenizer, labels))
        gen_len = float(np.mean([np.count_nonzero(p != tokenizer.pad_token_id) for p in np.asarray(preds)]))
        return {**scores, "gen_len": gen_len}

    return compute
