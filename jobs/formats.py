"""data.format: how a row becomes text the model sees, and where the loss goes (worker side, no torch).

Every row is rendered to a list of *pieces* `(kind, text)`: FIXED text of the template (cues, role
headers, end-of-turn markers), INPUT text a user wrote (the only text truncation may trim) and TARGET
text the loss is on. The same rendering serves training (`jobs.data.tokenize`) and every place that
turns a row into a prompt (`prompts_and_targets`: evaluation, merge check, samples), so generation sees
the prompt the model was trained on.

- columns: prompt_template split at {input}: FIXED before, INPUT, FIXED after; the target column is the
  TARGET (causal: its own tokens + EOS; seq2seq: the labels).
- messages: the chat template (model.chat_template, else the tokenizer's) rendered incrementally: the
  text turn i adds is what rendering messages[:i+1] adds to rendering messages[:i] (for an assistant
  turn: to messages[:i] with the generation prompt, which is FIXED); an assistant turn's added text
  (its content and end-of-turn marker) is TARGET, a user turn's content INPUT. A template that renders
  earlier turns differently once later ones are added is refused (set model.chat_template). Tokens
  are labelled when their first character lies in a TARGET span (offset mapping of the whole text).
- instruction: with a chat template, [system,] user = instruction + "\\n\\n" + input, assistant = output
  (only the input part is INPUT); without one, the Alpaca layout (ALPACA_*), instruction and input INPUT.

Truncation (`fit`): while the text is over budget, the tail of the longest INPUT piece is cut by the
excess (in its own tokens); cues and templates stay. Messages first drop the oldest exchanges (from the
first non-system turn through the first assistant turn) while more than one assistant turn remains.
Whatever still does not fit is cut at the end.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from orchestrator.core.config import RunConfig
from orchestrator.core.rows import INSTRUCTION_COLUMN, MESSAGES_COLUMN, SYSTEM_COLUMN

FIXED, INPUT, TARGET = "fixed", "input", "target"
Piece = Tuple[str, str]
ALPACA_SYSTEM = "{system}\n\n"
ALPACA_INSTRUCTION = "### Instruction:\n"
ALPACA_INPUT = "\n\n### Input:\n"
ALPACA_RESPONSE = "\n\n### Response:\n"


class ChatTemplateError(ValueError):
    """The chat template is missing or cannot be rendered turn by turn."""


def text_of(pieces: Sequence[Piece]) -> str:
    return "".join(t for _, t in pieces)


def chat_template(cfg: RunConfig, tokenizer) -> Optional[str]:
    """model.chat_template, else the tokenizer's own, else None."""
    return cfg.model.chat_template or getattr(tokenizer, "chat_template", None) or None


def uses_chat(cfg: RunConfig, tokenizer) -> bool:
    """True when rows render through the chat template (one text, tokenized without added special tokens)."""
    return cfg.data.format == "messages" or (
        cfg.data.format == "instruction" and chat_template(cfg, tokenizer) is not None
    )


def _render(tokenizer, template: str, messages: list, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


def _added(before: str, after: str, turn: int) -> str:
    if not after.startswith(before):
        raise ChatTemplateError(
            f"the chat template renders the conversation before turn {turn} differently once turn {turn} is "
            "added, so the assistant turns cannot be located; set model.chat_template to a template that "
            "renders turn by turn"
        )
    return after[len(before) :]


def chat_pieces(tokenizer, template: Optional[str], messages: list) -> List[Piece]:
    """The conversation's pieces, found by rendering its prefixes (see the module docstring)."""
    if template is None:
        raise ChatTemplateError(
            "the tokenizer has no chat template; set model.chat_template (a Jinja template) for data.format messages"
        )
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    pieces: List[Piece] = []
    prev = ""
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            cue = _render(tokenizer, template, msgs[:i], True) if i else ""
            pieces.append((FIXED, _added(prev, cue, i + 1)))
            prev = cue
        full = _render(tokenizer, template, msgs[: i + 1])
        added = _added(prev, full, i + 1)
        if m["role"] == "assistant":
            pieces.append((TARGET, added))
        elif m["role"] == "user" and m["content"] and m["content"] in added:
            at = added.rfind(m["content"])
            end = at + len(m["content"])
            pieces += [(FIXED, added[:at]), (INPUT, added[at:end]), (FIXED, added[end:])]
        else:
            pieces.append((FIXED, added))
        prev = full
    return [p for p in pieces if p[1]]


def _instruction_messages(row: Dict[str, Any], d) -> Tuple[list, str, str]:
    """(messages, instruction head, input) of an instruction row; the user turn is head + input."""
    system, instruction = row.get(SYSTEM_COLUMN), str(row.get(INSTRUCTION_COLUMN) or "")
    inp = row.get(d.input_column) or ""
    head = instruction + ("\n\n" if inp else "")
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": head + inp}, {"role": "assistant", "content": str(row[d.target_column])}]
    return msgs, head, inp


def row_pieces(cfg: RunConfig, tokenizer, row: Dict[str, Any]) -> List[Piece]:
    """The row rendered as pieces; the TARGET pieces are what the loss is on."""
    d = cfg.data
    if d.format == "messages":
        return chat_pieces(tokenizer, chat_template(cfg, tokenizer), row[MESSAGES_COLUMN])
    if d.format == "instruction":
        msgs, head, inp = _instruction_messages(row, d)
        template = chat_template(cfg, tokenizer)
        if template is None:
            out: List[Piece] = []
            if msgs[0]["role"] == "system":
                out.append((FIXED, ALPACA_SYSTEM.format(system=msgs[0]["content"])))
            out += [(FIXED, ALPACA_INSTRUCTION), (INPUT, str(row.get(INSTRUCTION_COLUMN) or ""))]
            if inp:
                out += [(FIXED, ALPACA_INPUT), (INPUT, inp)]
            return out + [(FIXED, ALPACA_RESPONSE), (TARGET, str(row[d.target_column]))]
        pieces = chat_pieces(tokenizer, template, msgs)
        i = next(k for k, p in enumerate(pieces) if p == (INPUT, head + inp))
        return pieces[:i] + [(FIXED, head), (INPUT, inp)] + pieces[i + 1 :]
    pre, post = d.template_for(cfg.model.task).split("{input}")
    return [(FIXED, pre), (INPUT, str(row[d.input_column])), (FIXED, post), (TARGET, str(row[d.target_column]))]


def prompt_part(cfg: RunConfig, pieces: List[Piece], row: Dict[str, Any]) -> Tuple[List[Piece], str]:
    """(pieces before the last TARGET, the target text): what generation is prompted with and should say."""
    last = max(i for i, p in enumerate(pieces) if p[0] == TARGET)
    if cfg.data.format == "messages":
        target = [m["content"] for m in row[MESSAGES_COLUMN] if m["role"] == "assistant"][-1]
    elif cfg.data.format == "instruction":
        target = str(row[cfg.data.target_column])
    else:
        target = pieces[last][1]
    return pieces[:last], target


# ---- token counting and truncation -----------------------------------------------------------------
def counter(tokenizer, special: bool) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text, add_special_tokens=special)["input_ids"])


