"""Shared helpers for tiffin's benchmarks: work dirs, server processes, wrk runs and memory readings.

Everything here talks to 127.0.0.1 only, and every wait is bounded (a timeout on each poll, each
subprocess and each load run). Servers are started in their own session so that a whole process
tree (a gunicorn master and its workers, a BentoML supervisor and its workers) can be stopped
with one ``os.killpg``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / ".bench"  # gitignored
QUICKSTART_DIR = REPO_ROOT / "examples" / "quickstart"
LOOPBACK = "127.0.0.1"


def log(message: str) -> None:
    """Print a progress line to stderr, so that stdout carries only the results."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Work dir: the quickstart's deployment, laid out as on Azure, with a freshly trained model.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workdir:
    """A copy of the quickstart example with a trained model in it.

    ``root/model/sklearn_regression_model.pkl`` is where score.py looks (it joins
    ``$AZUREML_MODEL_DIR`` with ``model/...``), so ``model_root`` - what ``AZUREML_MODEL_DIR`` is set
    to - is ``root`` itself, just as Azure keeps the registered folder's name under the model dir.
    """

    root: Path
    deployment: Path
    entry_script: Path
    model_root: Path
    request_body: bytes


def prepare_workdir(dest: Path, source: Path = QUICKSTART_DIR, python: str = sys.executable) -> Workdir:
    """Copy the quickstart example into ``dest`` (replacing it) and train its model there.

    The model is trained at run time with ``python`` (the current interpreter by default), since a
    scikit-learn pickle only loads reliably on the version that wrote it.
    """
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("model", "__pycache__", "*.pyc", ".ipynb_checkpoints"))
    proc = subprocess.run(
        [python, str(dest / "train.py"), str(dest / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    pkl = dest / "model" / "sklearn_regression_model.pkl"
    if not pkl.is_file():
        raise RuntimeError(f"train.py did not write {pkl}")
    body = json.dumps(json.loads((dest / "sample-request.json").read_text()), separators=(",", ":"))
    return Workdir(
        root=dest,
        deployment=dest / "blue-deployment.yml",
        entry_script=dest / "onlinescoring" / "score.py",
        model_root=dest,
        request_body=body.encode(),
    )


def local_predictions(workdir: Workdir) -> list[float]:
    """Predict ``sample-request.json`` with the trained model in this process (the reference answer)."""
    import joblib
    import numpy

    model = joblib.load(workdir.model_root / "model" / "sklearn_regression_model.pkl")
    data = numpy.array(json.loads(workdir.request_body)["data"])
    return [float(v) for v in model.predict(data).tolist()]


# --------------------------------------------------------------------------------------------
# Tools: the azmlinfsrv venv and wrk.
# --------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def ensure_azmlinfsrv_venv(venv: Path, python: str | None = None) -> Path:
    """Return the python of a venv holding ``azureml-inference-server-http``; create it if missing.

    azmlinfsrv pins opentelemetry 1.33 and pydantic ~2.12, which clash with tiffin's own venv,
    so it lives apart. When it is created, scikit-learn and numpy are pinned to the versions of the
    current interpreter (when it has them) so both servers unpickle the same model the same way;
    a venv that is already there is reused as is.
    """
    vpy = venv / "bin" / "python"
    if (venv / "bin" / "azmlinfsrv").is_file() and vpy.is_file():
        return vpy
    log(f"creating {venv} (pip install azureml-inference-server-http scikit-learn joblib numpy) ...")
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    pinned = [f"{name}=={v}" if (v := _version(name)) else name for name in ("scikit-learn", "numpy")]
    for pkgs in (
        ["azureml-inference-server-http", *pinned, "joblib"],
        ["azureml-inference-server-http", "scikit-learn", "joblib", "numpy"],
    ):
        proc = subprocess.run(
            [str(vpy), "-m", "pip", "install", "--disable-pip-version-check", "-q", *pkgs],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if proc.returncode == 0:
            return vpy
        log(f"pip install {' '.join(pkgs)} failed:\n{proc.stderr[-2000:]}")
    raise RuntimeError(f"could not install azureml-inference-server-http into {venv}")


def venv_versions(vpy: Path, dists: Sequence[str]) -> dict[str, str | None]:
    """Versions of ``dists`` as installed in the interpreter ``vpy`` (``None`` when absent)."""
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = metadata.version(d)\n"
        "    except metadata.PackageNotFoundError: out[d] = None\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run([str(vpy), "-c", code, *dists], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout)


def ensure_wrk() -> str:
    """Return the path of ``wrk``, installing the Debian package first when missing and root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is not installed: install it (Debian/Ubuntu: `sudo apt-get install -y wrk`).")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        log("running " + " ".join(step))
        subprocess.run(step, env=env, stdout=subprocess.DEVNULL, timeout=900, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("could not install wrk with apt-get; install it by hand and run again.")


def wrk_version(wrk: str) -> str:
    """The first line of ``wrk --version`` (wrk prints its version plus usage, exiting non-zero)."""
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (proc.stdout or proc.stderr).splitlines()[0].strip() if (proc.stdout or proc.stderr) else "?"


# --------------------------------------------------------------------------------------------
# Server processes.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on every interface right now (azmlinfsrv binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def http_request(
    url: str, body: bytes | None = None, timeout: float = 10.0, content_type: str = "application/json"
) -> tuple[int, bytes]:
    """One HTTP request (POST when ``body`` is given); returns ``(status, body)``, HTTP errors included."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server process started in its own session, its output going to a log file.

    Use as a context manager: leaving the block stops the whole process group (SIGTERM, then
    SIGKILL after ``stop_timeout`` seconds).
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.port = port
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None
        self.ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start the command (new session, stdin closed, stdout+stderr to the log file)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self._log.write("$ " + shlex.join(self.cmd) + "\n")
        self._log.flush()
        log(f"starting {self.name}: {shlex.join(self.cmd)} (log: {self.log_path})")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0, path: str = "/") -> float:
        """Poll ``GET path`` until it answers 200; return the seconds it took since start.

        Fails early when the process exits, and after ``timeout`` seconds.
        """
        assert self.proc is not None, "start() first"
        deadline = self._t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready; "
                    f"last log lines:\n{self.tail()}"
                )
            try:
                status, _ = http_request(self.base_url + path, timeout=2.0)
                if status == 200:
                    self.ready_after_s = time.monotonic() - self._t0
                    log(f"{self.name} ready after {self.ready_after_s:.1f}s on {self.base_url}")
                    return self.ready_after_s
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s; last log lines:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log file."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, wait, then SIGKILL. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            # descendants that moved to a session of their own would escape killpg: remember them
            tree = process_tree(proc.pid) if proc.poll() is None else []
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            if pgid is not None and proc.poll() is None:
                _killpg(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.name} ignored SIGTERM for {self.stop_timeout:.0f}s; sending SIGKILL")
            if pgid is not None:
                _killpg(pgid, signal.SIGKILL)  # stragglers of the group (workers), if any
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {proc.pid}) did not exit after SIGKILL")
            for pid in tree[1:]:
                if _alive(pid):
                    log(f"{self.name}: killing leftover descendant {pid}")
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Running, not merely exited and waiting to be reaped (a zombie holds no resources)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def format_cmd(template: str | Sequence[str], **values: object) -> list[str]:
    """Split a command template (a string, shell-quoted, or a list) and fill ``{name}`` fields."""
    parts = shlex.split(template) if isinstance(template, str) else list(template)
    return [p.format(**values) for p in parts]


# --------------------------------------------------------------------------------------------
# Predictions.
# --------------------------------------------------------------------------------------------


def flatten_numbers(value: Any) -> list[float]:
    """All numbers in a JSON value, depth-first (a JSON string holding JSON is decoded first)."""
    if isinstance(value, str):
        try:
            return flatten_numbers(json.loads(value))
        except ValueError as exc:
            raise ValueError(f"not a prediction: {value!r}") from exc
    if isinstance(value, bool):
        raise ValueError(f"not a prediction: {value!r}")
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, list):
        return [n for v in value for n in flatten_numbers(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in flatten_numbers(v)]
    raise ValueError(f"not a prediction: {value!r}")


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest absolute difference between two equally long sequences (``inf`` if lengths differ)."""
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def score(server: Server, body: bytes, timeout: float = 30.0) -> list[float]:
    """POST ``body`` to ``/score`` and return the numbers in the answer; raise unless HTTP 200."""
    status, raw = http_request(server.base_url + "/score", body, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"{server.name} POST /score -> HTTP {status}: {raw[:500]!r}")
    return flatten_numbers(json.loads(raw))


# --------------------------------------------------------------------------------------------
# wrk.
# --------------------------------------------------------------------------------------------

_LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect\":%d,\"read\":%d," ..
    "\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d," ..
    "\"mean_us\":%.3f,\"max_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def _lua_long_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


LIMIT_MARKER = "WRK_LIMIT_REACHED"


def write_wrk_script(
    path: Path, body: bytes, max_requests: int | None = None, headers: Mapping[str, str] | None = None
) -> Path:
    """Write a wrk Lua script that POSTs ``body`` as JSON, and reports its summary as one JSON line.

    With ``max_requests``, each wrk thread stops itself after that many responses and prints
    ``LIMIT_MARKER``. (wrk's main thread still sleeps out ``-d``: :func:`run_wrk` ends it early with
    SIGINT, on which wrk prints its summary as usual.)
    """
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {_lua_long_string(body.decode())}",
        'wrk.headers["Content-Type"] = "application/json"',
        # Spaces inside the brackets: "headers[[[" would open a Lua long string.
        *(f"wrk.headers[ {_lua_long_string(k)} ] = {_lua_long_string(v)}" for k, v in (headers or {}).items()),
    ]
    if max_requests is not None:
        lines += [
            "local responses = 0",
            f"local limit = {int(max_requests)}",
            "response = function(status, headers, body)",
            "  responses = responses + 1",
            "  if responses == limit then",
            "    wrk.thread:stop()",
            f'    io.write("{LIMIT_MARKER}\\n")',
            "    io.flush()",
            "  end",
            "end",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + _LUA_DONE)
    return path


@dataclass
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def errors(self) -> int:
        """Responses with status >= 400 plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.socket_errors.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the raw wrk output)."""
        d = asdict(self)
        d.pop("raw")
        d["errors"] = self.errors
        return d


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(number: str, unit: str) -> float:
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's output: the ``WRK_JSON`` line of our ``done()`` hook, else wrk's own text.

    The text is what ``wrk --latency`` prints: ``Requests/sec:``, the ``Latency Distribution``
    lines, ``Non-2xx or 3xx responses:`` (wrk counts statuses >= 400 there) and ``Socket errors:``.
    """
    m = re.search(r"^WRK_JSON (\{.*\})\s*$", output, re.MULTILINE)
    if m:
        j = json.loads(m.group(1))
        duration_s = j["duration_us"] / 1e6
        return WrkResult(
            requests=j["requests"],
            duration_s=duration_s,
            requests_per_s=j["requests"] / duration_s if duration_s > 0 else 0.0,
            p50_ms=j["p50_us"] / 1e3,
            p90_ms=j["p90_us"] / 1e3,
            p99_ms=j["p99_us"] / 1e3,
            mean_ms=j["mean_us"] / 1e3,
            max_ms=j["max_us"] / 1e3,
            non_2xx=j["status"],
            socket_errors={k: j[k] for k in ("connect", "read", "write", "timeout")},
            raw=output,
        )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if not rps or not total:
        raise ValueError(f"unrecognised wrk output:\n{output}")
    pct = {p: _to_ms(n, u) for p, n, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)}
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s|m|h)\s+\S+\s+([\d.]+)(us|ms|s|m|h)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=_to_ms(total.group(2), total.group(3)) / 1e3,
        requests_per_s=float(rps.group(1)),
        p50_ms=pct.get("50"),
        p90_ms=pct.get("90"),
        p99_ms=pct.get("99"),
        mean_ms=_to_ms(lat.group(1), lat.group(2)) if lat else None,
        max_ms=_to_ms(lat.group(3), lat.group(4)) if lat else None,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else dict.fromkeys(("connect", "read", "write", "timeout"), 0),
        raw=output,
    )


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    duration_s: float,
    threads: int = 1,
    connections: int = 16,
    timeout_s: float = 10.0,
    stop_at_limit: bool = False,
) -> WrkResult:
    """Run ``wrk --latency`` against ``url`` for ``duration_s`` seconds and parse its output.

    With ``stop_at_limit`` (for a script written with ``max_requests``), wrk is interrupted as soon
    as every thread reported its limit, so the run lasts only as long as the requests take. wrk is
    killed if it outlives its duration by more than a minute.
    """
    cmd = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(duration_s + 60, proc.kill)
    watchdog.start()
    try:
        lines, reached = [], 0
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if stop_at_limit and line.strip() == LIMIT_MARKER:
                reached += 1
                if reached >= threads:
                    proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read() if proc.stderr else ""
        rc = proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    if rc != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({rc}):\n{output}\n{stderr}")
    return parse_wrk(output)


