"""The container image's figures (issue 37), on demand: not part of the test suite.

    .venv/bin/python tests/perf/image_bench.py [--image IMAGE] [--base BASE] [--rounds 5]

Needs podman, runc and an image built by `python3 dev.py image` (tests/ops/test_container.py
builds localhost/engage-signup:test on a bookworm base it makes with mmdebstrap). Reported:
- the image's size over its base (target: at most 200 MB);
- the time from `podman run` to the first 200 from /healthz, with no settings (training, the
  README's first command in a container), median of the rounds (target: at most 3 s), beside
  the same run's floor: `podman run` of the base image with a Python that answers at once
  (python3 -m http.server), timed the same way, and the ratio of the two.
Loopback only; every container it starts is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent.parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(ROOT))

import benchmark  # noqa: E402 - save(), free_port()

ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "container" / "containers.conf")}


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True,
                          env=ENV).stdout  # fmt: skip


def size(image: str) -> int:
    return int(json.loads(podman("image", "inspect", image))[0]["Size"])


def until_answered(image: str, command: list[str], path: str, env: dict[str, str]) -> float:
    """Seconds from `podman run` to the first 200 at `path`, the container then removed."""
    port = benchmark.free_port()
    name = f"engage-signup-bench-{port}"
    settings = [f"--env={k}={v}" for k, v in {**env, "PORT": str(port)}.items()]
    started = time.perf_counter()
    subprocess.run(["podman", "run", "--detach", "--rm", "--name", name, "--network", "host",
                    "--read-only", "--tmpfs", "/tmp", *settings, image,
                    *[part.replace("PORT", str(port)) for part in command]],
                   check=True, capture_output=True, env=ENV)  # fmt: skip
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except requests.ConnectionError:
                pass
            if time.perf_counter() - started > 60:
                raise SystemExit(f"image_bench: {image} never answered {path}")
            time.sleep(0.02)
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, env=ENV)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/engage-signup:test")
    parser.add_argument("--base", default="localhost/engage-signup-test-base:bookworm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    app, floor = [], []
    for _ in range(args.rounds):  # alternating, so that the machine's moods fall on both
        floor.append(until_answered(args.base, ["python3", "-m", "http.server", "PORT",
                                                "--bind", "127.0.0.1"], "/", {}))  # fmt: skip
        app.append(until_answered(args.image, [], "/healthz", {}))
    result = {
        "image_mb": size(args.image) / 1e6,
        "base_mb": size(args.base) / 1e6,
        "healthy_s_p50": statistics.median(app),
        "floor_s_p50": statistics.median(floor),
        "rounds": args.rounds,
    }
    result["over_base_mb"] = result["image_mb"] - result["base_mb"]
    result["healthy_over_floor"] = result["healthy_s_p50"] / result["floor_s_p50"]
    print(f"image {result['image_mb']:.0f} MB, base {result['base_mb']:.0f} MB: "
          f"{result['over_base_mb']:.0f} MB over its base (target <= 200 MB)")  # fmt: skip
    print(
        f"podman run to a healthy /healthz, no settings (training), median of {args.rounds}: "
        f"{result['healthy_s_p50']:.2f} s (target <= 3 s); the base's python answering at "
        f"once: {result['floor_s_p50']:.2f} s; ratio {result['healthy_over_floor']:.2f}"
    )
    print(f"each round (s): app {', '.join(f'{t:.2f}' for t in app)}; "
          f"floor {', '.join(f'{t:.2f}' for t in floor)}")  # fmt: skip
    benchmark.save("image", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
