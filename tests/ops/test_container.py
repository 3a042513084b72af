"""The container image (deploy/container, `python3 dev.py image`), built and run for real with
podman on a Debian bookworm base made here with mmdebstrap (no image registry is reachable).
Marked `container`: `python3 dev.py test -m "not container"` leaves it out; CI runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import requests

from tests.components import DEPLOY, ROOT, Nginx, free_port, missing
from tests.conftest import PRODUCTION_SECRET, VALID_FORM, device_cookie, hidden_fields, wait_until

pytestmark = pytest.mark.container

CONTAINERFILE = DEPLOY / "container" / "Containerfile"
BASE = "localhost/engage-signup-test-base:bookworm"
IMAGE = "localhost/engage-signup:test"
CACHE = "/var/tmp/engage-signup-image"  # the base's tarball, kept between runs on one machine


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": str(DEPLOY / "container" / "containers.conf")}
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done


@pytest.fixture(scope="module")
def image():
    """The image, built by the README's command on a bookworm base of Python 3.11 and venv."""
    import shutil

    for tool in ("podman", "runc", "mmdebstrap"):
        if not shutil.which(tool):
            missing(f"{tool} not found (Debian packages podman, runc, mmdebstrap)")
    if podman("info", check=False).returncode != 0:
        missing(f"podman cannot run here: {podman('info', check=False).stderr.strip()[-300:]}")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        os.makedirs(CACHE, exist_ok=True)
        tarball = os.path.join(CACHE, "bookworm-python3.tar")
        if not os.path.exists(tarball):
            made = subprocess.run(
                ["mmdebstrap", "--variant=minbase",
                 "--include=python3,python3-venv,ca-certificates", "bookworm",
                 tarball + ".part.tar"], capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr[-2000:]
            os.replace(tarball + ".part.tar", tarball)
        podman("import", tarball, BASE, timeout=300)
    env = {**os.environ, "CONTAINERS_CONF": str(DEPLOY / "container" / "containers.conf")}
    built = subprocess.run([sys.executable, str(ROOT / "dev.py"), "image", "--base", BASE,
                            "--tag", IMAGE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def run(name: str, *options: str, env: dict | None = None) -> str:
    podman("rm", "--force", name, check=False)
    settings = [f"--env={k}={v}" for k, v in (env or {}).items()]
    podman("run", "--detach", "--name", name, "--network", "host", "--read-only",
           "--tmpfs", "/tmp", *settings, *options, IMAGE)  # fmt: skip
    return name


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def json_lines(name: str) -> list[dict]:
    """Every line the container wrote, standard output and error: each must be JSON."""
    logs = podman("logs", name)
    lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_with_no_settings_it_starts_training_as_a_non_root_user_on_a_read_only_root(image):
    """`podman run` with nothing but a port: training mode on the built-in simulator, its state
    and kept secrets on the image's volume, JSON lines only, healthy by its own HEALTHCHECK."""
    port = free_port()
    volume = "engage-signup-training:/var/lib/engage-signup"
    name = run("engage-signup-training", "--volume", volume, env={"PORT": str(port)})
    try:
        wait_until(lambda: healthy(port), "the container never answered /healthz", seconds=60)
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        inspected = json.loads(podman("image", "inspect", image).stdout)[0]
        config = inspected["Config"]
        assert config["User"] == "engage-signup" and "8000/tcp" in config["ExposedPorts"]
        assert inspected["Healthcheck"]["Test"][-1].count("/healthz") == 1, "kept: docker format"
        assert "/var/lib/engage-signup" in config["Volumes"]
        page = requests.get(f"http://127.0.0.1:{port}/?lang=en", timeout=5)
        assert 'data-outcome="setup-needed"' in page.text and "Training" in page.text
        wrote = podman("exec", name, "sh", "-c", "touch /opt/x 2>&1; echo $?", check=False)
        assert wrote.stdout.strip().endswith("1"), "the root file system is read-only"
        records = json_lines(name)
        said = " ".join(r["message"] for r in records)
        assert "Training mode" in said and "engage-signup is running" in said
        assert {r["level"] for r in records} <= {"INFO", "WARNING"}
    finally:
        podman("rm", "--force", name, check=False)
        podman("volume", "rm", "--force", "engage-signup-training", check=False)


def test_two_containers_on_one_postgresql_behind_nginx_sign_up_once_and_stop_gracefully(
    image, postgres, simulator, engine, tmp_path
):
    """Two containers of the image on one PostgreSQL behind the deploy/ nginx site: a sign-up
    through nginx is created exactly once; `podman stop` while a create is slow lets it finish
    (nothing lost, nothing twice); every line either wrote is JSON."""
    postgres.execute("CREATE SCHEMA containers")
    ports = [free_port(), free_port()]
    settings = {
        "ENGAGE_BASE_URL": simulator.url, "ENGAGE_API_KEY": "container-test-key",
        "SECRET_KEY": PRODUCTION_SECRET, "STAFF_PIN": "47114711", "STORE_EXTERNAL_ID": "101",
        "DATABASE_URL": postgres.url + "?options=-c%20search_path%3Dcontainers",
        "HTTPS": "true", "TRUSTED_PROXIES": "1", "PUBLIC_URL": "https://signup.test",
        "WEB_WORKERS": "1", "WEB_THREADS": "4",
    }  # fmt: skip
    names = [run(f"engage-signup-{n}", env={**settings, "PORT": str(port)})
             for n, port in enumerate(ports)]  # fmt: skip
    nginx = None
    try:
        for port in ports:
            wait_until(lambda port=port: healthy(port), f"port {port} never answered", seconds=60)
        nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{ports[0]}", (f"127.0.0.1:{ports[1]}",))
        till = nginx.client("127.0.0.11")
        till.cookies.set("__Host-device", device_cookie(PRODUCTION_SECRET), domain="127.0.0.1")

        def sign_up(email: str) -> requests.Response:
            page = till.get(nginx.url + "?lang=en", timeout=10)
            data = {**VALID_FORM, "email": email, **hidden_fields(page.text)}
            return till.post(nginx.url, data=data, timeout=60, allow_redirects=False)

        first = sign_up("through.nginx@example.com")
        assert first.status_code == 303 and first.headers["Location"] == "/done"
        assert len(engine.requests("/api/v3/contacts", "POST")) == 1
        podman("stop", "--time", "40", names[1])  # one machine leaves; nginx sends all to the other
        engine.create_limit = 10.0  # Engage's own limit, past the slow create below
        engine.inject("latency", on="create", seconds=6.0)
        answers = []
        sending = threading.Thread(
            target=lambda: answers.append(sign_up("slow.create@example.com"))
        )
        sending.start()
        wait_until(lambda: len(engine.requests("/api/v3/contacts", "POST")) == 2,
                   "the slow create never reached Engage")  # fmt: skip
        podman("stop", "--time", "40", names[0], timeout=120)  # SIGTERM mid-create
        sending.join(timeout=60)
        assert answers and answers[0].status_code == 303, "the sign-up in flight finished: " + str(
            re.findall(r'data-outcome="([^"]+)"', answers[0].text if answers else "")
        )
        assert answers[0].headers["Location"] == "/done"
        emails = [c["attributes"]["email"] for c in engine.contacts()]
        assert sorted(emails) == ["slow.create@example.com", "through.nginx@example.com"]
        import psycopg

        with psycopg.connect(settings["DATABASE_URL"]) as conn:
            outcomes = [row[0] for row in conn.execute("SELECT outcome FROM submissions")]
        assert sorted(outcomes) == ["created", "created"], "each written down as it ended"
        for name in names:
            records = json_lines(name)
            assert any("Listening at" in r["message"] for r in records), name
            assert not re.search(r"through\.nginx|slow\.create", json.dumps(records))
    finally:
        if nginx is not None:
            nginx.stop()
        for name in names:
            podman("rm", "--force", name, check=False)


def test_the_kubernetes_example_matches_the_image():
    """deploy/container/kubernetes.yaml parses, and names the image's own user, port and probe
    paths, a non-root read-only root and a /tmp of its own."""
    import yaml

    containerfile = CONTAINERFILE.read_text()
    uid = int(re.search(r"ARG APP_UID=(\d+)", containerfile).group(1))
    port = int(re.search(r"PORT=(\d+)", containerfile).group(1))
    assert re.search(rf"^EXPOSE {port}$", containerfile, re.M)
    documents = list(yaml.safe_load_all((DEPLOY / "container" / "kubernetes.yaml").read_text()))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    service = next(d for d in documents if d["kind"] == "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid == pod["securityContext"]["runAsGroup"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["terminationGracePeriodSeconds"] > 30, "longer than gunicorn's graceful timeout"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
