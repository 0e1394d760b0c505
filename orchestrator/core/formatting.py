"""Numbers and durations as people read them: shared by the live trial table and the HTML report."""

from __future__ import annotations

import math
from typing import Any, Optional

from typing_extensions import TypeGuard


def is_number(x: Any) -> TypeGuard[float]:
    """A finite int or float (bools excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_number(v: Any, digits: int = 4, sci_from: float = 1e5, sci_digits: int = 2, group_ints: bool = False) -> str:
    """'' for None; floats to `digits` significant digits, in scientific notation (`sci_digits`) below
    1e-3 or from `sci_from` up; ints with thousands separators from 10,000 when `group_ints`."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= sci_from:
            return f"{v:.{sci_digits}e}"
        return f"{v:.{digits}g}"
    if group_ints and isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)


def fmt_duration(s: Optional[float], sep: str = "", missing: str = "?") -> str:
    """Seconds as `4s`, `1m05s`, `1h02m` (`sep` between the parts); `missing` when not a number."""
    if not is_number(s):
        return missing
    total = int(round(max(s, 0)))
    h, rem = divmod(total, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{sep}{m:02d}m"
    if m:
        return f"{m}m{sep}{sec:02d}s"
    return f"{sec}s"


def last_error_line(text: str) -> str:
    """The last meaningful line of a traceback or error text (the exception and its message)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "~", "During handling", "The above exception", "Traceback")):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def error_in_log(path) -> str:
    """The failure line at the end of a trial's worker log (its traceback's last line), or "" when the
    file is absent or holds none. The live line and the summary both take a failure from here."""
    from pathlib import Path

    p = Path(path) if path else None
    if p is None or not p.is_file():
        return ""
    with p.open("rb") as f:
        f.seek(max(0, p.stat().st_size - 8192))
        return last_error_line(f.read().decode("utf-8", errors="replace"))
