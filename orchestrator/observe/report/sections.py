"""The report page's sections: header, KPI cards, trial table, best trial, samples, footer."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from orchestrator.core.formatting import is_number as _num
from orchestrator.core.scores import fidelity_of, fidelity_text, test_rows, test_size
from orchestrator.core.trial_status import SKIPPED_WONT_FIT, wont_fit_text
from orchestrator.observe.report.data import (
    STATUS_LABEL,
    ReportData,
    best_trial_id,
    fmt,
    fmt_duration,
    peak_memory,
    rouge_l,
    search_seconds,
    short_id,
)


def header_section(data: ReportData) -> str:
    cfg = data["config"]
    model = (cfg.get("model") or {}).get("name_or_path", "")
    q = cfg.get("quantization") or {}
    lora = cfg.get("lora") or {}
    s = cfg.get("search") or {}
    bits = []
    if model:
        bits.append(
            f"model <b>{html.escape(Path(str(model)).name or str(model))}</b>"
            f" ({html.escape(str((cfg.get('model') or {}).get('task', '')))})"
        )
    if q:
        quant = "4-bit NF4" if q.get("mode") == "4bit" and q.get("quant_type") == "nf4" else q.get("mode")
        bits.append(f"{html.escape(str(quant))}{' + double quant' if q.get('double_quant') else ''} → QLoRA")
    if lora:
        bits.append(
            f"LoRA α={lora.get('alpha')} on {html.escape(', '.join(map(str, lora.get('target_modules') or [])))}"
        )
    if s:
        bits.append(
            f"{s.get('num_samples')} trials · {html.escape(str(s.get('algorithm')))} search · "
            f"{html.escape(str(s.get('scheduler')))} scheduler"
        )
    finished = data["results"].get("finished_at", "")
    when = f'<span class="muted">finished {html.escape(finished[:19].replace("T", " "))} UTC</span>' if finished else ""
    return (
        f'<header><div><div class="eyebrow">qlora-launch · search report</div>'
        f"<h1>{html.escape(data['experiment'])}</h1>"
        f'<p class="sub">{" · ".join(bits)}</p></div>{when}</header>'
        '<div id="report-errors" class="errors" hidden></div>'
    )


def kpi_section(data: ReportData) -> str:
    metric, best, p = data["metric"], data["best"], data["params"]
    trials = data["trials"]
    counts = {k: sum(1 for r in trials if r.get("status") == k) for k in STATUS_LABEL}
    cards = []
    bm = (best.get("metrics") or {}).get(metric)
    cards.append(
        _card(
            f"best {metric}",
            fmt(bm) if bm is not None else "—",
            f"trial {html.escape(str(best.get('trial_id', '—')))} · step {best.get('step', '—')}",
        )
    )
    cards.append(
        _card(
            "trials",
            str(len(trials)),
            f"{counts['COMPLETED']} completed · {counts['STOPPED_EARLY']} stopped early · {counts['ERROR']} failed"
            + (f" · {counts['SKIPPED_WONT_FIT']} won't fit" if counts["SKIPPED_WONT_FIT"] else ""),
        )
    )
    if p.get("trainable_params"):
        pct = float(p.get("trainable_pct") or 0)
        cards.append(
            _card("trainable parameters", f"{pct:.2f}%", f"{p['trainable_params']:,} of {p['total_params']:,}", bar=pct)
        )
    dur = search_seconds(data["results"])
    if dur is not None:
        cards.append(
            _card(
                "search wall time",
                fmt_duration(dur),
                f"sum over trials {fmt_duration(sum(r.get('time_s') or 0 for r in trials))}",
            )
        )
    spend = data["results"].get("spend")
    if spend:
        cards.append(_spend_card(spend))
    mc = data.get("merge_check")
    if mc:
        ok = mc.get("passed")
        cards.append(
            _card(
                "merge check",
                "passed" if ok else "FAILED",
                f"max |Δlogit| {mc.get('max_abs_logit_diff', 0):.1e} ≤ {mc.get('tolerance', 0):.0e}",
                cls="ok" if ok else "bad",
            )
        )
        fid = fidelity_of(mc)
        if fid:
            cards.append(
                _card(
                    "merge fidelity",
                    f"KL {fid.get('kl_mean', 0):.2g}",
                    html.escape(fidelity_text(fid)),
                    cls="ok" if fid.get("passed") else "bad",
                )
            )
    for k, base, merged, lift in test_rows(data.get("results")):
        if merged is not None and base is not None:
            cards.append(
                _card(
                    f"test {k}",
                    f"{merged:.4g}",
                    f"untuned base {base:.4g}, lift {lift:+.4g} on {test_size(data.get('results'))} held-out examples",
                    cls="ok" if (lift or 0) > 0 else "bad",
                )
            )
    return f'<section class="kpis">{"".join(cards)}</section>'


def _spend_card(spend) -> str:
    from orchestrator.core.budget import dollars

    usd, unit = spend.get("usd"), "worker-h" if "worker" in str(spend.get("unit_note")) else "GPU-h"
    value = dollars(usd) if _num(usd) else f"{spend.get('gpu_hours', 0):.3g} {unit}"
    sub = [f"{spend.get('gpu_hours', 0):.3g} {unit}"] if _num(usd) else []
    b = spend.get("budget") or {}
    if b:
        sub.append(f"budget {dollars(b['usd']) if 'usd' in b else '%.3g %s' % (b['gpu_hours'], unit)}")
        if spend.get("stopped_by_budget"):
            sub.append("the budget stopped the search")
    over = bool(b) and spend.get("gpu_hours", 0) > (spend.get("budget_gpu_hours") or float("inf"))
    return _card("spend", value, html.escape(" · ".join(sub)), cls="bad" if over else "")


def _card(label: str, value: str, sub: str = "", bar: Optional[float] = None, cls: str = "") -> str:
    meter = ""
    if bar is not None:
        meter = (
            f'<div class="meter" title="{bar:.2f}% trainable"><span style="width:{max(min(bar, 100), 0.8):.2f}%">'
            f"</span></div>"
        )
    return (
        f'<div class="kpi {cls}"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>{meter}<div class="sub">{sub}</div></div>'
    )


def trial_table_section(data: ReportData) -> str:
    metric, best = data["metric"], best_trial_id(data)
    spend = [k for k in ("spend_gpu_hours", "spend_usd") if any(k in r for r in data["trials"])]
    cols = ["trial_id", *data["param_keys"], metric, "steps", "status", "time_s", *spend, "peak_mem_mb"]
    heads = {"trial_id": "trial", "time_s": "time (s)", "peak_mem_mb": "peak mem (MB)", "steps": "steps"}
    heads.update(spend_gpu_hours="spend (GPU-h)", spend_usd="spend ($)")
    scores = [r.get(metric) for r in data["trials"] if _num(r.get(metric))]
    lo, hi = (min(scores), max(scores)) if scores else (0, 0)
    rows = []
    for r in data["trials"]:
        tid = str(r["trial_id"])
        cells = []
        for c in cols:
            if c == "peak_mem_mb":
                v = peak_memory(data, tid)
            elif c == "steps":
                v = r.get("steps")
                planned = r.get("planned_steps")
                cells.append(
                    f'<td class="num" data-v="{v if v is not None else ""}">{fmt(v)}'
                    f"{f'<span class=muted> / {planned}</span>' if planned else ''}</td>"
                )
                continue
            else:
                v = r.get(c)
            if c == "status":
                why = f' <span class="muted">{html.escape(wont_fit_text(r))}</span>' if v == SKIPPED_WONT_FIT else ""
                cells.append(
                    f'<td data-v="{html.escape(str(v))}"><span class="pill {str(v).lower()}">'
                    f"{html.escape(STATUS_LABEL.get(v, str(v)))}</span>{why}</td>"
                )
            elif c == "trial_id":
                star = ' <span class="star" title="best trial">★</span>' if tid == best else ""
                cells.append(
                    f'<td data-v="{html.escape(tid)}"><span class="sid">{short_id(tid)}</span> '
                    f"{html.escape(tid)}{star}</td>"
                )
            elif c == metric and _num(v):
                share = (v - lo) / (hi - lo) if hi > lo else 1.0
                share = 1 - share if data["mode"] == "min" else share
                cells.append(f'<td class="num metric" data-v="{v}" style="--s:{share:.3f}">{fmt(v)}</td>')
            else:
                dv = v if _num(v) else html.escape(str(v if v is not None else ""))
                cells.append(f'<td class="{"num" if _num(v) else ""}" data-v="{dv}">{html.escape(fmt(v))}</td>')
        rows.append(f'<tr class="{"best" if tid == best else ""}">{"".join(cells)}</tr>')
    th = "".join(
        f'<th data-col="{i}" title="sort by {html.escape(c)}">{html.escape(heads.get(c, c))}</th>'
        for i, c in enumerate(cols)
    )
    return (
        '<section><h2>Trials <span class="hint">click a column to sort</span></h2>'
        f'<div class="card tablewrap"><table id="trial-table" class="sortable"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def best_section(data: ReportData) -> str:
    best, metric, p = data["best"], data["metric"], data["params"]
    if not best:
        return (
            '<section><h2>Best configuration</h2><div class="card empty">No trial reported '
            f"{html.escape(metric)}; nothing was selected.</div></section>"
        )
    m = best.get("metrics") or {}
    params = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(v))}</td></tr>"
        for k, v in (best.get("params") or {}).items()
    )
    shown = [metric] + [
        k for k in ("eval_loss", "loss", "eval_rouge1", "eval_rouge2", "eval_rougeL", "epoch") if k != metric and k in m
    ]
    metrics = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(m.get(k)))}</td></tr>" for k in shown)
    cfg = data["config"]
    fixed = []
    for section, keys in (
        ("lora", ("r", "alpha", "dropout", "target_modules")),
        (
            "training",
            (
                "epochs",
                "max_steps",
                "learning_rate",
                "batch_size",
                "gradient_accumulation_steps",
                "lr_scheduler",
                "warmup_ratio",
            ),
        ),
        ("quantization", ("mode", "quant_type", "double_quant", "compute_dtype")),
    ):
        for k in keys:
            full = f"{section}.{k}"
            v = (best.get("params") or {}).get(full, (cfg.get(section) or {}).get(k))
            if v is not None:
                shown = ", ".join(map(str, v)) if isinstance(v, list) else fmt(v)
                fixed.append(f"<tr><th>{html.escape(full)}</th><td>{html.escape(shown)}</td></tr>")
    share = ""
    if p.get("trainable_params"):
        pct = float(p["trainable_pct"])
        share = (
            f'<div class="share"><div class="label">trainable share (LoRA adapter vs. whole model)</div>'
            f'<div class="meter big"><span style="width:{max(min(pct, 100), 0.8):.2f}%"></span></div>'
            f'<div class="sub"><b>{p["trainable_params"]:,}</b> trainable of <b>{p["total_params"]:,}</b> '
            f"parameters ({pct:.3f}%)</div></div>"
        )
    paths = data["results"].get("paths") or {}
    where = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in paths.items()
        if k in ("adapter", "merged")
    )
    full = html.escape(json.dumps(cfg, indent=2))
    return (
        f'<section><h2>Best configuration <span class="hint">trial {html.escape(str(best.get("trial_id")))}'
        f' at step {best.get("step")}</span></h2><div class="grid3">'
        f'<div class="card"><h3>searched hyperparameters</h3><table class="kv">{params}</table>'
        f'<h3>metrics at the chosen checkpoint</h3><table class="kv">{metrics}</table></div>'
        f'<div class="card"><h3>resolved training config</h3><table class="kv">{"".join(fixed)}</table></div>'
        f'<div class="card">{share}<h3>outputs</h3><table class="kv paths">{where}</table>'
        f"<details><summary>full config.json</summary><pre>{full}</pre></details></div>"
        "</div></section>"
    )


def samples_section(data: ReportData) -> str:
    samples = data["samples"][:8]
    if not samples:
        return ""
    cfg = data["config"].get("data") or {}
    rouge_tokenizer = str((data["config"].get("metrics") or {}).get("rouge_tokenizer") or "auto")
    in_name = html.escape(str(cfg.get("input_column") or "input"))
    ref_name = html.escape(str(cfg.get("target_column") or "reference"))
    cards = []
    for i, s in enumerate(samples, 1):
        score = rouge_l(s.get("prediction", ""), s.get("reference", ""), rouge_tokenizer)
        cards.append(
            f'<div class="sample card"><div class="sample-head"><span class="sid">example {i}</span>'
            '<span class="badge" title="ROUGE-L F1 of this prediction vs. its reference">'
            f"ROUGE-L {score:.2f}</span></div>"
            f'<div class="in"><div class="label">{in_name}</div><p>{html.escape(str(s.get("input", "")))}</p></div>'
            f'<div class="pair"><div class="ref"><div class="label">reference {ref_name}</div>'
            f"<p>{html.escape(str(s.get('reference', '')))}</p></div>"
            f'<div class="pred"><div class="label">generated by the merged best model</div>'
            f"<p>{html.escape(str(s.get('prediction', '')))}</p></div></div></div>"
        )
    return (
        '<section><h2>Sample predictions <span class="hint">eval inputs, reference beside the best model\'s '
        f'generation</span></h2><div class="samples">{"".join(cards)}</div></section>'
    )


def footer_section(data: ReportData, png_names: Sequence[str]) -> str:
    res = data["results"]
    versions = " · ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in (res.get("versions") or {}).items())
    fps = " · ".join(
        f"{html.escape(k)} <code>{html.escape(str(v)[:12])}</code>"
        for k, v in (res.get("data_fingerprints") or {}).items()
    )
    pngs = " · ".join(f'<a href="{n}">{n}</a>' for n in png_names)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"generated {now} from <code>{html.escape(str(Path(data['run_dir']).resolve()))}</code>"]
    if versions:
        lines.append(versions)
    if fps:
        lines.append("data sha256: " + fps)
    if pngs:
        lines.append("static images: " + pngs)
    return "<footer>" + "<br>".join(lines) + "</footer>"