def cpu_busy_fraction(interval_s: float = 1.0) -> float:
    """Share of all CPUs' time (0..1) spent busy during ``interval_s``, from ``/proc/stat``."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user..steal; guest time is already counted in user

    total0, idle0 = sample()
    time.sleep(interval_s)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


# --------------------------------------------------------------------------------------------
# Memory.
# --------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from the parent ids in ``/proc/<pid>/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name (2nd field) is in parentheses and may hold spaces: split after it
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemorySample:
    """Memory of a process tree at one moment, in MiB. ``pss`` shares shared pages out fairly."""

    processes: int
    rss_mb: float
    pss_mb: float


def tree_memory(pid: int) -> MemorySample:
    """Sum VmRSS (and Pss) over ``pid`` and its descendants."""
    pids = process_tree(pid)
    return MemorySample(
        processes=len(pids),
        rss_mb=sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
        pss_mb=sum(_pss_kb(p) for p in pids) / 1024,
    )


class PeakSampler:
    """Sample a process tree's RSS in a background thread and keep the peak (a context manager)."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, tree_memory(self.pid).rss_mb)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cli(env: Mapping[str, str], *args: str) -> str:
    """Run a tiffin CLI command (the one beside this Python); its stdout, or RuntimeError with its stderr."""
    tiffin = str(Path(sys.executable).parent / "tiffin")
    done = subprocess.run([tiffin, *args], env=dict(env), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"tiffin {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; interruptions and failures become one log line (servers are
    stopped by the ``with`` blocks on the way out), exit 130 and 1."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
    except (RuntimeError, TimeoutError, subprocess.SubprocessError, AssertionError) as exc:
        log(f"failed: {exc}")
        sys.exit(1)
