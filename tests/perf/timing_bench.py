"""Can an answer's time tell a member from a new person on a public screen? (issue 32.2)

    .venv/bin/python tests/perf/timing_bench.py [--people 100] [--threads 4]

The app in this process against the simulator over loopback, whose finds take 30 ms and whose
creates take a time drawn anew between 40 and 400 ms. On the customer's phone (a handoff per
person) and on a kiosk: PEOPLE members (contacts the simulator already has) and PEOPLE new
people, shuffled, sent by a few threads at once. For each channel it prints:
- the best single-threshold accuracy at telling members from new people by the POST's answer
  time (chance is 0.50; the target is at most 0.55), with the same run's baselines: the same
  sign-ups with the release moment switched off (each answer as soon as it has its outcome),
  and the chance floor (the same times with who was a member shuffled: what the best of many
  thresholds scores on a sample of this size when timing tells nothing);
- the share of answers that came after their release moment (slower than the target: the only
  ones that can stand out; the target is under 5 %);
- the wait the release adds per sign-up (p50, p99), and the answer time p50, p99;
- the first ten answers after a start, on a deployment that has timed no create yet, and on a
  process started on a deployment that has (new and members alternating).
Loopback only; everything it starts stops with it.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent.parent))

import benchmark  # noqa: E402 - save(), percentile()

from tests.conftest import TEST_CONSENTS, VALID_FORM, device_cookie, hidden_fields  # noqa: E402
from webapp import create_app  # noqa: E402
from webapp.simulator import Engine, serve  # noqa: E402

SECRET = "timing-bench-secret-0123456789"
FIND_SECONDS = 0.03
CREATE_SECONDS = (0.04, 0.4)


def best_threshold_accuracy(members: list[float], new: list[float]) -> float:
    """The best accuracy any one threshold on the time reaches, either way round."""
    labelled = sorted([(t, 0) for t in members] + [(t, 1) for t in new])
    total, best = len(labelled), 0.0
    below_new = below_members = 0
    for n, (_t, label) in enumerate([(-1.0, None), *labelled]):
        if n:
            below_new += label == 1
            below_members += label == 0
        # "new if slower than this": members below are right, new people above are right
        right = below_members + (len(new) - below_new)
        best = max(best, right / total, (total - right) / total)
    return best


def chance_floor(members: list[float], new: list[float], rounds: int = 400) -> float:
    """What the best threshold scores on these very answer times when who was a member is
    shuffled at random: the accuracy that no timing at all would still show with this many
    people (the best of many thresholds finds some pattern in any sample)."""
    rng = random.Random(1)
    every = members + new
    scores = []
    for _ in range(rounds):
        rng.shuffle(every)
        scores.append(best_threshold_accuracy(every[: len(members)], every[len(members) :]))
    return statistics.median(scores)


class Run:
    def __init__(self, folder: Path, simulator_url: str, engine: Engine):
        self.folder, self.simulator_url, self.engine = folder, simulator_url, engine
        self.addresses = iter(range(1, 10**6))
        self.lock = threading.Lock()

    def app(self, state: str):
        app = create_app({
            "ENGAGE_BASE_URL": self.simulator_url, "ENGAGE_API_KEY": "bench", "SECRET_KEY": SECRET,
            "STAFF_PIN": "4711", "STORE_EXTERNAL_ID": "101", "HTTPS": False,
            "PUBLIC_URL": "http://localhost",
            "STATE_DB": str(self.folder / state), "SUBMIT_LIMIT_PER_DEVICE": 10000,
            "SUBMIT_LIMIT_PER_ADDRESS": 10000, "LOG_LEVEL": "WARNING",
            "CONSENTS": TEST_CONSENTS,
        })  # fmt: skip
        return app

    def client(self, app, mode: str | None = None):
        """A browser on an address of its own (the phone pages' limits are per address): an
        enrolled device in `mode`, or with no device cookie at all (a customer's phone)."""
        client = app.test_client()
        with self.lock:
            n = next(self.addresses)
        client.environ_base["REMOTE_ADDR"] = f"127.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}"
        if mode:
            client.set_cookie("device", device_cookie(SECRET, mode), domain="localhost")
        return client

    def kiosk_signup(self, app, email: str) -> float:
        kiosk = self.client(app, "kiosk")
        page = kiosk.get("/").get_data(as_text=True)
        data = {**VALID_FORM, "email": email, **hidden_fields(page)}
        started = time.perf_counter()
        answer = kiosk.post("/", data=data)
        took = time.perf_counter() - started
        assert answer.status_code == 303 and answer.headers["Location"] == "/done", answer.status
        return took

    def phone_signup(self, app, email: str) -> float:
        till = self.client(app, "staff")
        page = till.get("/").get_data(as_text=True)
        token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                          r'value="([^"]+)"', page).group(1)  # fmt: skip
        till_page = till.post("/handoff/", data={"csrf_token": token}).headers["Location"]
        html = till.get(till_page).get_data(as_text=True)
        link = re.search(r"data-handoff-link[^>]*>([^<]+)<", html).group(1)
        phone = self.client(app)
        phone.get(urlsplit(link).path)
        form = phone.get("/j/").get_data(as_text=True)
        data = {**VALID_FORM, "email": email, **hidden_fields(form)}
        started = time.perf_counter()
        answer = phone.post("/j/", data=data)
        took = time.perf_counter() - started
        assert answer.status_code == 303 and answer.headers["Location"] == "/j/done", answer.status
        return took

    def channel(self, app, channel: str, people: list[tuple[str, str]], threads: int) -> dict:
        times = app.extensions["answer_times"]
        waits: list[float] = []
        real_sleep = times.sleep

        def sleep(seconds: float) -> None:
            with self.lock:
                waits.append(seconds)
            real_sleep(seconds)

        times.sleep = sleep
        answers: dict[str, list[float]] = {"member": [], "new": []}
        queue = list(people)
        signup = self.kiosk_signup if channel == "kiosk" else self.phone_signup

        def worker() -> None:
            while True:
                with self.lock:
                    if not queue:
                        return
                    kind, email = queue.pop()
                took = signup(app, email)
                with self.lock:
                    answers[kind].append(took)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        times.sleep = real_sleep
        every = answers["member"] + answers["new"]
        return {
            "accuracy": best_threshold_accuracy(answers["member"], answers["new"]),
            "chance": chance_floor(answers["member"], answers["new"]),
            # an answer released late never waited: its own time was past the target
            "late_share": (len(every) - len(waits)) / len(every),
            "wait_p50_ms": 1000 * benchmark.percentile(waits or [0.0], 50),
            "wait_p99_ms": 1000 * benchmark.percentile(waits or [0.0], 99),
            "answer_p50_ms": 1000 * statistics.median(every),
            "answer_p99_ms": 1000 * benchmark.percentile(every, 99),
            "member_p50_ms": 1000 * statistics.median(answers["member"]),
            "new_p50_ms": 1000 * statistics.median(answers["new"]),
        }


def people(engine: Engine, tag: str, count: int) -> list[tuple[str, str]]:
    members = [f"member.{tag}.{n}@example.com" for n in range(count)]
    for email in members:
        engine.add_contact({"email": email})
    both = [("member", e) for e in members] + [
        ("new", f"new.{tag}.{n}@example.com") for n in range(count)
    ]
    random.Random(tag).shuffle(both)
    return both


def first_ten(run: Run, app, tag: str) -> list[str]:
    said = []
    for n in range(10):
        kind = "new" if n % 2 == 0 else "member"
        email = f"{kind}.{tag}.first{n}@example.com"
        if kind == "member":
            run.engine.add_contact({"email": email})
        said.append(f"{kind} {1000 * run.kiosk_signup(app, email):.0f}")
    return said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100, help="members, and as many new")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    engine = Engine(latency=FIND_SECONDS, create_latency=CREATE_SECONDS, create_limit=5.0,
                    rate_limit=10000.0)  # fmt: skip
    simulator = serve(engine)
    result: dict = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            run = Run(Path(folder), simulator.url, engine)
            fresh = run.app("fresh.sqlite3")
            result["first ten, a fresh deployment"] = first_ten(run, fresh, "fresh")
            for channel in ("phone", "kiosk"):
                app = run.app(f"{channel}.sqlite3")
                for variant in ("off", "on"):
                    if variant == "off":  # the baseline: each answer as soon as it has one
                        app.extensions["answer_times"].target = lambda: 0.0
                    else:
                        del app.extensions["answer_times"].target
                    crowd = people(engine, f"{channel}-{variant}", args.people)
                    result[f"{channel}, release {variant}"] = run.channel(
                        app, channel, crowd, args.threads
                    )
            restarted = run.app("kiosk.sqlite3")  # a new process on a deployment that has timed
            result["first ten, a process started on a timed deployment"] = first_ten(
                run, restarted, "restarted"
            )
    finally:
        simulator.stop()
    print(f"finds {FIND_SECONDS * 1000:.0f} ms, creates {CREATE_SECONDS[0] * 1000:.0f}-"
          f"{CREATE_SECONDS[1] * 1000:.0f} ms; {args.people} members and {args.people} new per "
          f"row, {args.threads} at once")  # fmt: skip
    header = ("channel", "accuracy", "chance floor", "late", "wait p50", "wait p99",
              "answer p50", "answer p99", "member p50", "new p50")  # fmt: skip
    print(" | ".join(header))
    for name, row in result.items():
        if isinstance(row, dict):
            print(f"{name} | {row['accuracy']:.2f} | {row['chance']:.2f} | "
                  f"{100 * row['late_share']:.1f} % | "
                  f"{row['wait_p50_ms']:.0f} ms | {row['wait_p99_ms']:.0f} ms | "
                  f"{row['answer_p50_ms']:.0f} ms | {row['answer_p99_ms']:.0f} ms | "
                  f"{row['member_p50_ms']:.0f} ms | {row['new_p50_ms']:.0f} ms")  # fmt: skip
    for name, row in result.items():
        if isinstance(row, list):
            print(f"{name} (ms): {', '.join(row)}")
    print(
        "accuracy: the best one threshold on the POST's answer time (chance 0.50, target "
        "<= 0.55); chance floor: the same on these times with member and new shuffled at "
        "random (the median of 400 shuffles: what no timing difference at all scores with "
        "this many people); late: answers slower than their release moment (target < 5 %)"
    )
    benchmark.save("timing", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
