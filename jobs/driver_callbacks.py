"""Tune callbacks that stay on the driver (the live progress display) through `Tuner.restore`.

Tune pickles its run config into the experiment state; a display holds a terminal and locks that cannot
be pickled. `driver_local` wraps each callback in a proxy that pickles as a key and forwards every hook
to the real callback in this process.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

_DRIVER_CALLBACKS: Dict[int, Any] = {}
_HOOKS = (
    "setup",
    "on_step_begin",
    "on_step_end",
    "on_trial_start",
    "on_trial_restore",
    "on_trial_save",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_recover",
    "on_trial_error",
    "on_checkpoint",
    "on_experiment_end",
)


def driver_local(callbacks: Optional[list]) -> list:
    """Tune callbacks that live on the driver only.

    Tune pickles its run config into the experiment state (for `Tuner.restore`); a progress display
    holds a terminal and locks that cannot be pickled. The proxies pickle as a key and forward each hook
    to the real callback in this process.
    """
    from ray.tune import Callback

    def forward(name):
        def hook(self, *args, **kwargs):
            fn = getattr(_DRIVER_CALLBACKS.get(self.key), name, None)
            return fn(*args, **kwargs) if fn else None

        return hook

    proxy_cls = type(
        "DriverLocalCallback",
        (Callback,),
        {
            "__init__": lambda self, key: setattr(self, "key", key),
            "__getstate__": lambda self: {"key": self.key},
            "__setstate__": lambda self, state: setattr(self, "key", state["key"]),
            **{name: forward(name) for name in _HOOKS},
        },
    )
    out = []
    for cb in callbacks or []:
        _DRIVER_CALLBACKS[id(cb)] = cb
        out.append(proxy_cls(id(cb)))
    return out
