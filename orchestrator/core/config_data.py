"""The `data:` section of the YAML config (orchestrator.core.config_sections holds the others)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    """A config section: unknown keys are rejected (every section derives from it)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """`data:` where the examples are and which columns hold input and target."""

    train: str = Field(
        description="Training data: a .jsonl, .csv or .parquet file (local or s3://bucket/key), a save_to_disk "
        "folder, or hub:NAME[:config][@revision]."
    )
    eval: Optional[str] = Field(None, description="Evaluation data; if absent, eval_split of train is held out.")
    test: Optional[str] = Field(
        None,
        description="Held-out test data: the merged model and the untuned base are scored on it after the search "
        "(and retrain's promotion gate uses it); if absent, test_split of train is set aside.",
    )
    endpoint_url: Optional[str] = Field(
        None, description="S3-compatible endpoint for s3:// data (default: output.endpoint_url)."
    )
    format: Literal["columns", "messages", "instruction"] = Field(
        "columns",
        description="columns: input_column -> target_column through prompt_template. messages: a `messages` "
        "column of [{role, content}] turns (system/user/assistant) rendered with the chat template, loss on "
        "the assistant turns only (causal_lm only). instruction: columns `instruction`, input_column (optional, "
        "may be empty), target_column and an optional `system`, rendered with the chat template when the "
        "tokenizer (or model.chat_template) has one, else an Alpaca-style template; loss on the output only.",
    )
    input_column: str = Field("input", description="Column with the model input (the prompt for causal_lm).")
    target_column: str = Field("output", description="Column with the target text (the completion).")
    max_input_length: int = Field(
        512,
        ge=1,
        description="Prompts are cut to this many tokens by trimming the input field only (the template's cue "
        "stays); messages: a conversation is cut to max_input_length + max_target_length tokens.",
    )
    max_target_length: int = Field(128, ge=1, description="Targets are truncated to this many tokens.")
    eval_split: float = Field(0.2, gt=0.0, lt=1.0, description="Share of train held out when eval is absent.")
    test_split: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of train set aside as the test set when data.test is absent, before eval is split "
        "off and before the search (no trial sees it); the merged model and the untuned base are scored on "
        "it. 0: no test set.",
    )
    split_seed: int = Field(42, description="Seed of the train/test and train/eval splits.")
    prompt_template: Optional[str] = Field(
        None,
        description="columns format: how the input becomes the prompt; {input} (once) is replaced, the rest is "
        "kept literally. Default: '{input}' for seq2seq (e.g. 'summarize: {input}' for T5), '{input}\\n' for "
        "causal_lm.",
    )
    on_bad_rows: Literal["error", "skip"] = Field(
        "error",
        description="Rows whose input or target is null, not a string or empty (messages: a malformed list or "
        "no assistant turn): error stops before anything starts, naming the rows; skip drops them when the "
        "data is loaded and records how many per split.",
    )
    packing: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="causal_lm only: pack each batch into one padding-free row (positions restart per "
        "example) when a check at start shows the model keeps packed examples apart. auto: "
        "only with flash-attention kernels, which skip the masked blocks; true: also with "
        "sdpa/eager, which compute attention over the whole packed row (a gain for short "
        "examples, a loss for long ones: docs/benchmarks.md); false: pad each batch.",
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_input(cls, v):
        if v is not None and v.count("{input}") != 1:
            raise ValueError("must contain {input} exactly once")
        return v

    def template_for(self, task: str) -> str:
        """prompt_template, or its default for `task` ('{input}' for seq2seq, '{input}\\n' for causal_lm)."""
        if self.prompt_template is not None:
            return self.prompt_template
        return "{input}" if task == "seq2seq" else "{input}\n"
