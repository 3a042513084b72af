#!/usr/bin/env python3
"""The two set-up commands, with nothing but Python 3.11+ on the machine.

    python3 dev.py run    start the app (built-in Engage simulator unless ENGAGE_BASE_URL is set)
    python3 dev.py test   run the whole test suite
    python3 dev.py image [--base IMAGE] [--tag TAG]
                          build the container image (podman, or docker), with no network

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


def image(argv: list[str]) -> int:
    """Build deploy/container/Containerfile: a wheelhouse first (build/wheels: the project and
    its dependencies at the versions of .venv, made with this machine's own pip), then the
    image from it alone, with no network, in the docker format (which keeps HEALTHCHECK)."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(prog="python3 dev.py image")
    parser.add_argument(
        "--base",
        default="python:3.11-slim",
        help="a Debian-like image with Python 3.11+ and its venv module",
    )
    parser.add_argument("--tag", default="localhost/engage-signup:latest")
    args = parser.parse_args(argv)
    tool = shutil.which("podman") or shutil.which("docker")
    if not tool:
        sys.exit("dev.py image: neither podman nor docker is installed")
    ensure_env("")
    build = ROOT / "build"
    wheels = build / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    frozen = subprocess.run(
        [str(PYTHON), "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    constraints = build / "constraints.txt"
    constraints.write_text(frozen)
    print("Making the wheelhouse (build/wheels) ...", flush=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--wheel-dir", str(wheels), "--constraint", str(constraints), ".", "gunicorn"],
        cwd=ROOT, check=True,
    )  # fmt: skip
    command = [tool, "build", "--network", "none", "--build-arg", f"BASE={args.base}",
               "--file", str(ROOT / "deploy" / "container" / "Containerfile"),
               "--tag", args.tag]  # fmt: skip
    if os.path.basename(tool) == "podman":
        command += ["--format", "docker"]
    print(f"Building {args.tag} on {args.base} ...", flush=True)
    return subprocess.run([*command, str(ROOT)], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if argv and argv[0] == "image":
        return image(argv[1:])
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
