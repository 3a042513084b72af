"""The app's version (the installed package's) and, where it is known, the commit it runs."""

from __future__ import annotations

import functools
import os
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("engage-signup")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

ROOT = Path(__file__).resolve().parents[2]  # the checkout: webapp/ops/version.py


@functools.cache
def commit() -> str | None:
    """APP_COMMIT when the deployment sets it (a build from an archive), else the checkout's
    own HEAD, read from .git without running git; None when neither says."""
    given = os.environ.get("APP_COMMIT", "").strip()
    if given:
        return given[:40]
    git = ROOT / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:40]
        ref = head[5:]
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for folder in (git, base):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()[:40]
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0][:40]
    except (OSError, IndexError):
        return None
    return None
