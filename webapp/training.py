"""Training mode's own secrets, kept across restarts.

With no Engage configured, `python3 dev.py run` makes what a real deployment sets by hand:
SECRET_KEY (cookies: enrolled devices, sessions), a manager PIN and an outbox key. Made anew at
each start, a restart would un-enrol every device and leave the previous run's kept sign-ups
unreadable. So they are made once and kept in a file beside the training state (the instance
folder, or beside STATE_DB when that is set), readable by its owner only (mode 0600). The
operator CLI reads the same file, so `flask --app webapp outbox list` works on a training
instance too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

FILE = "training-secrets.json"


def folder(environ: Mapping[str, str]) -> Path:
    """Where training keeps its state and secrets: beside STATE_DB, else the instance folder."""
    if environ.get("STATE_DB"):
        return Path(environ["STATE_DB"]).resolve().parent
    from flask import Flask

    return Path(Flask("webapp").instance_path)


def path(environ: Mapping[str, str]) -> Path:
    return folder(environ) / FILE


def secrets_for(environ: Mapping[str, str], *, create: bool) -> dict[str, str] | None:
    """The kept secrets (made and saved first when `create` and there are none yet), or None."""
    where = path(environ)
    try:
        kept = json.loads(where.read_text())
    except FileNotFoundError:
        kept = None
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"engage-signup: training secrets in {where} cannot be read: {exc}"
        ) from None
    if kept is not None or not create:
        return kept
    kept = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "OUTBOX_KEYS": Fernet.generate_key().decode(),
        "MANAGER_PINS": f"Training@*:{secrets.randbelow(90_000_000) + 10_000_000}",
    }
    where.parent.mkdir(parents=True, exist_ok=True)
    # Created with mode 0600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(kept, out, indent=2)
    return kept


def remember_simulator(environ: Mapping[str, str], url: str) -> None:
    """The simulator this training run started, for the CLI (which calls no Engage endpoint)."""
    where = path(environ)
    kept = secrets_for(environ, create=True) or {}
    kept["SIMULATOR_URL"] = url
    temporary = where.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(kept, out, indent=2)
    os.replace(temporary, where)


def cli_settings(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Settings for the operator CLI on a training instance (no ENGAGE_BASE_URL set, and a
    training run has kept its secrets here), or None when this is no training instance."""
    if environ.get("ENGAGE_BASE_URL"):
        return None
    kept = secrets_for(environ, create=False)
    if kept is None:
        return None
    settings = {
        "ENGAGE_BASE_URL": kept.get("SIMULATOR_URL") or "http://127.0.0.1:9",
        "ENGAGE_API_KEY": "training",
        "STORE_EXTERNAL_ID": "101",
        "STAFF_PIN": "1234",
        "TRAINING_MODE": "true",
    }
    settings.update({k: v for k, v in kept.items() if k != "SIMULATOR_URL"})
    return {k: v for k, v in settings.items() if not environ.get(k)}
