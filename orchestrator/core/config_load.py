"""Loading a YAML config: `--set` overrides, path resolution, validation, readable error lines."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.core.config import RunConfig, _set_dotted
from orchestrator.core.errors import UserError, did_you_mean
from orchestrator.core.pricing import resolve_prices


def parse_overrides(pairs: List[str]) -> Dict[str, Any]:
    """`--set a.b=value` pairs as {dotted key: YAML-parsed value}."""
    out: Dict[str, Any] = {}
    bad = []
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            bad.append(f"--set '{pair}': expected section.key=value, e.g. --set training.learning_rate=1e-4")
            continue
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    if bad:
        raise UserError(*bad)
    return out


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (plain YAML would silently keep the last value)."""

    def __init__(self, key: Any, first_line: int, second_line: int, where: str):
        super().__init__(f"key '{key}' appears twice{where}: at line {first_line} and line {second_line}")
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key repeated in one mapping is an error naming it and both lines."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                where = (
                    ""
                    if node.start_mark.line == 0 and node.start_mark.column == 0
                    else (f" in the mapping starting at line {node.start_mark.line + 1}")
                )
                raise DuplicateKeyError(key, seen[key], line, where)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_raw(path: Union[str, Path]) -> Dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{path}' does not exist; pass the path of a YAML config (see examples/).")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKeyError as e:
        raise UserError(f"{path}: {e}. Keep one of them (YAML would silently use the last).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(
            f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}. Fix the syntax and retry."
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the config as UTF-8.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections (model:, data:, ...).")
    return data


def load_config(
    path: Union[str, Path], overrides: Optional[List[str]] = None, base_dir: Optional[Path] = None, prices: bool = True
) -> RunConfig:
    """Load a YAML config, apply `--set` overrides, validate.

    Relative data and model paths are resolved against the config file's folder when they exist
    there, else against the current directory, so a config works from anywhere. With `prices`,
    resources.instance_prices is turned into price_per_gpu_hour (orchestrator.core.pricing).

    Raises:
        UserError: every problem found, each naming its YAML key.
    """
    data = load_raw(path)
    for key, value in parse_overrides(overrides or []).items():
        _set_dotted(data, key, value)
    out = data.setdefault("output", {}) if isinstance(data.get("output", {}), dict) else None
    if out is not None and not out.get("experiment"):
        out["experiment"] = re.sub(r"[^A-Za-z0-9._-]", "-", Path(path).stem)
    cfg = validate_dict(data)
    base = Path(path).resolve().parent if base_dir is None else base_dir
    cfg = resolve_paths(cfg, base)
    # prices=False: a command that never counts spend (estimate, history) needs no cluster YAML to price
    return resolve_prices(cfg, base) if prices else cfg


def validate_dict(data: Dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(*format_validation_errors(e, data)) from None


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    def fix(p: Optional[str]) -> Optional[str]:
        if not p or "://" in p or p.startswith("hub:") or os.path.isabs(p):
            return p
        cand = base / p
        if cand.exists() or not Path(p).exists():
            return str(cand.resolve()) if cand.exists() else p
        return str(Path(p).resolve())

    data = cfg.to_json()
    for k in ("train", "eval", "test"):
        data["data"][k] = fix(data["data"][k])
    if data.get("retrain") and data["retrain"].get("eval_data"):
        data["retrain"]["eval_data"] = fix(data["retrain"]["eval_data"])
    mp = data["model"]["name_or_path"]
    if mp.startswith((".", "/")) or (base / mp).exists():
        data["model"]["name_or_path"] = fix(mp)
    return RunConfig.model_validate(data)


_FIXES = {
    "greater_than": "use a value above {gt}",
    "greater_than_equal": "use a value of at least {ge}",
    "less_than": "use a value below {lt}",
    "less_than_equal": "use a value of at most {le}",
}


def format_validation_errors(err: ValidationError, data: Dict[str, Any]) -> List[str]:
    """One line per pydantic error: `key.path`: what is wrong (got X). How to fix it."""
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not str(x).startswith(("function-after", "function-plain"))]
        # Union members add their type names to the location; drop them for readability.
        loc = [x for x in loc if x not in ("list[str]", "literal['all-linear']")]
        key = ".".join(loc)
        etype = e["type"]
        if etype == "extra_forbidden":
            parent = loc[:-1]
            choices = _fields_at(parent)
            hint = did_you_mean(loc[-1], choices)
            where = ".".join(parent) or "the top level"
            lines.append(f"`{key}`: unknown key in {where}.{hint or ''} Known keys: {', '.join(sorted(choices))}.")
            continue
        if etype == "missing":
            lines.append(f"`{key}`: required but missing; add it to the config.")
            continue
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = ""
        if "input" in e and not isinstance(e["input"], dict) and etype not in ("value_error",):
            got = f" (got {e['input']!r})"
        fix = _FIXES.get(etype, "").format(**(e.get("ctx") or {}))
        end = "" if (msg + got).endswith((".", "?")) else "."
        lines.append(f"`{key or 'config'}`: {msg}{got}{end}" + (f" Fix: {fix}." if fix else ""))
    # Literal unions report once per member; keep each line once.
    return list(dict.fromkeys(lines))


def _fields_at(loc: List[str]) -> List[str]:
    model: Any = RunConfig
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        sub = _model_in(ann)
        if sub is None:
            return []
        model = sub
    return list(getattr(model, "model_fields", {}).keys())


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _model_in(arg)
        if m is not None:
            return m
    return None


def describe_space(cfg: RunConfig) -> List[str]:
    """Human-readable lines for the search space (used by --dry-run and validate)."""
    lines = []
    for key, d in cfg.search.space.items():
        if d.type == "choice":
            lines.append(f"{key}: choice {d.values}")
        else:
            lines.append(f"{key}: {d.type}({d.low:g}, {d.high:g})")
    return lines
