"""What one retrain ended with (locally or as a Ray Job): the decision, why, and the champion after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

SKIPPED = "skipped"


@dataclass
class RetrainOutcome:
    name: str
    decision: str  # skipped | promoted | kept
    reason: str
    fingerprint: str
    record: Optional[Dict[str, Any]] = None
    champion: Optional[Dict[str, Any]] = None  # the pointer after this run
    challenger_score: Optional[float] = None
    champion_score: Optional[float] = None
    metric: Optional[str] = None

    def summary(self) -> str:
        lines = [f"{self.name}: {self.decision} - {self.reason}"]
        if self.champion:
            lines.append(
                f"champion: version {self.champion.get('version')} at {self.champion.get('location')} "
                f"(since {self.champion.get('since')})"
            )
        return "\n".join(lines)
