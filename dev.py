#!/usr/bin/env python3
"""The two set-up commands, with nothing but Python 3.11+ on the machine.

    python3 dev.py run    start the app (built-in Engage simulator unless ENGAGE_BASE_URL is set)
    python3 dev.py test   run the whole test suite

Each creates .venv/ on first use and reinstalls the project whenever pyproject.toml changes.
Extra arguments go to the app (run) or to pytest (test).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env(extras: str) -> None:
    """Create .venv and install the project with `extras` unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit("engage-signup needs Python 3.11 or newer")
    stamp = VENV / f".installed-{extras or 'app'}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    what = "the app, its test tools and a browser driver" if extras else "the app"
    print(f"Installing {what} into .venv (first time: a minute or two; it is kept) ...", flush=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--editable", target],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        ensure_env("")
        args = [str(PYTHON), "-m", "webapp.serve", *rest]
    else:
        ensure_env("test")
        args = [str(PYTHON), "-m", "pytest", *rest]
    if os.name == "posix":
        # The server (or pytest) takes over this process, so a SIGTERM from a container
        # runtime or supervisor reaches it, and it stops everything it started.
        os.chdir(ROOT)
        os.execv(args[0], args)
    try:  # pragma: no cover - Windows has no exec that keeps the console
        return subprocess.run(args, cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