def _cut_tail(tokenizer, text: str, drop: int) -> str:
    """`text` without its last `drop` tokens (tokenized on its own)."""
    if tokenizer.is_fast:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        keep = max(len(enc["input_ids"]) - drop, 0)
        return text[: enc["offset_mapping"][keep][0]] if keep < len(enc["input_ids"]) else text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[: max(len(ids) - drop, 0)])


def fit(tokenizer, pieces: List[Piece], count: Callable[[str], int], budget: int) -> Tuple[List[Piece], bool]:
    """Trim the longest INPUT pieces' tails until the text counts at most `budget` tokens.

    Returns (pieces, truncated); the pieces may still be over budget when the INPUT text ran out."""
    n = count(text_of(pieces))
    if n <= budget:
        return pieces, False
    pieces = list(pieces)
    plain = counter(tokenizer, False)
    for _ in range(2 * len(pieces) + 4):
        sizes = [(plain(t), i) for i, (k, t) in enumerate(pieces) if k == INPUT and t]
        if not sizes or n <= budget:
            break
        _, i = max(sizes)
        pieces[i] = (INPUT, _cut_tail(tokenizer, pieces[i][1], n - budget))
        n = count(text_of(pieces))
    return pieces, True


def _conversation(tokenizer, template, msgs: list, prompt_only: bool) -> List[Piece]:
    pieces = chat_pieces(tokenizer, template, msgs)
    return pieces[: max(i for i, p in enumerate(pieces) if p[0] == TARGET)] if prompt_only else pieces


def fit_messages(
    cfg: RunConfig, tokenizer, messages: list, budget: int, prompt_only: bool = False
) -> Tuple[List[Piece], bool]:
    """A conversation's pieces (`prompt_only`: up to its last assistant turn's cue) within `budget` tokens:
    the oldest exchanges dropped first, then the longest user text trimmed."""
    template = chat_template(cfg, tokenizer)
    count = counter(tokenizer, False)
    msgs, dropped = [dict(m) for m in messages], False
    if prompt_only:  # what follows the last assistant turn is never part of its prompt
        msgs = msgs[: max(i for i, m in enumerate(msgs) if m["role"] == "assistant") + 1]
    pieces = _conversation(tokenizer, template, msgs, prompt_only)
    while count(text_of(pieces)) > budget and sum(m["role"] == "assistant" for m in msgs) > 1:
        first = next(i for i, m in enumerate(msgs) if m["role"] != "system")
        reply = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        msgs = msgs[:first] + msgs[max(first, reply) + 1 :]
        pieces, dropped = _conversation(tokenizer, template, msgs, prompt_only), True
    pieces, trimmed = fit(tokenizer, pieces, count, budget)
    return pieces, dropped or trimmed


# ---- prompts for generation ------------------------------------------------------------------------
def prompts_and_targets(cfg: RunConfig, tokenizer, rows) -> Tuple[List[str], List[str]]:
    """The prompt each row's generation starts from (rendered and truncated as in training) and the text it
    should produce. `rows`: a datasets.Dataset or a list of dicts. Tokenize the prompts with `encode_prompts`.
    """
    special = not uses_chat(cfg, tokenizer)
    count = counter(tokenizer, special)
    prompts, targets = [], []
    for row in rows:
        head, target = prompt_part(cfg, row_pieces(cfg, tokenizer, row), row)
        if cfg.data.format == "messages":
            head, _ = fit_messages(cfg, tokenizer, row[MESSAGES_COLUMN], cfg.data.max_input_length, prompt_only=True)
        else:
            head, _ = fit(tokenizer, head, count, cfg.data.max_input_length)
        prompts.append(text_of(head))
        targets.append(target)
    return prompts, targets


def encode_prompts(cfg: RunConfig, tokenizer, prompts: Sequence[str], **kwargs):
    """Prompts from `prompts_and_targets` as one padded batch of tensors (special tokens as in training)."""
    return tokenizer(
        list(prompts),
        add_special_tokens=not uses_chat(cfg, tokenizer),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=cfg.data.max_input_length,
        **kwargs,
    )
