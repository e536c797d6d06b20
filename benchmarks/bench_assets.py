"""Registered assets (issue 12): registering a 1 GB model folder, and listing 1,000 versions of a model.

Against a real ``tiffin serve`` on 127.0.0.1 whose TIFFIN_HOME (and BENTOML_HOME) sit on the model folder's file
system, as the issue asks (the content store hard-links there):

1. a 1 GB model folder (``--files`` files of random bytes, written once under ``.bench/assets``, kept between runs)
   registered with ``POST /api/models/NAME/versions``: wall time of the request, and the file system's used bytes
   before and after (statvfs), and ``du`` of the folder, TIFFIN_HOME and BENTOML_HOME in one run (a file
   hard-linked in several of them counts once, as on disk);
2. the same folder registered again as another version (same content: stored once);
3. ``--versions`` versions of a small model registered, then ``GET /api/models/NAME/versions`` (what
   ``tiffin model list --name NAME`` asks) timed ``--repeat`` times (median, max), and the CLI's whole run once.

The first registration after the server starts also loads BentoML's modules; a small model is registered before
the measured one so that the figure is the registration itself (the warm-up's time is printed too).
Run: ``.venv/bin/python benchmarks/bench_assets.py`` (``--help`` for options). Results go to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BENCH_DIR, log

from tiffin.testing import serve_tiffin

MIB = 1 << 20


def _model_folder(root: Path, total_mib: int, files: int) -> Path:
    """A folder of ``files`` files of random bytes adding up to ``total_mib`` MiB, made once and then reused
    (a marker beside it says it was written whole)."""
    folder = root / f"model-{total_mib}mib-{files}"
    marker = root / f"{folder.name}.complete"
    if marker.exists() and folder.is_dir():
        return folder
    log(f"writing a {total_mib} MiB model folder ({files} files) under {root}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chunk = os.urandom(MIB)
    for index in range(files):
        with open(folder / f"shard-{index:03d}.bin", "wb") as handle:
            for block in range(total_mib // files):
                # Every block different (the digest reads every byte either way).
                handle.write(chunk[block % 997 :] + chunk[: block % 997])
    (folder / "config.json").write_text('{"kind": "benchmark"}')
    marker.write_text("")
    return folder


def _used_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def _du(*paths: Path) -> int:
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    # One du over both: a file hard-linked in two of them counts once, as on disk.
    done = subprocess.run(["du", "-s", "-B1", "-c", *existing], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip().splitlines()[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="model folder size (default 1024 MiB)")
    parser.add_argument("--files", type=int, default=8, help="files in the model folder (default 8)")
    parser.add_argument("--versions", type=int, default=1000, help="versions to list (default 1000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed list requests (default 20)")
    args = parser.parse_args()

    data_root = BENCH_DIR / "assets"
    data_root.mkdir(parents=True, exist_ok=True)
    folder = _model_folder(data_root, args.size_mib, args.files)
    with tempfile.TemporaryDirectory(prefix="bench-assets-", dir=BENCH_DIR) as tmp:
        home, bento_home = Path(tmp) / "home", Path(tmp) / "bentoml"
        env = {"BENTOML_HOME": str(bento_home), "BENTOML_DO_NOT_TRACK": "True"}
        with (
            serve_tiffin(home, env=env) as server,
            httpx.Client(
                base_url=server.url + "/api", headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=600
            ) as client,
        ):
            small = Path(tmp) / "small" / "model"
            small.mkdir(parents=True)
            (small / "weights.json").write_text("[1, 2, 3]")
            started = time.perf_counter()
            client.post("/models/warm-up/versions", json={"path": str(small)}).raise_for_status()
            warm_up = time.perf_counter() - started

            # 1. The 1 GB folder.
            used_before, du_before = _used_bytes(folder), _du(folder, home, bento_home)
            started = time.perf_counter()
            response = client.post("/models/big/versions", json={"path": str(folder), "type": "custom_model"})
            first = time.perf_counter() - started
            response.raise_for_status()
            used_after, du_after = _used_bytes(folder), _du(folder, home, bento_home)
            # 2. The same content again, as another version.
            started = time.perf_counter()
            client.post("/models/big/versions", json={"path": str(folder)}).raise_for_status()
            again = time.perf_counter() - started
            used_again = _used_bytes(folder)

            # 3. 1,000 versions of a small model, then list them.
            log(f"registering {args.versions} versions of a small model")
            started = time.perf_counter()
            for _ in range(args.versions):
                client.post("/models/many/versions", json={"path": str(small)}).raise_for_status()
            per_version = (time.perf_counter() - started) / max(args.versions, 1)
            timings = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                listed = client.get("/models/many/versions")
                timings.append(time.perf_counter() - started)
                listed.raise_for_status()
            count = len(listed.json())
            cli_env = {**os.environ, "TIFFIN_URL": server.url, "TIFFIN_ADMIN_TOKEN": server.admin_token}
            started = time.perf_counter()
            cli = subprocess.run(
                [sys.executable, "-m", "tiffin.cli", "model", "list", "--name", "many", "-o", "json"],
                capture_output=True,
                text=True,
                env=cli_env,
                timeout=120,
            )
            cli_time = time.perf_counter() - started

    gib = args.size_mib / 1024
    print(f"model folder: {folder} ({args.size_mib} MiB in {args.files} files)")
    print(f"first registration after start (small model, loads BentoML): {warm_up * 1000:.0f} ms")
    print(f"register {gib:.2f} GiB model folder: {first:.3f} s")
    print(f"  file system used bytes: +{(used_after - used_before) / MIB:.1f} MiB (statvfs, whole file system)")
    print(f"  du of the folder, TIFFIN_HOME and BENTOML_HOME together: +{(du_after - du_before) / MIB:.1f} MiB")
    print(
        f"register the same folder again (another version): {again:.3f} s, +{(used_again - used_after) / MIB:.1f} MiB"
    )
    print(f"register a small model: {per_version * 1000:.1f} ms per version ({args.versions} versions)")
    print(
        f"GET /api/models/many/versions ({count} versions): median {statistics.median(timings) * 1000:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms over {args.repeat}"
    )
    print(f"`tiffin model list --name many -o json` whole process: {cli_time:.2f} s (exit {cli.returncode})")


if __name__ == "__main__":
    main()
