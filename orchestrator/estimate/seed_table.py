"""The share of LoRA trainable parameters on the shipped architectures, beside the seed article's table.

The seed's figures are not what peft creates for any real set of target modules; `seed_formula_share`
is the formula that reproduces them, and `share_table` gives ours (attention q,v and all-linear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, Union

from orchestrator.estimate.shapes import SHIPPED_ARCHS, LoraCount, count_lora, inspect_model, load_model_config

# The seed article's table (percent of trainable parameters), quoted as printed there.
TABLE_RANKS = (1, 2, 4, 8, 16)
TABLE_ARCHS = ("llama-2-7b", "llama-2-13b", "llama-2-70b", "falcon-180b")
SEED_TABLE = {
    1: (0.002, 0.002, 0.001, 0.000),
    2: (0.005, 0.004, 0.002, 0.001),
    4: (0.010, 0.007, 0.003, 0.002),
    8: (0.019, 0.014, 0.006, 0.004),
    16: (0.038, 0.028, 0.012, 0.008),
}


def seed_formula_share(r: int, nominal_params: float) -> float:
    """The seed's figures: LoRA on one sqrt(N) x sqrt(N) matrix, 2*r*sqrt(N) parameters, over N
    (N = the size in the model's name). Reproduces all 20 cells of its table; no real set of modules does.
    """
    return 2 * r * math.sqrt(nominal_params) / nominal_params


@dataclass
class ShareTable:
    """Share of trainable parameters per rank and architecture: the seed's, its formula, and ours."""

    ranks: Tuple[int, ...]
    archs: Tuple[str, ...]
    total_params: Dict[str, int]
    target_sets: Dict[str, Dict[str, Union[str, List[str]]]]  # label -> arch -> target_modules
    ours: Dict[str, Dict[str, Dict[int, LoraCount]]]  # label -> arch -> r -> count

    def to_json(self) -> Dict[str, Any]:
        rows = []
        for r in self.ranks:
            for i, a in enumerate(self.archs):
                row = {
                    "rank": r,
                    "arch": a,
                    "total_params": self.total_params[a],
                    "seed_percent": SEED_TABLE.get(r, (None,) * 4)[i] if a in TABLE_ARCHS else None,
                    "seed_formula_percent": 100 * seed_formula_share(r, SHIPPED_ARCHS[a].nominal_params),
                }
                for label, by_arch in self.ours.items():
                    c = by_arch[a][r]
                    row[label] = {
                        "target_modules": self.target_sets[label][a],
                        "trainable_params": c.trainable,
                        "percent": 100 * c.share,
                    }
                rows.append(row)
        return {
            "ranks": list(self.ranks),
            "archs": list(self.archs),
            "rows": rows,
            "seed_formula": "100 * 2*r*sqrt(N) / N, N = nominal size (7e9, 13e9, 70e9, 180e9)",
            "share_definition": "trainable / (base + adapter), as peft's print_trainable_parameters",
        }


def share_table(ranks: Sequence[int] = TABLE_RANKS, archs: Sequence[str] = TABLE_ARCHS) -> ShareTable:
    """LoRA trainable-parameter share for the shipped architectures, for attention q,v and all-linear."""
    shapes = {}
    for a in archs:
        mc, src = load_model_config(a)
        shapes[a] = inspect_model(mc, None, a, src)
    target_sets = {
        "attention_qv": {a: list(SHIPPED_ARCHS[a].attention_targets) for a in archs},
        "all_linear": {a: "all-linear" for a in archs},
    }
    ours = {
        label: {a: {r: count_lora(shapes[a], r, t[a]) for r in ranks} for a in archs}
        for label, t in target_sets.items()
    }
    return ShareTable(tuple(ranks), tuple(archs), {a: s.total_params for a, s in shapes.items()}, target_sets, ours)
