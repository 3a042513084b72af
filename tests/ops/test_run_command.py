"""The README's run command: with no Engage configured it serves the app on the simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.components import (
    ROOT,
    drain,
    free_port,
    read_until,
    start_server,
    stop,
    wait_until_up,
)
from tests.conftest import VALID_FORM, csrf_token
from tests.processes import ending_with_tests


@pytest.fixture
def launched(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGAGE_", "SECRET_KEY"))}
    env["STATE_DB"] = str(tmp_path / "state.sqlite3")  # not the checkout's instance folder
    process = start_server({**env, "WEB_WORKERS": "2", "WEB_THREADS": "2"})
    yield process
    stop(process)


def enrol_with_the_staff_pin(browser: requests.Session, app_url: str) -> requests.Response:
    """What staff do on /setup/ in training: the printed PIN, store 101, a staff tablet; the
    form page it lands on."""
    setup = browser.get(app_url + "setup/", timeout=5)
    pin = {"pin": "1234", "csrf_token": csrf_token(setup.text)}
    setup = browser.post(app_url + "setup/pin", data=pin, timeout=5)
    device = {"store": "101", "mode": "staff", "csrf_token": csrf_token(setup.text)}
    return browser.post(app_url + "setup/", data=device, timeout=5)


def test_without_engage_settings_the_app_runs_in_training_mode_on_the_simulator(launched):
    simulator_url = read_until(launched, r"built-in simulator at (http://\S+)").group(1)
    page_of_simulator = read_until(launched, r"Simulator's page \(make Engage fail\): (\S+)")
    assert page_of_simulator.group(1) == simulator_url + "/_simulator"
    manager_pin = read_until(launched, r"Manager's view \(/manager/\) PIN: (\d{8})").group(1)
    app_url = read_until(launched, r"open (http://[^\s\"]+)").group(1)
    drain(launched)
    wait_until_up(app_url)
    browser = requests.Session()
    browser.trust_env = False
    page = browser.get(app_url + "?lang=en", timeout=5)
    assert "Training mode: nothing is sent to the membership system" in page.text
    # Staff tablets are enrolled with the staff PIN, which training mode shows.
    assert 'data-outcome="setup-needed"' in page.text
    assert "Training mode: the staff PIN is 1234." in page.text
    page = enrol_with_the_staff_pin(browser, app_url)
    assert 'data-outcome="form"' in page.text
    signup = {**VALID_FORM, "email": "new.member@example.com", "csrf_token": csrf_token(page.text)}
    done = browser.post(app_url, data=signup, timeout=10)
    assert 'data-outcome="created"' in done.text
    assert done.url.endswith("/done")
    stored = requests.get(simulator_url + "/_simulator/contacts", timeout=5).json()
    assert "new.member@example.com" in [c["attributes"]["email"] for c in stored]

    # The seeded training contacts show the other outcomes.
    page = browser.get(app_url, timeout=5)
    again = {**VALID_FORM, "email": "member@example.com", "csrf_token": csrf_token(page.text)}
    # The training member lacks the last name the form gives: it is added.
    assert 'data-outcome="updated"' in browser.post(app_url, data=again, timeout=10).text
    page = browser.get(app_url, timeout=5)
    again = {**again, "email": "newsletter@example.com", "csrf_token": csrf_token(page.text)}
    assert 'data-outcome="promoted"' in browser.post(app_url, data=again, timeout=10).text

    # Training mode shows the manager's view too, for every store.
    login = browser.get(app_url + "manager/", timeout=5)
    signing_in = {"pin": manager_pin, "csrf_token": csrf_token(login.text)}
    browser.post(app_url + "manager/login", data=signing_in, timeout=5)
    overview = browser.get(app_url + "manager/", timeout=5).text
    assert 'data-outcome="manager"' in overview
    counts = re.findall(r'<tr><th scope="row">[^<]+</th><td>(\d+)</td>', overview)
    assert counts == ["1", "1", "1"], "one new member, one made a member, one completed"

    launched.send_signal(signal.SIGTERM)
    launched.wait(timeout=15)
    with pytest.raises(requests.ConnectionError):
        requests.get(simulator_url + "/_simulator/contacts", timeout=2)  # stopped with the app

    # The server's log: our lines in their format, gunicorn's with the worker's process id,
    # and no line that the logging setup failed to format.
    launched.drainer.join(timeout=5)
    log = "".join(launched.lines)
    at = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
    assert re.search(at + r"webapp\.request request method=POST path=/ status=303", log, re.M)
    assert re.search(at + r"webapp\.engage\.client engage call method=POST", log, re.M)
    assert re.search(r"\[\d+\] \[INFO\] Booting worker with pid: \d+", log)
    assert "Logging error" not in log and "new.member@example.com" not in log


def test_the_simulator_stops_when_the_app_is_killed_without_a_chance_to_clean_up(tmp_path):
    """A till's app killed outright (out of memory, kill -9) must not leave a simulated Engage
    running on its own: it would answer a restarted app with the old run's contacts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGAGE_", "SECRET_KEY"))}
    process = start_server({**env, "STATE_DB": str(tmp_path / "state.sqlite3"), "WEB_WORKERS": "1"})
    simulator_url = read_until(process, r"built-in simulator at (http://\S+)").group(1)
    app_url = read_until(process, r"open (http://[^\s\"]+)").group(1)
    drain(process)
    wait_until_up(app_url)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 30  # the server's worker notices its parent is gone first
    while True:
        try:
            requests.get(simulator_url + "/_simulator/contacts", timeout=1)
        except requests.ConnectionError:
            break
        assert time.monotonic() < deadline, "the simulator outlived the app"
        time.sleep(0.2)
    stop(process)


