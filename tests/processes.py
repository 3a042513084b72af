"""Servers a test run starts end with it, even when the run itself is killed (a CI timeout,
kill -9) and its fixtures never stop them. Left running they hold ports and CPU and skew the
next run and any benchmark on the machine.

Each is started through util-linux's `setpriv --pdeathsig`, which asks Linux to signal the
process when the thread that started it ends. Elsewhere (no setpriv) commands run unchanged.
Start them from the main thread: a helper thread that ends would take its servers with it.
"""

from __future__ import annotations

import shutil
import sys

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def ending_with_tests(command: list[str], signal_name: str = "TERM") -> list[str]:
    """`command`, started so that it gets `signal_name` when the test run is gone."""
    if not SETPRIV:
        return list(command)
    return [SETPRIV, "--pdeathsig", signal_name, "--", *command]
