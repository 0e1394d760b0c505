"""Bad rows, duplicate YAML keys, data.format checks and the Qwen chat example, through the CLI (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import REPO, write_config
from tests.unit.commands.test_cli import assert_user_error, invoke

QWEN_EXAMPLE = REPO / "examples" / "qwen2.5_0.5b_chat_one_gpu.yaml"


@pytest.fixture()
def runner():
    return CliRunner()


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def bad_train(tmp_path: Path) -> Path:
    good = {"article": "The model was trained.", "summary": "Trained."}
    return write_jsonl(
        tmp_path / "bad.jsonl",
        [
            good,
            {"article": None, "summary": "x"},  # line 2: null input
            good,
            "",  # a blank line still counts as a line
            {"article": "text", "summary": 5},  # line 5: not a string
            {"article": "   ", "summary": "y"},  # line 6: empty
            good,
        ],
    )


def test_bad_rows_stop_the_run_naming_split_count_rows_and_fix(runner, tmp_path, tiny_t5):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "exp.yaml", tiny_t5, out, data={"train": str(bad_train(tmp_path))})
    for verb in ("validate", "tune"):
        result = invoke(runner, verb, cfg)
        assert_user_error(
            result,
            "`data.train`: 3 bad row(s) in",
            "line 2 (article is null)",
            "line 5 (summary is a int, not a string)",
            "line 6 (article is empty)",
            "data.on_bad_rows: skip",
            out_dir=out,
        )


def test_skip_drops_bad_rows_and_counts_them(tmp_path, tiny_t5):
    from jobs.data import data_stats_line, prepare_datasets
    from jobs.modeling import load_tokenizer
    from orchestrator.core.config_load import load_config
    from orchestrator.launch.preflight import check_run

    cfg_path = write_config(
        tmp_path / "exp.yaml",
        tiny_t5,
        tmp_path / "runs",
        data={"train": str(bad_train(tmp_path)), "on_bad_rows": "skip"},
    )
    cfg = load_config(cfg_path)
    check_run(cfg)  # skip: the preflight lets the run start
    data = prepare_datasets(cfg, load_tokenizer(cfg))
    assert len(data["train"]) == 3
    assert data["stats"]["dropped_bad_rows"] == {"train": 3, "eval": 0, "test": 0}
    assert "dropped bad rows (data.on_bad_rows: skip): 3 train, 0 eval, 0 test" in data_stats_line(data["stats"])


def test_malformed_conversations_are_bad_rows(runner, tmp_path, tiny_llama):
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    train = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            ok,
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": "hi"},
            {"messages": [{"role": "bot", "content": "x"}]},
            ok,
        ],
    )
    cfg = write_config(
        tmp_path / "exp.yaml",
        tiny_llama,
        tmp_path / "runs",
        model={"task": "causal_lm"},
        lora={"target_modules": "all-linear"},
        data={"train": str(train), "eval": str(train), "test": None, "format": "messages"},
        search={"metric": "eval_loss", "space": {}},
    )
    assert_user_error(
        invoke(runner, "validate", cfg),
        "3 bad row(s)",
        "line 2 (no assistant turn with text)",
        "line 3 (messages is not a non-empty list)",
        "line 4 (message 1 is not a {role, content} object",
    )
    # a file without the messages column is named by data.format
    write_jsonl(train, [{"input": "a", "output": "b"}] * 2)
    assert_user_error(invoke(runner, "validate", cfg), "`data.format`: column 'messages' is not in")


def test_messages_need_a_causal_lm(runner, tmp_path, tiny_t5):
    cfg = write_config(tmp_path / "exp.yaml", tiny_t5, tmp_path / "runs", data={"format": "messages"})
    assert_user_error(invoke(runner, "validate", cfg), "data.format messages", "needs model.task causal_lm")


def test_duplicate_yaml_keys_name_the_key_and_both_lines(runner, tmp_path, tiny_t5):
    cfg = write_config(tmp_path / "exp.yaml", tiny_t5, tmp_path / "runs")
    lines = cfg.read_text().splitlines()
    at = lines.index("training:") + 1
    lines.insert(at, "  learning_rate: 0.5")
    lines.insert(at + 2, "  learning_rate: 0.1")
    cfg.write_text("\n".join(lines) + "\n")
    assert_user_error(
        invoke(runner, "tune", cfg),
        f"key 'learning_rate' appears twice in the mapping starting at line {at + 1}: at line {at + 1} and "
        f"line {at + 3}",
        out_dir=tmp_path / "runs",
    )


def test_the_qwen_chat_example_validates_and_estimates_offline(runner, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = yaml.safe_load(QWEN_EXAMPLE.read_text())
    assert cfg["data"]["format"] == "messages" and cfg["resources"]["gpus_per_worker"] == 1
    result = invoke(runner, "validate", QWEN_EXAMPLE)
    assert result.exit_code == 0 and "Config is well-formed!" in result.output, result.output
    result = invoke(runner, "estimate", QWEN_EXAMPLE, "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.output)
    text = json.dumps(est)
    assert "494032768" in text  # Qwen2.5-0.5B's published parameter count, from the shipped config
    assert "8798208" in text  # peft's count for all-linear at r=16
