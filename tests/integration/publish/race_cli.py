"""`qlora-launch ARGS...` with a cross-process barrier right before latest.json is moved, so that publications
started together reach the pointer together (tests/integration/publish/test_publish_race.py).

    python race_cli.py GATE_DIR N publish RUN --to s3://... [...]

Each process drops a file in GATE_DIR and waits (up to 120 s) until N are there, then moves the pointer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from orchestrator.publish.destination import LatestPointer


def main() -> None:
    gate, n, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    real_move = LatestPointer.move

    def move(self, *a, **kw):
        (gate / str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(gate.iterdir())) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"race_cli: only {len(list(gate.iterdir()))} of {n} reached the pointer")
            time.sleep(0.005)
        return real_move(self, *a, **kw)

    LatestPointer.move = move  # type: ignore[method-assign]
    from orchestrator.cli import cli

    cli.main(args, prog_name="qlora-launch")


if __name__ == "__main__":
    main()
