"""Generation metrics for a causal LM during the search: greedy generations from the prompt alone.

A causal LM's eval features hold prompt + completion + EOS, with labels -100 on the prompt
(`jobs.data.row_features`). To score what the model writes, generation starts from the prompt tokens
only: the prompts of a batch are left-padded (so each row's next token follows its own prompt),
`training.generation_max_length` new tokens are generated greedily (or with `generation_num_beams`),
and only the new tokens are decoded. The reference is the completion as trained (its label tokens,
EOS dropped), as Seq2SeqTrainer decodes a seq2seq model's labels. The scores come from jobs.metrics,
the one implementation of ROUGE and exact match.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from jobs.data import IGNORE_INDEX
from orchestrator.core.config import RunConfig


def split_prompt(feature: Dict[str, Any]) -> Tuple[List[int], List[int]]:
    """(prompt ids, completion ids) of one tokenized causal example: the prompt is where labels are -100."""
    ids, labels = list(feature["input_ids"]), list(feature["labels"])
    k = next((i for i, t in enumerate(labels) if t != IGNORE_INDEX), len(labels))
    return ids[:k], [t for t in labels[k:] if t != IGNORE_INDEX]


def generate_continuations(
    model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, num_beams: int = 1, batch_size: int = 8
) -> List[str]:
    """The text each prompt (token ids) is continued with: left-padded batches, new tokens only."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    texts: List[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[i : i + batch_size]]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=num_beams,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
        texts.extend(s.strip() for s in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return texts


def causal_generation_scores(model, tokenizer, features, cfg: RunConfig) -> Dict[str, float]:
    """ROUGE, exact match and mean generated length (in words) of `model` on tokenized causal examples."""
    from jobs.metrics import generation_metrics

    pairs = [split_prompt(f) for f in features]
    preds = generate_continuations(
        model, tokenizer, [p for p, _ in pairs], cfg.training.generation_max_length, cfg.training.generation_num_beams
    )
    refs = tokenizer.batch_decode([c for _, c in pairs], skip_special_tokens=True)
    scores = generation_metrics(preds, [r.strip() for r in refs], cfg.metrics.rouge_tokenizer)
    return {**scores, "gen_len": sum(len(p.split()) for p in preds) / max(len(preds), 1)}


_TRAINER = None


def causal_generation_trainer_class():
    """A transformers Trainer whose evaluation also generates from each eval prompt and adds the
    generation metrics (eval_rougeL, eval_exact_match, ...) to the eval metrics it logs and reports.

    Built on first use, like jobs.train_loop's report callback, so importing this module stays light.
    Under DDP every rank generates for the whole eval set (greedy, same weights: the same scores).
    """
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    from transformers import Trainer

    class CausalGenerationTrainer(Trainer):
        def __init__(self, *args, run_config: RunConfig, **kwargs):
            super().__init__(*args, **kwargs)
            self.run_config = run_config

        def evaluation_loop(self, *args, **kwargs):
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            model: Any = self.model
            was_training = model.training
            model.eval()
            try:
                scores = causal_generation_scores(model, self.processing_class, self.eval_dataset, self.run_config)
            finally:
                model.train(was_training)
            metrics: Dict[str, Any] = output.metrics if output.metrics is not None else {}
            metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
            return output._replace(metrics=metrics)

    _TRAINER = CausalGenerationTrainer
    return _TRAINER
