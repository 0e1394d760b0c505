"""Small helpers shared by the bench/ scripts: the machine, a plain table, JSON under bench/out/.

Benchmarks are scripts, not tests: each prints one table and writes its figures as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored


def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    info: Dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        with open("/proc/meminfo") as f:
            info["ram_gib"] = round(int(f.readline().split()[1]) / 1024**2, 1)
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    try:
        info["git"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
            or None
        )
    except OSError:
        info["git"] = None
    return info


def cuda_available() -> bool:
    """Whether torch sees a GPU (False where torch is not installed)."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: List[str]) -> str:
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    out += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    t = s.replace(",", "").replace("%", "").replace("x", "").replace("GiB", "").replace("MiB", "").strip()
    try:
        float(t)
        return True
    except ValueError:
        return False


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(f"\n{title}\n{format_table(headers, rows)}", flush=True)


def args_json(args) -> Dict[str, Any]:
    """An argparse namespace as JSON values (paths as strings), for write_json."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_json(name: str, data: Dict[str, Any], path: Optional[Path] = None) -> Path:
    """Write `data` (with the machine and command line added) to bench/out/NAME.json or `path`."""
    path = Path(path) if path else OUT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def gib(n: Optional[float]) -> str:
    return "" if n is None else f"{n / 1024**3:.2f}"


def mib(n: Optional[float]) -> str:
    return "" if n is None else f"{n / 1024**2:.1f}"


class GpuSampler:
    """GPU utilisation and memory in use, sampled on a thread (NVML, else nvidia-smi); a no-op without a GPU.

    s = GpuSampler().start(); ...; figures = s.stop()  # {} where there is no NVIDIA GPU
    """

    def __init__(self, interval_s: float = 0.5, index: int = 0):
        self.interval_s, self.index = interval_s, index
        self.util: List[float] = []
        self.mem: List[int] = []
        self._stop = None
        self._thread = None

    def _read(self):
        try:
            import pynvml

            if not getattr(self, "_nvml", None):
                pynvml.nvmlInit()
                self._nvml = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return (
                float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu),
                int(pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used),
            )
        except Exception:  # no NVML binding or no driver: try the command line
            out = subprocess.run(
                [
                    "nvidia-smi",
                    f"--id={self.index}",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            util, used = out.stdout.strip().split(",")[:2]
            return float(util), int(float(used) * 1024**2)

    def start(self) -> "GpuSampler":
        import shutil
        import threading

        try:
            import torch

            if not torch.cuda.is_available():
                return self
        except ImportError:
            return self
        if shutil.which("nvidia-smi") is None:
            try:
                import pynvml  # noqa: F401
            except ImportError:
                return self
        self._stop = threading.Event()

        def loop():
            while not self._stop.is_set():
                try:
                    u, m = self._read()
                    self.util.append(u)
                    self.mem.append(m)
                except Exception:
                    return
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Dict[str, Any]:
        if self._thread is None:
            return {}
        self._stop.set()
        self._thread.join(timeout=15)
        if not self.util:
            return {}
        return {
            "gpu_util_mean": sum(self.util) / len(self.util),
            "gpu_util_max": max(self.util),
            "gpu_mem_used_max_bytes": max(self.mem),
            "gpu_samples": len(self.util),
        }
