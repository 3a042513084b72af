"""Start engage-signup under a production WSGI server.

    python -m webapp.serve [--host 127.0.0.1] [--port 8000] [--workers 2] [--threads 16]

gunicorn with threaded workers (waitress on Windows): an Engage call waits on the network,
so one slow call must never hold up the other tills. A till's keep-alive connection stays
with one worker process, and gunicorn does not spread connections evenly, so each worker has
threads enough for every till of a large store to wait on Engage at once (THREADS); with
fewer, a till's request queues behind a whole Engage round trip of another's.
Configuration comes from the environment (see README); a wrong value stops start-up with one
line naming the key.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import subprocess
import sys

from . import ConfigError, create_app, training
from .ops import background, logs
from .signup.outbox import start_worker
from .simulator.engine import DEMO_WALLET_CARD

log = logging.getLogger("webapp.serve")


WORKERS = 2
THREADS = 16  # measured: 16 beat 8 (queueing) and 32 (more threads, more GIL contention)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="engage-signup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8000")))
    parser.add_argument(
        "--workers", type=int, default=int(env.get("WEB_WORKERS", WORKERS)), help="processes"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env.get("WEB_THREADS", THREADS)),
        help="threads per process",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    if not os.environ.get("ENGAGE_BASE_URL"):
        _start_training_simulator(args.host)
    if sys.platform != "win32":
        _metrics_folder()
    os.environ["WEB_THREADS"] = str(args.threads)  # the app sizes its database pool by it
    try:
        checked = create_app()  # check the configuration once, before any worker starts
        _terms_to_read(checked)
    except ConfigError as exc:
        said = logs.line("webapp.serve", f"engage-signup: configuration error: {exc}",
                         os.environ.get("LOG_FORMAT", "text"), logging.ERROR)  # fmt: skip
        print(said, file=sys.stderr)  # noqa: T201
        return 2
    log_start("server")  # once the settings are known to be right: an error stays one line
    # Workers make their own connections: none of the check's may cross a fork.
    checked.extensions["state"].close()
    checked.extensions["engage"].close()
    url = (
        f"http://{'localhost' if args.host in ('127.0.0.1', '0.0.0.0') else args.host}:{args.port}/"
    )
    # As JSON where the logs are (LOG_FORMAT=json): one journal, one shape, url=… a field.
    running = logs.line("webapp.serve", f"engage-signup is running: open {url}",
                        os.environ.get("LOG_FORMAT", "text"), url=url)  # fmt: skip
    print(running, flush=True)  # noqa: T201
    _serve(args)
    return 0


def _terms_to_read(app) -> None:
    """A required consent must come with terms to read: a `url` in CONSENTS, or terms that
    Engage keeps for it. Checked once here (the only start-up step that asks Engage); when
    Engage cannot be asked now, /readyz keeps asking."""
    from .signup.consents import missing_terms

    with app.app_context():
        missing = missing_terms()
    if missing is None:
        log.warning("consents: Engage did not answer, so their terms are checked by /readyz")
    elif missing:
        raise ConfigError(
            "CONSENTS",
            f"required consent {', '.join(missing)} has no url and Engage keeps no terms for it "
            "(conditionText): give it a url, or its terms in Engage, so that the person can "
            "read what they accept",
        )


def configure_logging(level: str, stream=None, log_format: str | None = None) -> None:
    """Log lines as text (key=value) or JSON (LOG_FORMAT), to stderr (or `stream`)."""
    logs.configure(level, log_format or os.environ.get("LOG_FORMAT", "text"), stream)


def _metrics_folder() -> None:
    """gunicorn's workers are processes: prometheus-client's multiprocess mode keeps each
    worker's values in files of one folder, which every scrape adds up. A folder of this start's
    own (an operator's PROMETHEUS_MULTIPROC_DIR is emptied instead): the last start's files
    would count again. Set before the app is built, as prometheus-client reads it then."""
    import shutil
    import tempfile

    if os.environ.get("METRICS", "true").strip().lower() in ("0", "false", "no", "off"):
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return
    folder = tempfile.mkdtemp(prefix="engage-signup-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    launcher = os.getpid()
    atexit.register(lambda: os.getpid() == launcher and shutil.rmtree(folder, True))


def _worker_exited(server, worker) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def log_start(kind: str) -> None:
    """Each process says what it runs, and which settings it was given (names, not values)."""
    from . import __version__
    from .config import SCHEMA
    from .ops import version

    given = sorted(name for name in SCHEMA if name in os.environ)
    log.info(
        "engage-signup %s (commit %s) %s starting pid=%d settings=%s",
        __version__, version.commit() or "unknown", kind, os.getpid(), ",".join(given) or "-",
    )  # fmt: skip


def _start_training_simulator(host: str = "127.0.0.1") -> None:
    """No Engage configured: run the built-in simulator beside the app (training mode).

    It runs as a process of its own so that every app worker sees the same simulated tenant.
    """
    command = _simulator_command(os.environ, host)
    if os.environ.get("SIMULATOR_STATE_FILE"):
        command += ["--state-file", os.environ["SIMULATOR_STATE_FILE"]]
    if os.environ.get("SIMULATOR_LATENCY"):
        command += ["--latency", os.environ["SIMULATOR_LATENCY"]]
    # Its standard input is a pipe from this process and its server workers: when the last of
    # them is gone, even killed with no chance to clean up, the simulator stops too.
    simulator = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    launcher = os.getpid()
    # Only the launcher stops it: forked server workers must never take it down with them.
    atexit.register(lambda: os.getpid() == launcher and simulator.terminate())
    first_line = simulator.stdout.readline() if simulator.stdout else ""
    if "listening on " not in first_line:
        raise SystemExit("engage-signup: the built-in Engage simulator did not start")
    url = first_line.rsplit(" ", 1)[1].strip().replace("//0.0.0.0:", "//127.0.0.1:")
    # Made once and kept (mode 0600) beside the training state, so that a restart keeps every
    # enrolled device, the manager's PIN and what the outbox holds.
    kept = training.secrets_for(os.environ, create=True)
    training.remember_simulator(os.environ, url)
    os.environ.update(
        ENGAGE_BASE_URL=url,
        ENGAGE_API_KEY=os.environ.get("ENGAGE_API_KEY") or "training",
        STORE_EXTERNAL_ID=os.environ.get("STORE_EXTERNAL_ID") or "101",
        # One key for every worker, kept across restarts: devices stay enrolled.
        SECRET_KEY=os.environ.get("SECRET_KEY") or kept["SECRET_KEY"],
        # Training keeps sign-ups in the outbox too, sealed with a key of its own.
        OUTBOX_KEYS=os.environ.get("OUTBOX_KEYS") or kept["OUTBOX_KEYS"],
        # And shows the manager's view, for every store, with a PIN of its own.
        MANAGER_PINS=os.environ.get("MANAGER_PINS") or kept["MANAGER_PINS"],
        STAFF_PIN=os.environ.get("STAFF_PIN") or "1234",
        # The simulator's wallet card: after a sign-up the till shows its QR code.
        WALLET_CARD_ID=os.environ.get("WALLET_CARD_ID", DEMO_WALLET_CARD),
        TRAINING_MODE="true",
    )
    note = f"Training mode: no ENGAGE_BASE_URL set, using the built-in simulator at {url}"
    _say(note)
    where = training.path(os.environ)
    kept_note = f"Training secrets kept in {where} (readable by you only): a restart keeps "
    _say(kept_note + "enrolled devices, PINs and kept sign-ups")
    _say(f"Device setup (/setup/) staff PIN: {os.environ['STAFF_PIN']}")
    # The simulator's own page, to make Engage fail or slow (also linked from the banner).
    _say(f"Simulator's page (make Engage fail): {url}/_simulator")
    manager_pin = os.environ["MANAGER_PINS"].split(",")[0].rsplit(":", 1)[1]
    _say(f"Manager's view (/manager/) PIN: {manager_pin}")


def _say(message: str) -> None:
    """A line of training's banner, to the console: as JSON where the logs are JSON (a
    container's log holds nothing else)."""
    print(logs.line("webapp.serve", message, os.environ.get("LOG_FORMAT", "text")), flush=True)  # noqa: T201


def _simulator_command(environ, host: str) -> list[str]:
    """The training simulator's command line. Started for real phones (the app on all
    addresses), it listens there too and names PUBLIC_URL's host in its wallet links, so that a
    phone can open the card it scans."""
    from urllib.parse import urlsplit

    command = [sys.executable, "-m", "webapp.simulator", "--port", "0", "--demo"]
    command += ["--until-stdin-closes"]
    command += _simulated_tenant(environ)
    if host not in ("127.0.0.1", "localhost", "::1"):
        command += ["--host", host]
        public = urlsplit(environ.get("PUBLIC_URL", "")).hostname
        if public:
            command += ["--public-host", public]
    return command


def _simulated_tenant(environ) -> list[str]:
    """The simulator's options for a tenant set up as this deployment is configured: the
    contact type, its key and mandatory fields, and what its custom key is. A value that does
    not parse is left to the start-up check, which names it."""
    from .config import SCHEMA

    def setting(name: str):
        parse, default = SCHEMA[name]
        try:
            return parse(environ[name]) if name in environ else default
        except (TypeError, ValueError):
            return default

    contact_type, key = setting("CONTACT_TYPE"), setting("CONTACT_KEY")
    mandatory = sorted({key, *setting("REQUIRED_FIELDS")})
    types = {contact_type: {"key": key, "mandatory": mandatory}}
    if contact_type != "Contact":  # a second type, as tenants have (engage-api.md §3)
        types["Contact"] = {"key": "mobilePhone", "mandatory": ["mobilePhone"]}
    return [
        "--contact-types", json.dumps(types),
        "--custom-key", setting("ENGAGE_CUSTOM_KEY") or "externalId",
    ]  # fmt: skip


def worker_class():
    """gunicorn's gthread worker, but for its quick exit (SIGINT, SIGQUIT: a Ctrl-C reaches every
    process of the terminal, and the master sends SIGQUIT too).

    gunicorn 27.0.1 shuts its thread pool down inside that signal's handler. A signal that lands
    while the worker's main thread is inside the pool's submit (a request arriving) finds the
    pool's lock, which is not reentrant, held by the very thread it interrupted: the handler
    waits on it for ever, and the master kills the worker after graceful_timeout (30 s; seen in
    the test suite). Here the handler only exits: the `with` that holds the lock lets it go as
    the exit unwinds, and the interpreter's own exit ends the pool's threads (each after the
    request it is answering, as shutdown(wait=False) would have let them)."""
    from gunicorn.workers.gthread import ThreadWorker

    class QuickExitThreadWorker(ThreadWorker):  # gunicorn's log: "Using worker: QuickExit…"
        def handle_quit(self, sig, frame):
            # Once: the master's SIGQUIT follows a terminal's SIGINT, and a second exit raised
            # while the first is joining the pool's threads only prints a traceback.
            if getattr(self, "quitting", False):
                return
            self.quitting = True
            self.alive = False
            self.cfg.worker_int(self)
            sys.exit(0)

    return QuickExitThreadWorker


def _serve(args: argparse.Namespace) -> None:
    if sys.platform == "win32":  # pragma: no cover - gunicorn does not run on Windows
        import waitress

        app = create_app()
        background.start(app, start_worker)
        waitress.serve(app, host=args.host, port=args.port, threads=args.threads)
        return

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            options = {
                "bind": f"{args.host}:{args.port}",
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": worker_class(),
                # Longer than the slowest signup can take (find + create + settle + find).
                "timeout": 60,
                # SIGTERM (a container stopped, a unit restarted): requests in flight, a
                # sign-up waiting on Engage's create among them, get this long to finish.
                "graceful_timeout": 30,
                "keepalive": 5,
                "accesslog": None,  # our own request line (no query strings, no personal data)
                "errorlog": "-",
                "proc_name": "engage-signup",
                "child_exit": _worker_exited,
            }
            json_logs = logs.gunicorn_config(os.environ.get("LOG_FORMAT", "text"))
            if json_logs:
                options["logconfig_dict"] = json_logs
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn 25.1+ opens a control socket at one fixed path per user: a second
                # instance on the machine would take it over. We do not use it.
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            log_start("worker")
            app = create_app()
            background.start(app, start_worker)  # this worker's outbox replays, housekeeping
            # What start-up made (Flask, templates, translations, country names, form classes)
            # lives as long as the worker. Frozen, it is left out of garbage collection: a full
            # collection in a worker went from 57 to 9 ms, a pause for every thread in it.
            gc.collect()
            gc.freeze()
            return app

    Server().run()


if __name__ == "__main__":
    sys.exit(main())
