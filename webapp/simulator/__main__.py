"""Run the Engage simulator on its own.

python -m webapp.simulator [--host 127.0.0.1] [--port 8081] [--latency 0.05] [--demo]
                           [--connect-latency 0.04] [--state-file training.json] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from . import DEMO_CONTACTS, Engine, serve
from .engine import DEMO_INCOMPLETE_MOBILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.simulator", description="Engage simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each call takes from its arrival",
    )
    parser.add_argument(
        "--connect-latency",
        type=float,
        default=0.0,
        help="seconds a new connection takes before its first request (handshakes)",
    )
    parser.add_argument(
        "--create-latency",
        type=lambda text: tuple(float(x) for x in text.split(",")),
        default=None,
        help="LOW,HIGH: each create takes a time drawn between these seconds",
    )
    parser.add_argument(
        "--create-limit", type=float, default=5.0, help="seconds before a create answers 504"
    )
    parser.add_argument(
        "--rate-limit", type=float, default=200.0, help="requests per second per key"
    )
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    parser.add_argument("--state-file", default=None, help="keep contacts in this JSON file")
    parser.add_argument("--demo", action="store_true", help="seed contacts for training")
    parser.add_argument(
        "--contact-types",
        type=json.loads,
        default=None,
        help='JSON, e.g. {"Member": {"key": "email", "mandatory": ["email", "firstName"]}}',
    )
    parser.add_argument(
        "--custom-key",
        default="externalId",
        choices=("externalId", "memberNumber"),
        help="what find's customKey searches (the tenant's custom key)",
    )
    parser.add_argument(
        "--public-host",
        default=None,
        help="the host a phone reaches this machine by, for the wallet links it gives",
    )
    parser.add_argument(
        "--until-stdin-closes",
        action="store_true",
        help="stop when standard input closes: when whoever started it is gone, even if killed",
    )
    args = parser.parse_args(argv)
    engine = Engine(
        api_key=args.api_key,
        latency=args.latency,
        connect_latency=args.connect_latency,
        create_latency=args.create_latency,
        create_limit=args.create_limit,
        rate_limit=args.rate_limit,
        state_file=args.state_file,
        contact_types=args.contact_types,
        custom_key=args.custom_key,
    )
    engine.public_host = args.public_host
    if args.demo and not engine.contacts():
        first_type = next(iter(engine.contact_types))  # the deployment's contact type
        key = engine.contact_types[first_type]["key"]
        for contact in DEMO_CONTACTS:
            # The newsletter subscriber stays of its other type where the tenant has one.
            other = contact["contactType"] != "Member" and contact["contactType"] != first_type
            kind = (
                contact["contactType"]
                if other and contact["contactType"] in engine.contact_types
                else first_type
            )
            if key == "mobilePhone" and "mobilePhone" not in contact:
                contact = {**contact, "mobilePhone": DEMO_INCOMPLETE_MOBILE}
            engine.add_contact({**contact, "contactType": kind})
    server = serve(engine, args.host, args.port)
    print(f"Engage simulator listening on {server.url}", flush=True)  # noqa: T201
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.until_stdin_closes:
        threading.Thread(target=_set_on_eof, args=(stop,), daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


def _set_on_eof(stop: threading.Event) -> None:
    """Read standard input to its end, then set `stop`. The end comes when every process that
    holds the other end of the pipe has exited, however it exited. os.read, not sys.stdin: a
    daemon thread blocked inside Python's buffered reader holds its lock, and an interpreter
    that shuts down meanwhile (Ctrl-C reaches every process of the terminal) dies with "Fatal
    Python error: could not acquire lock for <stdin>"."""
    while os.read(sys.stdin.fileno(), 65536):
        pass
    stop.set()


if __name__ == "__main__":
    sys.exit(main())
