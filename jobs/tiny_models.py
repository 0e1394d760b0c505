"""Small, architecture-faithful models with random weights, for offline tests and the demo.

No hub access is needed: the tokenizer is trained on the data with `tokenizers`, the model is built from
a config, and both are saved with `save_pretrained`, so they load through the same `from_pretrained`
path as real models.

    python -m jobs.tiny_models t5 --data examples/data/seed/train.jsonl --out models/tiny-t5
    python -m jobs.tiny_models llama --data examples/data/seed/train.jsonl --out models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

SPECIAL = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>", "bos": "<s>"}


def _texts(paths: Iterable[str], keys: Optional[Sequence[str]] = None) -> List[str]:
    """The string values of every JSONL row (only those under `keys` when given)."""
    out: List[str] = []
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.extend(str(v) for k, v in row.items() if isinstance(v, str) and (keys is None or k in keys))
    return out


def build_tokenizer(texts: List[str], vocab_size: int = 512, add_bos: bool = False):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL["pad"], SPECIAL["eos"], SPECIAL["unk"], SPECIAL["bos"]]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # no progress bars on the demo's screen
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos_id = tok.token_to_id(SPECIAL["eos"])
    if add_bos:
        bos_id = tok.token_to_id(SPECIAL["bos"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{SPECIAL['bos']} $A", pair=f"{SPECIAL['bos']} $A $B", special_tokens=[(SPECIAL["bos"], bos_id)]
        )
    else:  # T5 style: inputs end with </s>
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {SPECIAL['eos']}",
            pair=f"$A {SPECIAL['eos']} $B {SPECIAL['eos']}",
            special_tokens=[(SPECIAL["eos"], eos_id)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL["pad"],
        eos_token=SPECIAL["eos"],
        unk_token=SPECIAL["unk"],
        bos_token=SPECIAL["bos"],
    )


def build_t5(tokenizer, d_model: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(  # type: ignore[call-arg]  # generic PretrainedConfig kwargs, absent from T5Config's signature
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=d_model * 2,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        feed_forward_proj="relu",
        tie_word_embeddings=False,
    )
    return T5ForConditionalGeneration(cfg)


def build_llama(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def pretrain(model, tokenizer, texts: List[str], arch: str, steps: int, seed: int = 0) -> None:
    """A short full-weight pre-training so the base 'knows' the vocabulary, as a real base model would.

    T5 learns to reconstruct its input (a denoising-style copy task), Llama plain language modelling.
    Neither is the downstream task: the LoRA fine-tune still has to learn to summarize.
    """
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = [texts[(step * 4 + i) % len(texts)] for i in range(4)]
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=64)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def make_tiny_model(
    arch: str,
    data: List[str],
    out: str,
    vocab_size: int = 512,
    size: int = 64,
    pretrain_steps: int = 150,
    pretrain_on: Optional[Sequence[str]] = None,
) -> Path:
    """Build and save a tiny `arch` ('t5' or 'llama') model with a tokenizer trained on `data`.

    `pretrain_on`: the columns whose text the base is pre-trained on (default: all). Give the inputs only
    (e.g. `article`) for a base that, like a real one, has never seen the fine-tune's targets: pre-trained
    on the summaries too, the tiny base memorizes them, and no fine-tune can then lower its loss on
    held-out summaries.
    """
    texts = _texts(data)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size, add_bos=(arch == "llama"))
    model = build_t5(tokenizer, d_model=size) if arch == "t5" else build_llama(tokenizer, hidden=size)
    if pretrain_steps:
        pretrain(model, tokenizer, _texts(data, pretrain_on) if pretrain_on else texts, arch, pretrain_steps)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch", choices=["t5", "llama"])
    ap.add_argument("--data", nargs="+", required=True, help="JSONL files whose text trains the tokenizer.")
    ap.add_argument("--out", required=True, help="Folder to save the model and tokenizer in.")
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--size", type=int, default=64, help="Hidden size (d_model).")
    ap.add_argument("--pretrain-steps", type=int, default=150, help="Steps of base pre-training (0: random).")
    ap.add_argument(
        "--pretrain-on",
        nargs="+",
        metavar="COLUMN",
        help="Pre-train on these columns' text only (e.g. the inputs, so the base never sees the targets).",
    )
    args = ap.parse_args(argv)
    if (Path(args.out) / "config.json").exists():
        print(f"{args.out} already holds a model; keeping it.")
        return
    path = make_tiny_model(
        args.arch, args.data, args.out, args.vocab_size, args.size, args.pretrain_steps, args.pretrain_on
    )
    on = f" on {', '.join(args.pretrain_on)}" if args.pretrain_on else ""
    print(f"Saved a tiny {args.arch} model (random init, {args.pretrain_steps} pre-training steps{on}) to {path}")


if __name__ == "__main__":
    main()
