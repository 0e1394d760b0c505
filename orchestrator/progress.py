"""Progress of a running search, printed on the driver as Tune reports arrive."""

from __future__ import annotations

import time
from typing import List

from orchestrator.config import RunConfig


def progress_callbacks(cfg: RunConfig) -> List[object]:
    """Tune callbacks that show the search's progress (one plain line per report)."""
    from ray.tune import Callback

    metric, mode = cfg.search.metric, cfg.search.resolved_mode

    class PlainProgress(Callback):
        def __init__(self):
            self.t0 = time.time()
            self.best = None
            self.done = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(metric)
            if isinstance(value, (int, float)) and (
                self.best is None or (value < self.best if mode == "min" else value > self.best)
            ):
                self.best = value
            best = f"{self.best:.4g}" if self.best is not None else "-"
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
            print(f"[{time.time() - self.t0:6.0f}s] trial {trial.trial_id} report {result.get('training_iteration')}"
                  f" step {result.get('step')}: {metric}={shown} (best {best}) "
                  f"[{self.done}/{len(trials)} trials done]", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            print(f"trial {trial.trial_id} failed: see {trial.local_path}", flush=True)

    return [PlainProgress()]