def test_a_server_started_by_a_test_run_ends_when_the_run_is_killed():
    """A test run killed by a CI timeout leaves no PostgreSQL, nginx or app behind: each is
    started through ending_with_tests. Here a stand-in run starts a server and is killed."""
    from tests.processes import SETPRIV

    if not SETPRIV:
        from tests.components import missing

        missing("setpriv (util-linux) not found: servers may outlive a killed test run")
    port = free_port()
    run = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from tests.processes import ending_with_tests\n"
         "server = subprocess.Popen(ending_with_tests([sys.executable, '-m', 'http.server',"
         " '--bind', '127.0.0.1', sys.argv[1]]), stdout=subprocess.DEVNULL,"
         " stderr=subprocess.DEVNULL)\n"
         "print(server.pid, flush=True)\n"
         "time.sleep(60)\n",
         str(port)],
        cwd=str(ROOT),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = int(run.stdout.readline())
    try:
        wait_until_up(f"http://127.0.0.1:{port}/")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _state(server) != "Z":
            assert time.monotonic() < deadline, "the server outlived the test run that started it"
            time.sleep(0.05)
    finally:
        run.stdout.close()
        if _state(server) != "Z":
            os.kill(server, signal.SIGKILL)


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, waiting for its parent to collect it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


def test_a_wrong_setting_stops_start_up_with_one_line_naming_it():
    env = {
        **os.environ,
        "ENGAGE_BASE_URL": "https://acme.staging.voyado.com",
        "CONTACT_KEY": "shoe",
    }
    result = subprocess.run(
        [sys.executable, "-m", "webapp.serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "engage-signup: configuration error: CONTACT_KEY: must be one of "
        "email, mobilePhone, socialSecurityNumber, externalId"
    ]


def test_with_engage_configured_there_is_no_training_banner(client):
    assert "Training mode" not in client.get("/").get_data(as_text=True)


def _training_env(tmp_path) -> dict:
    own = ("ENGAGE_", "SECRET_KEY", "OUTBOX_KEYS", "MANAGER_PINS")  # training makes these
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return {**env, "STATE_DB": str(tmp_path / "state.sqlite3"), "WEB_WORKERS": "1",
            "WEB_THREADS": "2"}  # fmt: skip


def _operator(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The README's operator command line, as an operator types it."""
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    return subprocess.run([flask, "--app", "webapp", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_a_training_restart_keeps_devices_pins_and_kept_signups(tmp_path):
    """What a newcomer set up in training survives a restart: the device stays enrolled, the
    manager PIN is the same, and the sign-up kept while the simulator failed can still be
    opened, by the restarted app and by the operator command line."""
    env = _training_env(tmp_path)
    first = start_server(env)
    try:
        simulator_url = read_until(first, r"built-in simulator at (http://\S+)").group(1)
        kept_in = read_until(first, r"Training secrets kept in (\S+) ").group(1)
        pin = read_until(first, r"Manager's view \(/manager/\) PIN: (\d{8})").group(1)
        app_url = read_until(first, r"open (http://[^\s\"]+)").group(1)
        drain(first)
        wait_until_up(app_url)
        till = requests.Session()
        till.trust_env = False
        page = enrol_with_the_staff_pin(till, app_url)
        fault = {"kind": "status", "status": 503, "on": "any", "times": 10}
        requests.post(simulator_url + "/_simulator/faults", json=fault, timeout=5)
        signup = {**VALID_FORM, "email": "kept.over@example.com",
                  "csrf_token": csrf_token(page.text)}  # fmt: skip
        done = till.post(app_url, data=signup, timeout=15)
        assert 'data-outcome="queued"' in done.text
        ref = re.search(r"\b([A-Z2-7]{5}-[A-Z2-7]{5})\b", done.text).group(1)
    finally:
        stop(first)
    assert oct(os.stat(kept_in).st_mode & 0o777) == "0o600"
    assert kept_in == str(tmp_path / "training-secrets.json")

    second = start_server(env)
    try:
        assert read_until(second, r"Manager's view \(/manager/\) PIN: (\d{8})").group(1) == pin
        app_url = read_until(second, r"open (http://[^\s\"]+)").group(1)
        drain(second)
        wait_until_up(app_url)
        page = till.get(app_url + "?lang=en", timeout=5)
        assert 'data-outcome="form"' in page.text, "still enrolled after the restart"
        shown = _operator(env, "outbox", "show", ref)  # while the training app runs
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["email"] == "kept.over@example.com"
        assert "Traceback" not in shown.stderr
    finally:
        stop(second)


def test_the_operator_command_line_says_a_configuration_error_in_one_line(tmp_path):
    """No Engage settings and no training run here: one line naming the setting."""
    env = _training_env(tmp_path)
    listed = _operator(env, "outbox", "list")
    assert listed.returncode != 0
    assert "Traceback" not in listed.stderr
    assert listed.stderr.strip().splitlines() == [
        "Error: configuration error: ENGAGE_BASE_URL: not set. Set it to your Engage tenant "
        "(https://<tenant>.voyado.com), or start with `python3 dev.py run` to use the built-in "
        "Engage simulator"
    ]


def test_a_required_consent_with_nothing_to_read_stops_start_up(tmp_path):
    """The shipped default consent has no url: where Engage keeps no terms for it either, the
    person would tick "I accept the membership terms" with nothing to read. One line names
    CONSENTS; with terms in Engage (or a url) the same start-up goes on."""
    from webapp.simulator import Engine, serve

    bare = [{"id": "memberConsent", "name": "Member terms", "metaData": {"conditionText": {}}}]
    simulator = serve(Engine(consents=bare))
    try:
        env = {**os.environ, "ENGAGE_BASE_URL": simulator.url, "ENGAGE_API_KEY": "key",
               "SECRET_KEY": "s" * 32, "STAFF_PIN": "4711", "STATE_DB":
               str(tmp_path / "state.sqlite3")}  # fmt: skip
        env.pop("CONSENTS", None)
        result = subprocess.run([sys.executable, "-m", "webapp.serve"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        simulator.stop()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "engage-signup: configuration error: CONSENTS: required consent memberConsent has no "
        "url and Engage keeps no terms for it (conditionText): give it a url, or its terms in "
        "Engage, so that the person can read what they accept"
    )


QUIT_WHILE_SUBMITTING = """
import signal, sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from webapp.serve import worker_class

worker = object.__new__(worker_class())
worker.tpool = ThreadPoolExecutor(4)
worker.cfg = SimpleNamespace(worker_int=lambda w: None)
worker.tpool.submit(print, "a request answered", flush=True).result()
try:
    with worker.tpool._shutdown_lock:  # the main thread inside submit, as a request arrives
        worker.handle_quit(signal.SIGINT, None)  # Ctrl-C lands there
except SystemExit:
    print("exited", flush=True)
worker.handle_quit(signal.SIGQUIT, None)  # the master's SIGQUIT, while the exit goes on
print("the second signal is let be", flush=True)
"""


def test_a_quit_signal_while_a_request_is_handed_to_a_thread_ends_the_worker():
    """The cause of a Ctrl-C that took 30 s (gunicorn's graceful_timeout) in the suite: the
    worker's quick-exit handler waited on its thread pool's lock, held by the main thread it
    interrupted. The worker the server runs exits at once instead, and once: the master's
    SIGQUIT after the terminal's SIGINT raised a second exit inside the first (a traceback in
    the suite)."""
    result = subprocess.run([sys.executable, "-c", QUIT_WHILE_SUBMITTING], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout.splitlines() == [
        "a request answered", "exited", "the second signal is let be"
    ], result.stderr  # fmt: skip
    assert result.returncode == 0


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_a_terminate_stops_everything_without_a_fatal_error(tmp_path, signal_name):
    """Ctrl-C in a terminal signals every process of it: the server, its workers and the
    training simulator. All stop, and none dies with 'Fatal Python error' (the simulator's
    stdin thread used to)."""
    env = {**_training_env(tmp_path), "PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        ending_with_tests([sys.executable, "-m", "webapp.serve"]), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    app_url = read_until(process, r"open (http://[^\s\"]+)").group(1)
    drain(process)
    wait_until_up(app_url)
    os.killpg(process.pid, getattr(signal, signal_name))  # as a terminal does, to all of them
    # Short of gunicorn's graceful_timeout (30 s), after which it kills a worker that has not
    # gone: a Ctrl-C that took that long was a worker stuck in its own signal handler (above).
    assert process.wait(timeout=25) in (0, -signal.SIGINT, 130)
    process.drainer.join(timeout=10)
    process.stdout.close()
    output = "".join(process.lines)
    assert "Fatal Python error" not in output and "Traceback" not in output, output[-2000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(app_url + "healthz", timeout=2)
