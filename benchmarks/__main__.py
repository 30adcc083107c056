"""Run every benchmark: ``python -m benchmarks [--quick]``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    folder = Path(__file__).parent
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_")
    )
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(["--quick"] if quick and _accepts_quick(module) else [])
    return 0


def _accepts_quick(module: object) -> bool:
    return "--quick" in (getattr(module, "__doc__", "") or "")


if __name__ == "__main__":
    raise SystemExit(main())
