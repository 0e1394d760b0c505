"""`qlora-launch estimate`: trainable parameters and memory before launching (orchestrator.estimate)."""

from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from orchestrator.commands.options import set_option

# Optional here, unlike the shared config_argument: `estimate --model NAME` and `--table` need no config.
optional_config_argument = click.argument("config", required=False, type=click.Path(dir_okay=False))


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _console():
    from rich.console import Console

    # wide enough that the tables do not wrap when output is piped or captured
    return Console(width=140, highlight=False, soft_wrap=False)


def render_estimate(est) -> None:
    from rich.table import Table

    from orchestrator.estimate.memory import GIB

    con = _console()
    s = est.shape
    layers = " + ".join(str(n) for n in s.layers)
    con.print(
        f"[bold]{s.name}[/bold]  {s.model_class} ({s.task}), {s.total_params:,} parameters, {layers} layers, "
        f"hidden {s.hidden_size}, vocab {s.vocab_size}"
    )
    con.print(f"  from the {s.source}; built on the meta device (no weights)")
    tm = est.target_modules
    if tm == "all-linear":
        from orchestrator.estimate.shapes import match_targets

        names = sorted({m.name.rsplit(".", 1)[-1] for m in match_targets(s, tm)})
        tm_text = f"all-linear ({', '.join(names)}; not the output head {s.output_head})"
    else:
        tm_text = ", ".join(tm)
    con.print(f"  LoRA target_modules: {tm_text}; bias: {est.bias}")

    t = Table(title="LoRA trainable parameters (as peft counts them)", title_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("trainable params", justify="right")
    t.add_column("share of all params", justify="right")
    for c in est.counts:
        t.add_row(str(c.r), f"{c.trainable:,}", f"{100 * c.share:.4f} %")
    con.print(t)

    w = est.weights_by_format
    t = Table(title="Weights by storage format", title_justify="left")
    for col in ("4-bit NF4 + double quant", "4-bit NF4", "8-bit", "16-bit", "fp32"):
        t.add_column(col, justify="right")
    t.add_row(*(fmt_bytes(w[k]) for k in ("nf4_double_quant", "nf4", "int8", "16bit", "fp32")))
    con.print(t)

    seq = " + ".join(str(x) for x in est.seq_lens)
    budget = est.budget_bytes / GIB
    gpus = est.gpus_per_worker if est.gpus_per_worker > 0 else 1
    t = Table(
        title=f"Memory per GPU at rank {est.memory_rank}, batch {est.batch_size}, sequence {seq} tokens, "
        f"gradient checkpointing {'on' if est.gradient_checkpointing else 'off'}, {est.strategy.upper()} over "
        f"{est.num_workers} worker(s)",
        title_justify="left",
    )
    t.add_column("")
    for v in est.variants:
        mark = " (config)" if v.key == est.configured_variant else ""
        t.add_column(v.label + mark, justify="right")
    for attr, label in (
        ("weights", "weights"),
        ("adapter", "adapter (fp32)"),
        ("gradients", "gradients"),
        ("optimizer", "optimizer state (full FT: AdamW)"),
        *([("gathered", "FSDP gathered layers")] if any(v.gathered for v in est.variants) else []),
        ("activations", "activations (rough)"),
        ("overhead", "CUDA context (assumed)"),
        ("total", "total"),
    ):
        t.add_row(label, *(fmt_bytes(getattr(v, attr)) for v in est.variants))
    t.add_row(
        f"fits {gpus:g} x {est.gpu_mem_gib:g} GiB ({budget:g} GiB)?",
        *("yes" if est.fits(v) else "NO" for v in est.variants),
    )
    con.print(t)
    for wline in est.warnings:
        con.print(f"[yellow]warning:[/yellow] {wline}")
    con.print("Assumptions:")
    for a in est.assumptions:
        con.print(f"  - {a}")


def render_share_table(tbl) -> None:
    from rich.table import Table

    from orchestrator.estimate.seed_table import SEED_TABLE, TABLE_ARCHS, seed_formula_share
    from orchestrator.estimate.shapes import SHIPPED_ARCHS

    con = _console()
    t = Table(title="Share of LoRA trainable parameters (trainable / all, as peft prints it)", title_justify="left")
    for col in (
        "model",
        "rank",
        "seed article",
        "2r/sqrt(N)",
        "q,v: params",
        "q,v: share",
        "all-linear: params",
        "all-linear: share",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for i, a in enumerate(tbl.archs):  # noqa: B007  (i indexes the cells below)
        for j, r in enumerate(tbl.ranks):
            seed = SEED_TABLE.get(r)
            seed_text = f"{seed[TABLE_ARCHS.index(a)]:.3f} %" if seed and a in TABLE_ARCHS else "-"
            qv, al = tbl.ours["attention_qv"][a][r], tbl.ours["all_linear"][a][r]
            t.add_row(
                a if j == 0 else "",
                str(r),
                seed_text,
                f"{100 * seed_formula_share(r, SHIPPED_ARCHS[a].nominal_params):.3f} %",
                f"{qv.trainable:,}",
                f"{100 * qv.share:.4f} %",
                f"{al.trainable:,}",
                f"{100 * al.share:.4f} %",
                end_section=(j == len(tbl.ranks) - 1),
            )
    con.print(t)
    qv_names = "; ".join(f"{a}: {', '.join(tbl.target_sets['attention_qv'][a])}" for a in tbl.archs)
    con.print(
        f"q,v = the attention query and value projections ({qv_names}; Falcon fuses q, k and v into one "
        "layer). all-linear = every linear layer but the output head (peft's \"all-linear\", QLoRA's choice)."
    )
    con.print("Totals (N): " + ", ".join(f"{a} {tbl.total_params[a]:,}" for a in tbl.archs) + ".")
    con.print(
        "The seed article's figures equal 2r*sqrt(N)/N with N the nominal size (7e9, 13e9, 70e9, 180e9): "
        "LoRA on a single sqrt(N) x sqrt(N) matrix. No real set of target modules gives them; LoRA on q,v "
        "alone, on every layer, is 3-4x larger (0.062 % at rank 8 on Llama-2-7B, not 0.019 %)."
    )


def register(group) -> None:
    @group.command("estimate")
    @optional_config_argument
    @set_option
    @click.option(
        "--model",
        "model",
        metavar="NAME_OR_CONFIG",
        default=None,
        help="Model to estimate (overrides model.name_or_path): a local model folder, a config.json, "
        "or a shipped architecture (llama-2-7b, llama-2-13b, llama-2-70b, falcon-180b, t5-small, "
        "tinyllama-1.1b, llama-3.1-8b). Only its config is read; nothing is downloaded.",
    )
    @click.option(
        "--rank",
        "ranks",
        type=int,
        multiple=True,
        help="LoRA rank to report (repeatable; default: search.space lora.r choices, else lora.r).",
    )
    @click.option(
        "--gpu-mem-gb",
        type=float,
        default=24.0,
        show_default=True,
        help="Memory of one GPU in GiB for the fit check against resources.gpus_per_worker (A100/H100: 80).",
    )
    @click.option(
        "--table",
        "share_table",
        is_flag=True,
        help="Print the share of trainable parameters for ranks 1-16 on Llama-2 7B/13B/70B and "
        "Falcon-180B beside the seed article's table.",
    )
    @click.option(
        "--calibrate",
        "calibrate_dir",
        metavar="RUN_DIR",
        type=click.Path(file_okay=False),
        default=None,
        help="Compare the estimate with the measured peak GPU memory of a past run's trials and suggest "
        "resources.memory_margin.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
    def estimate_cmd(
        config: Optional[str],
        overrides: Sequence[str],
        model: Optional[str],
        ranks: Sequence[int],
        gpu_mem_gb: float,
        share_table: bool,
        calibrate_dir: Optional[str],
        as_json: bool,
    ) -> None:
        """Trainable parameters and GPU memory of a config, before launching it.

        Reads only the model's config (the model is built on the meta device: no weights, no download)
        and reports, for each LoRA rank in the search space, the trainable parameters exactly as peft
        counts them, and the memory per worker of QLoRA, 8-bit LoRA, 16-bit LoRA and full fine-tuning
        at the configured batch size and lengths, and whether it fits resources.gpus_per_worker GPUs.

        \b
        Examples:
          qlora-launch estimate examples/t5_tiny_summarize_local.yaml
          qlora-launch estimate --model llama-2-7b --set lora.target_modules=[q_proj,v_proj] --rank 8
          qlora-launch estimate --table
          qlora-launch estimate --calibrate runs/my_gpu_run
        """
        if calibrate_dir is not None:
            from orchestrator.estimate.calibrate import calibrate, calibration_text

            cal = calibrate(calibrate_dir)
            click.echo(json.dumps(cal.to_json(), indent=2) if as_json else "\n".join(calibration_text(cal)))
            return
        from orchestrator.estimate import seed_table
        from orchestrator.estimate.run import run_estimate

        tbl = seed_table.share_table() if share_table else None
        est = None
        if not share_table or config is not None or model is not None:
            est = run_estimate(config, overrides, model, list(ranks) or None, gpu_mem_gb)
        if as_json:
            if tbl and est:
                data = {"table": tbl.to_json(), "estimate": est.to_json()}
            else:
                data = (tbl or est).to_json()
            click.echo(json.dumps(data, indent=2))
            return
        if tbl:
            render_share_table(tbl)
        if est:
            render_estimate(est)
