"""Metrics on generated text: ROUGE with a tokenizer that fits the language, and exact match.

ROUGE is scored on generations (not logits: the seed decoded argmax logits, which is not what a summary
is). `rouge-score` is the package `evaluate.load("rouge")` wraps; using it directly needs no hub access.
Its default tokenizer keeps only lower-cased [a-z0-9] runs: every Chinese, Japanese or Korean character
is dropped, so a CJK pair scores 0 whatever the model writes. `metrics.rouge_tokenizer` picks another
(`tokenizer_for`); `auto` detects CJK text in the references. This module is the one implementation the
search (`generation_metrics_fn`), the test score (jobs.evaluate) and the report use.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from jobs.data import IGNORE_INDEX

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Han (with extensions and compatibility ideographs), Hiragana, Katakana, Hangul syllables and jamo.
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
)
_CJK_RE = re.compile(f"[{_CJK}]")
# One CJK character, or a run of other letters/digits (a word of a non-CJK script, a number).
_CHAR_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_WORD_CHAR_RE = re.compile(r"[^\W_]")
# `auto` picks char tokens when at least this share of the references' letters and digits are CJK.
CJK_SHARE = 0.3


class WhitespaceTokenizer:
    """Lower-cased whitespace-separated words: for text that is already segmented. On Chinese written
    without spaces a whole sentence is one token, so ROUGE is all-or-nothing."""

    def tokenize(self, text: str) -> List[str]:
        return text.lower().split()


class CharTokenizer:
    """Each CJK character a token; runs of other letters and digits lower-cased words (punctuation
    dropped). Character-level ROUGE is the usual score for Chinese summarization (e.g. LCSTS) and needs
    no dictionary, so it serves Japanese and Korean as well."""

    def tokenize(self, text: str) -> List[str]:
        return _CHAR_TOKEN_RE.findall(text.lower())


class JiebaTokenizer:
    """Chinese words from jieba's segmenter (its bundled dictionary, no download); tokens without a
    letter or digit (punctuation, spaces) dropped, the rest lower-cased."""

    def tokenize(self, text: str) -> List[str]:
        import jieba

        jieba.setLogLevel(60)  # no "Building prefix dict" chatter on every worker
        return [w.lower() for w in jieba.lcut(text) if _WORD_CHAR_RE.search(w)]


def cjk_share(texts: Sequence[str]) -> float:
    """The share of CJK characters among the letters and digits of `texts` (0 when there are none)."""
    letters = sum(len(_WORD_CHAR_RE.findall(t)) for t in texts)
    return sum(len(_CJK_RE.findall(t)) for t in texts) / letters if letters else 0.0


def tokenizer_for(choice: str, references: Sequence[str]) -> Any:
    """The tokenizer object for `metrics.rouge_tokenizer`, or None for rouge-score's default.

    auto: `CharTokenizer` when the references are mostly CJK (`CJK_SHARE`), else the default (whose
    English scores, stemmer included, stay as they were). Char rather than jieba for auto: it needs no
    dictionary, covers Japanese and Korean, and it grades early, weak models where words do not: on
    examples/data/zh eval, nine generations of tiny T5s (bases and LoRA fine-tunes at several steps)
    scored char ROUGE-L 0.014 to 0.061 and jieba ROUGE-L 0 every one, which would leave a search tied.
    """
    if choice == "auto":
        return CharTokenizer() if cjk_share(references) >= CJK_SHARE else None
    try:
        return {"whitespace": WhitespaceTokenizer, "char": CharTokenizer, "jieba": JiebaTokenizer}[choice]()
    except KeyError:
        raise ValueError(f"unknown rouge tokenizer '{choice}': use auto, whitespace, char or jieba") from None


def rouge(predictions: Sequence[str], references: Sequence[str], tokenizer: str = "auto") -> Dict[str, float]:
    """Mean F1 of each ROUGE type, in [0, 1], with the `tokenizer` of `metrics.rouge_tokenizer`."""
    from rouge_score import rouge_scorer

    refs = [r.strip() for r in references]
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=tokenizer_for(tokenizer, refs))
    totals = {k: 0.0 for k in ROUGE_TYPES}
    for pred, ref in zip(predictions, refs):
        # rougeLsum splits summaries on newlines
        scores = scorer.score(ref, pred.strip())
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: v / n for k, v in totals.items()}


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The share of predictions equal to their reference once outer whitespace is stripped and inner
    whitespace runs are single spaces (case and punctuation count: the task asked for this exact text)."""

    def norm(s: str) -> str:
        return " ".join(str(s).split())

    hits = sum(norm(p) == norm(r) for p, r in zip(predictions, references))
    return hits / max(len(predictions), 1)


def generation_metrics(predictions: Sequence[str], references: Sequence[str], tokenizer: str = "auto"):
    """ROUGE and exact match, named as the search and the reports show them without the `eval_` prefix."""
    return {**rouge(predictions, references, tokenizer), "exact_match": exact_match(predictions, references)}


def decode(tokenizer, ids) -> List[str]:
    ids = np.where(np.asarray(ids) == IGNORE_INDEX, tokenizer.pad_token_id, ids)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def generation_metrics_fn(tokenizer, rouge_tokenizer: str = "auto") -> Callable:
    """compute_metrics for Seq2SeqTrainer with predict_with_generate: predictions are generated ids."""

    def compute(eval_pred) -> Dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        scores = generation_metrics(decode(tokenizer, preds), decode(tokenizer, labels), rouge_tokenizer)
        gen_len = float(np.mean([np.count_nonzero(p != tokenizer.pad_token_id) for p in np.asarray(preds)]))
        return {**scores, "gen_len": gen_len}

    return compute
