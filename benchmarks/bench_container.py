"""Benchmark a deployment's OCI image against the lean replica on the host, in one run, side by side.

Measures, for the quickstart deployment (Azure's model-1 score.py and its conda file):

* the base image: present, imported from ``~/.cache/tiffin/images``, or built with mmdebstrap (seconds);
* the deployment's image build: cold (``--no-cache``: every layer, the environment installed by uv from PyPI)
  and warm (the same context again: every layer cached), and the image's size;
* container start to ready: ``docker run`` until ``GET /`` answers 200;
* with ``--bentoml``: the image built with ``bentoml serve`` as its server (build time, size), loaded as
  the container-logfile arm is;
* req/s, p50 and p99 with ``wrk -t1 -c16`` against ``tiffin replica serve`` on the host and three ways of running
  the image: as ``docker run`` runs it (port published on loopback, relayed by dockerd's default userland proxy;
  the replica's output, two lines a request for this score.py, in the engine's log), the same with the output in
  a file inside the container (``TIFFIN_REPLICA_LOG``), and on the host's network (``--network host``, the
  replica bound to loopback itself, output in a file); each alone, rounds alternated, the best round of each
  compared (target: the container at 0.9x the host or better).

Needs a container engine that answers (start ``dockerd`` as root; tests/containers_fixture.py does it for the
tests) and mmdebstrap for a first base image; installs wrk with apt-get when missing and root.

Usage: .venv/bin/python benchmarks/bench_container.py [--duration 10] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _harness import (
    BENCH_DIR,
    LOOPBACK,
    QUICKSTART_DIR,
    Server,
    ensure_wrk,
    free_port,
    log,
    run_main,
    run_wrk,
    score,
    write_wrk_script,
)

from tiffin.containers.base_image import base_image_tag, ensure_base_image
from tiffin.containers.engine import detect
from tiffin.containers.image import CONTAINER_PORT, build_image

DEPLOYMENT = QUICKSTART_DIR / "blue-deployment.yml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per arm, alternated")
    parser.add_argument("--skip-cold", action="store_true", help="skip the --no-cache build")
    parser.add_argument(
        "--bentoml", action="store_true", help="also build the image with `bentoml serve` as its server and load it"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    engine = detect()
    assert engine is not None
    work = BENCH_DIR / "container"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TIFFIN_HOME", str(work / "home"))
    results: dict[str, Any] = {"engine": engine.client, "machine": platform.node(), "cpus": os.cpu_count()}

    present = engine.image_exists(base_image_tag())
    started = time.monotonic()
    base = ensure_base_image(engine)
    results["base_image"] = {"tag": base, "was_present": present, "seconds": round(time.monotonic() - started, 1)}
    if not args.skip_cold:
        cold = build_image(DEPLOYMENT, no_cache=True, log=work / "build.log")
        results["build_cold_s"] = cold["seconds"]
        log(f"cold build: {cold['seconds']} s")
    warm = build_image(DEPLOYMENT, log=work / "build.log")
    image = warm["tag"]
    results.update(image=image, build_warm_s=warm["seconds"], image_size_mb=round(warm["size"] / 1e6, 1))
    log(f"warm build: {warm['seconds']} s; {image}: {results['image_size_mb']} MB")

    images = {"replica": image}
    if args.bentoml:
        bento = build_image(DEPLOYMENT, server="bentoml", log=work / "build.log")
        images["bentoml"] = bento["tag"]
        results.update(bentoml_build_warm_s=bento["seconds"], bentoml_image_size_mb=round(bento["size"] / 1e6, 1))
        log(f"bentoml image: {bento['seconds']} s; {bento['tag']}: {results['bentoml_image_size_mb']} MB")
    body = (QUICKSTART_DIR / "sample-request.json").read_bytes()
    wrk = ensure_wrk()
    script = write_wrk_script(work / "score.lua", body)
    arms: dict[str, list[dict[str, Any]]] = {
        "container": [], "container-logfile": [], "container-hostnet": [], "host": []
    }  # fmt: skip
    if args.bentoml:
        arms["container-bentoml"] = []
    answers: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
        for arm in order:
            port = free_port()
            # `docker run` in the foreground: SIGTERM to the client stops the container, --rm removes it.
            docker_run = [engine.client, "run", "--rm", "--label", "ai.tiffin.managed=true", "--label",
                          "ai.tiffin.bench=1"]  # fmt: skip
            publish = ["--publish", f"{LOOPBACK}:{port}:{CONTAINER_PORT}"]
            logfile = ["--env", "TIFFIN_REPLICA_LOG=/tmp/replica.log"]
            if arm == "container":
                # As `docker run` runs it: the port published on loopback (relayed by dockerd's default userland
                # proxy, docker-proxy), the replica's output (two lines a request here) in the engine's log.
                command = [*docker_run, *publish, image]
            elif arm == "container-logfile":
                # The same, the replica's output in a file inside the container instead.
                command = [*docker_run, *publish, *logfile, image]
            elif arm == "container-bentoml":
                # The same as container-logfile, BentoML's server (`bentoml serve`) in front of the same app.
                command = [*docker_run, *publish, *logfile, images["bentoml"]]
            elif arm == "container-hostnet":
                # The host's network namespace, the replica bound to loopback itself (no relay), output to a file.
                command = [*docker_run, "--network", "host", *logfile, image, "--host", LOOPBACK, "--port", str(port)]
            else:
                command = [sys.executable, "-m", "tiffin.cli", "replica", "serve", "-f", str(DEPLOYMENT),
                           "--host", LOOPBACK, "--port", str(port)]  # fmt: skip
            with Server(arm, command, port, work / f"{arm}.log") as server:
                ready = server.wait_ready(timeout=180)
                answers[arm] = score(server, body)
                score(server, body)  # warm-up
                measured = run_wrk(wrk, server.base_url + "/score", script, args.duration)
                arms[arm].append({"ready_s": round(ready, 2), "rps": measured.requests_per_s,
                                  "p50_ms": measured.p50_ms, "p99_ms": measured.p99_ms,
                                  "non_2xx": measured.non_2xx})  # fmt: skip
                log(f"{arm} round {round_ + 1}: {measured.requests_per_s:.0f} req/s, p99 {measured.p99_ms} ms")
    leftovers = engine.containers({"ai.tiffin.bench": "1"})
    if leftovers:  # none expected: the arm's Server stopped its `docker run`
        engine.run(["rm", "-f", *leftovers], check=False)
    best = {arm: max(rows, key=lambda row: row["rps"]) for arm, rows in arms.items()}
    results.update(
        rounds=arms,
        container_start_to_ready_s=min(row["ready_s"] for row in arms["container"]),
        host_start_to_ready_s=min(row["ready_s"] for row in arms["host"]),
        same_predictions=all(answers[arm] == answers["host"] for arm in arms),
        ratios={arm: round(best[arm]["rps"] / best["host"]["rps"], 3) for arm in arms if arm != "host"},
        load_average=os.getloadavg(),
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if results["same_predictions"] and not leftovers else 1


if __name__ == "__main__":
    run_main(main)
