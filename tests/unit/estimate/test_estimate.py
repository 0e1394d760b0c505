"""`estimate`: LoRA parameter counts checked against peft itself, the seed's table, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.estimate import memory as est
from orchestrator.estimate import run, seed_table, shapes

REPO = Path(__file__).resolve().parents[3]
SEED_TRAIN = REPO / "examples" / "data" / "seed" / "train.jsonl"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """The tiny T5 and Llama of jobs.tiny_models, saved like real models, plus GPT-2 and Falcon built from
    a config (GPT-2 has Conv1D layers with biases; Falcon's FalconLinear is a subclass of nn.Linear)."""
    from transformers import FalconConfig, FalconForCausalLM, GPT2Config, GPT2LMHeadModel

    from jobs.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    out = {arch: make_tiny_model(arch, [str(SEED_TRAIN)], str(root / arch)) for arch in ("t5", "llama")}
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=300, n_positions=64)).save_pretrained(
        root / "gpt2"
    )
    out["gpt2"] = root / "gpt2"
    FalconForCausalLM(
        FalconConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            new_decoder_architecture=True,
            vocab_size=300,
        )
    ).save_pretrained(root / "falcon")
    out["falcon"] = root / "falcon"
    return out


def _peft_counts(folder: Path, r: int, target_modules, bias: str = "none"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(folder).is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(folder)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=16, target_modules=target_modules, bias=bias))
    return peft_model.get_nb_trainable_parameters()


def _shape(folder: Path):
    mc, src = shapes.load_model_config(str(folder))
    return shapes.inspect_model(mc, None, folder.name, src)


CASES = [
    ("t5", ["q", "v"], "none"),
    ("t5", ["q", "k", "v", "o"], "none"),
    ("t5", "all-linear", "none"),
    ("t5", ["wi", "wo", "lm_head"], "none"),
    ("llama", ["q_proj", "v_proj"], "none"),
    ("llama", "all-linear", "none"),
    ("llama", ["embed_tokens", "down_proj"], "none"),
    ("gpt2", "all-linear", "none"),
    ("gpt2", ["c_attn"], "all"),
    ("gpt2", ["c_attn", "c_fc"], "lora_only"),
    ("falcon", "all-linear", "none"),
    ("falcon", ["query_key_value"], "none"),
]


@pytest.mark.parametrize(
    "arch,targets,bias", CASES, ids=[f"{a}-{t if isinstance(t, str) else '+'.join(t)}-{b}" for a, t, b in CASES]
)
def test_trainable_params_equal_peft_exactly(tiny_models, arch, targets, bias):
    shape = _shape(tiny_models[arch])
    for r in (1, 4, 16):
        peft_trainable, peft_all = _peft_counts(tiny_models[arch], r, targets, bias)
        ours = shapes.count_lora(shape, r, targets, bias)
        assert (ours.trainable, ours.all_params) == (peft_trainable, peft_all), (arch, targets, bias, r)


def test_all_linear_leaves_out_the_output_head(tiny_models):
    shape = _shape(tiny_models["llama"])
    names = {m.name for m in shapes.match_targets(shape, "all-linear")}
    assert shape.output_head == "lm_head" and "lm_head" not in names
    assert {n.rsplit(".", 1)[-1] for n in names} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_bad_target_modules_are_user_errors(tiny_models):
    shape = _shape(tiny_models["llama"])
    with pytest.raises(shapes.UserError, match="matches no module.*q_proj.*Did you mean 'q_proj'"):
        shapes.count_lora(shape, 8, ["q_prj"])
    with pytest.raises(shapes.UserError, match="cannot wrap"):
        shapes.count_lora(shape, 8, ["mlp"])


def test_published_architectures_have_their_known_sizes():
    sizes = {a: _shape_of_arch(a).total_params for a in seed_table.TABLE_ARCHS}
    assert sizes["llama-2-7b"] == 6_738_415_616
    assert sizes["llama-2-13b"] == 13_015_864_320
    assert sizes["llama-2-70b"] == 68_976_648_192
    assert 178e9 < sizes["falcon-180b"] < 180e9
    # the well-known peft print for Llama-2-7B with q,v at rank 8
    c = shapes.count_lora(_shape_of_arch("llama-2-7b"), 8, ["q_proj", "v_proj"])
    assert (c.trainable, c.all_params) == (4_194_304, 6_742_609_920)


def _shape_of_arch(name):
    mc, src = shapes.load_model_config(name)
    return shapes.inspect_model(mc, None, name, src)


def test_seed_table_is_the_single_matrix_formula():
    """All 20 cells of the seed's table round to 2r*sqrt(N)/N; LoRA on q,v is far from it."""
    for r, row in seed_table.SEED_TABLE.items():
        for arch, quoted in zip(seed_table.TABLE_ARCHS, row):
            ours = 100 * seed_table.seed_formula_share(r, shapes.SHIPPED_ARCHS[arch].nominal_params)
            assert round(ours, 3) == quoted, (r, arch, ours, quoted)


def test_weight_formats_are_ordered_and_4bit_is_about_a_quarter():
    shape = _shape_of_arch("llama-2-7b")
    w = {f: est.weight_bytes(shape, f) for f in ("nf4", "int8", "16bit", "fp32")}
    assert w["nf4"] < w["int8"] < w["16bit"] < w["fp32"] == 2 * w["16bit"] - shape.buffer_bytes
    # 4.127 bits per quantized weight; embeddings and lm_head (4 % of the parameters) stay 16-bit
    assert 0.27 < w["nf4"] / w["16bit"] < 0.30
    assert est.quantized_tensor_bytes(4096 * 4096, 4, double_quant=True) / (4096 * 4096) == pytest.approx(
        4.127 / 8, rel=1e-3
    )


