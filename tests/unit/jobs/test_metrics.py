"""ROUGE with a tokenizer that fits the language, and exact match: values computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.metrics import CharTokenizer, JiebaTokenizer, cjk_share, exact_match, generation_metrics, rouge

ZH = Path(__file__).resolve().parents[3] / "examples" / "data" / "zh"

# The first test pair of examples/data/zh, and a plausible model summary of its article.
REF = "成都大熊猫基地一只大熊猫产下双胞胎，母子平安。"
PRED = "成都大熊猫产下双胞胎幼崽"


def test_the_chinese_set_is_article_summary_pairs_like_the_seed():
    seed = json.loads((ZH.parent / "seed" / "train.jsonl").read_text().splitlines()[0])
    counts = {}
    for split in ("train", "eval", "test"):
        rows = [json.loads(x) for x in (ZH / f"{split}.jsonl").read_text().splitlines() if x.strip()]
        assert all(set(r) == set(seed) for r in rows)
        assert all(len(r["summary"]) < len(r["article"]) and cjk_share([r["summary"]]) > 0.9 for r in rows)
        counts[split] = len(rows)
    assert counts == {"train": 10, "eval": 3, "test": 3}
    assert json.loads((ZH / "test.jsonl").read_text().splitlines()[0])["summary"] == REF


def test_char_rouge_on_a_chinese_pair_equals_the_value_computed_by_hand():
    # Char tokens, punctuation dropped. The reference has 21: 成都大熊猫 基地 一只 大熊猫 产下双胞胎 母子平安
    # (5 + 2 + 2 + 3 + 5 + 4); the prediction 12: 成都大熊猫 产下双胞胎 幼崽 (5 + 5 + 2).
    assert len(CharTokenizer().tokenize(REF)) == 21 and len(CharTokenizer().tokenize(PRED)) == 12
    # Longest common subsequence: 成都大熊猫 + 产下双胞胎 = 10 tokens (幼崽 is not in the reference).
    # P = 10/12, R = 10/21, F = 2PR / (P + R) = 2 * 10 / (12 + 21) = 20/33 = 0.606.
    p, r = 10 / 12, 10 / 21
    assert 2 * p * r / (p + r) == pytest.approx(20 / 33)
    scores = rouge([PRED], [REF])  # auto: the reference is Chinese, so char tokens
    assert scores["rougeL"] == pytest.approx(20 / 33)
    # Unigrams: the same 10 tokens overlap (大/熊/猫 twice in the reference, once in the prediction).
    assert scores["rouge1"] == pytest.approx(20 / 33)
    # Bigrams: 11 in the prediction, 20 in the reference; shared: 成都 都大 大熊 熊猫 猫产 产下 下双 双胞 胞胎
    # = 9, so F = 2 * 9 / (11 + 20) = 18/31.
    assert scores["rouge2"] == pytest.approx(18 / 31)
    assert rouge([PRED], [REF], "char") == scores


def test_rouge_scorers_default_and_a_whitespace_tokenizer_are_blind_to_chinese():
    """Why auto matters: rouge-score's default keeps only [a-z0-9] (every CJK character dropped), and
    Chinese has no spaces, so whitespace makes each sentence one token: a near-miss scores 0 and only an
    identical string scores anything. A search on either would rank every trial at 0."""
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score(REF, PRED)["rougeL"]
    assert default.fmeasure == 0.0
    assert rouge([PRED], [REF], "whitespace")["rougeL"] == 0.0
    assert rouge([REF.rstrip("。")], [REF], "whitespace")["rougeL"] == 0.0  # one punctuation mark apart
    assert rouge([REF], [REF], "whitespace")["rougeL"] == 1.0
    assert rouge([REF.rstrip("。")], [REF])["rougeL"] == 1.0  # char tokens drop punctuation


def test_jieba_scores_chinese_words():
    words = JiebaTokenizer().tokenize(REF)
    assert "大熊猫" in words and "，" not in words and "".join(words) == REF.replace("，", "").replace("。", "")
    # Words: 成都 大熊猫 产下 双胞胎 of the prediction's 5 are among the reference's 9 in order: F = 2*4/(5+9).
    assert rouge([PRED], [REF], "jieba")["rougeL"] == pytest.approx(8 / 14)


def test_auto_keeps_the_default_for_english_and_picks_char_for_cjk():
    from jobs.metrics import tokenizer_for

    assert tokenizer_for("auto", ["The model improves"]) is None  # rouge-score's own, with its stemmer
    assert rouge(["the model improved"], ["The model improves"])["rougeL"] == 1.0  # stemmed alike
    assert isinstance(tokenizer_for("auto", [REF, "QLoRA 微调只需一块显卡"]), CharTokenizer)
    assert isinstance(tokenizer_for("auto", ["東京で新しい研究所が開設された"]), CharTokenizer)  # Japanese
    assert isinstance(tokenizer_for("auto", ["서울에서 회의가 열렸다"]), CharTokenizer)  # Korean
    assert cjk_share(["ab 中文"]) == pytest.approx(0.5) and cjk_share(["", "!!"]) == 0.0
    # mixed text: CJK characters one by one, Latin words and numbers whole, lower-cased
    assert CharTokenizer().tokenize("GPT-4 模型降低50%") == ["gpt", "4", "模", "型", "降", "低", "50"]
    with pytest.raises(ValueError, match="auto, whitespace, char or jieba"):
        tokenizer_for("words", [REF])


def test_exact_match_by_hand():
    preds = ["产下双胞胎", " 母子  平安 ", "Paris", "paris"]
    refs = ["产下双胞胎", "母子 平安", "Paris.", "Paris"]
    # 1: equal; 2: equal once whitespace is normalized; 3: the period counts; 4: case counts -> 2 of 4
    assert exact_match(preds, refs) == 0.5
    scores = generation_metrics(preds[:2], refs[:2])
    assert scores["exact_match"] == 1.0 and scores["rougeL"] == 1.0
    assert exact_match([], []) == 0.0