def test_falcon_linear_layers_are_reported_as_not_quantized():
    """transformers 5.x's bitsandbytes swap only touches exact nn.Linear: FalconLinear stays 16-bit."""
    shape = _shape_of_arch("falcon-180b")
    assert shape.quantized == []
    cfg, _ = run.load_estimate_config(None, [], "falcon-180b")
    e = est.estimate(shape, cfg)
    assert any("FalconLinear" in w for w in e.warnings)


# ---- CLI -----------------------------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(cli, ["estimate", *args])


def test_cli_model_json_matches_peft(tiny_models):
    res = _run("--model", str(tiny_models["t5"]), "--rank", "4", "--rank", "8", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["model"]["task"] == "seq2seq" and data["lora"]["target_modules"] == "all-linear"
    for row in data["lora"]["ranks"]:
        assert row["trainable_params"] == _peft_counts(tiny_models["t5"], row["r"], "all-linear")[0]
    keys = {v["key"] for v in data["memory"]["variants"]}
    assert keys == {"qlora", "lora_8bit", "lora_16bit", "full"}


def test_cli_config_uses_the_search_space_ranks(tiny_models, tmp_path):
    cfg = tmp_path / "llama.yaml"
    cfg.write_text(
        f"model: {{name_or_path: {tiny_models['llama']}, task: causal_lm}}\n"
        f"data: {{train: {SEED_TRAIN}}}\n"
        "lora: {target_modules: [q_proj, v_proj]}\n"
        "search: {space: {lora.r: {type: choice, values: [16, 4, 8]}}}\n"
    )
    res = _run(str(cfg), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [row["r"] for row in data["lora"]["ranks"]] == [4, 8, 16]
    assert data["memory"]["rank"] == 16
    for row in data["lora"]["ranks"]:
        assert row["trainable_params"] == _peft_counts(tiny_models["llama"], row["r"], ["q_proj", "v_proj"])[0]
    res = _run(str(cfg), "--set", "lora.r=2", "--set", "search.space={}")
    assert res.exit_code == 0, res.output
    assert "LoRA trainable parameters" in res.output and "QLoRA 4-bit NF4 +DQ (config)" in res.output


def test_cli_fit_check_follows_resources_and_gpu_memory():
    args = ("--model", "llama-2-70b", "--set", "resources.gpus_per_worker=1", "--json")
    small = {v["key"]: v["fits"] for v in json.loads(_run(*args, "--gpu-mem-gb", "24").output)["memory"]["variants"]}
    big = {v["key"]: v["fits"] for v in json.loads(_run(*args, "--gpu-mem-gb", "80").output)["memory"]["variants"]}
    assert small == {"qlora": False, "lora_8bit": False, "lora_16bit": False, "full": False}
    # 70B in 4-bit is ~35 GiB of weights: one 80 GiB GPU, not one 24 GiB GPU; 16-bit (128 GiB) fits neither
    assert (big["qlora"], big["lora_16bit"], big["full"]) == (True, False, False)


def test_cli_table_shows_seed_and_ours():
    res = _run("--table")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "llama-2-7b" in out and "falcon-180b" in out
    assert "0.019 %" in out  # the seed's rank-8 7B cell
    assert "4,194,304" in out and "0.0622 %" in out  # ours, q,v at rank 8 on 7B
    assert "19,988,480" in out and "0.2958 %" in out  # ours, all-linear at rank 8 on 7B
    data = json.loads(_run("--table", "--json").output)
    assert len(data["rows"]) == 20


@pytest.mark.parametrize(
    "args,message",
    [
        (("does/not/exist.yaml",), "does not exist"),
        (("--model", "llama-2-8b"), "Did you mean 'llama-2-7b'"),
        (("--model", "no-such-model-anywhere"), "shipped architecture"),
        ((), "needs a CONFIG"),
        (("--model", "llama-2-7b", "--set", "lora.target_modules=[qproj]"), "matches no module"),
        (("--model", "llama-2-7b", "--set", "model.task=seq2seq"), "model.task is seq2seq"),
        (("--model", "llama-2-7b", "--set", "lora.rr=4"), "lora.rr"),
        (("--model", "llama-2-7b", "--gpu-mem-gb", "0"), "--gpu-mem-gb"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(args, message):
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("optim,state_bytes", [("adamw_torch_fused", 8), ("paged_adamw_8bit", 2), ("sgd", 0)])
def test_optimizer_state_follows_training_optim(optim, state_bytes):
    """The adapter's optimizer state is what training.optim keeps, not always AdamW's two fp32 moments."""
    shape = _shape_of_arch("llama-2-7b")
    cfg, _ = run.load_estimate_config(None, [f"training.optim={optim}", "lora.r=16"], "llama-2-7b")
    q = next(v for v in est.estimate(shape, cfg).variants if v.key == "qlora")
    trainable = q.adapter // 4  # fp32 adapter weights
    assert trainable == shapes.count_lora(shape, 16, cfg.lora.target_modules, cfg.lora.bias).trainable
    assert q.optimizer == state_bytes * trainable
    assert q.total == q.weights + q.adapter + q.gradients + q.optimizer + q.gathered + q.activations + q.overhead
