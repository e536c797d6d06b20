"""CLI start-up (issue 14): wall time of the real ``tiffin`` console script, in one run, beside Typer's floor.

Starts a real ``tiffin serve`` (fresh home, 127.0.0.1) with one endpoint ``E`` and one deployment ``d`` (a
trivial score.py, created with ``--no-wait``: only its record is read), then runs each command ``--runs`` times
and prints the best and the median wall time of each, with the target:

* ``tiffin --help``
* ``tiffin online-endpoint show -n E -o json``
* ``tiffin online-endpoint list``
* ``tiffin online-deployment show -n d -e E``

Two floors are timed the same way in the same run, so the figures read against what no CLI change can go
under: a bare ``python -c pass``, and a minimal Typer app (one sub-app, one command) printing ``--help`` and
running its command (Typer 0.29 imports pydantic to coerce the option's value: that is in every command's floor).
Each command's exit code and output are checked (``show`` must print E's JSON), so a broken command is not
timed as a fast one. ``--baseline REF`` also times the CLI of a git revision (its ``plugin/`` and ``runners/``,
extracted with ``git archive`` and put first on ``PYTHONPATH``, run as ``python -c 'from tiffin.cli import run;
run()'``), interleaved with this tree's runs, and prints this tree's median over the baseline's.
Run: ``.venv/bin/python benchmarks/bench_cli.py [--runs 15] [--baseline HEAD~1]``. Results go to stdout,
progress to stderr; the load average is printed with them (2 shared CPUs: read the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BENCH_DIR, REPO_ROOT, log

from tiffin.testing import serve_tiffin

TIFFIN = str(Path(sys.executable).parent / "tiffin")  # the console script, as a user runs it

# A Typer app as small as one can be: what Typer + its click cost before tiffin adds anything.
_TYPER_FLOOR = """
import typer
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
sub = typer.Typer(help="A group.", no_args_is_help=True)
app.add_typer(sub, name="sub")
@sub.command("show")
def show(name: str = typer.Option(..., "--name", "-n")) -> None:
    print(name)
@app.callback()
def root() -> None:
    "Root."
app()
"""

_BASELINE_RUN = "from tiffin.cli import run; run()"
_SCORE = "def init():\n    pass\n\n\ndef run(raw_data):\n    return raw_data\n"


def _run_once(command: list[str], env: dict[str, str], expect: str) -> float:
    """Wall seconds of one run of ``command`` (checked: exit 0 and ``expect`` in stdout)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or expect not in done.stdout:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def _baseline_tree(ref: str, dest: Path) -> Path:
    """``ref``'s tiffin package laid out as it imports (``tiffin/`` = plugin/, ``tiffin/runners/`` = runners/)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", ref, "plugin", "runners"], capture_output=True, timeout=120, check=True
    )
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, timeout=120, check=True)
    (dest / "plugin").rename(dest / "tiffin")
    shutil.rmtree(dest / "tiffin" / "runners", ignore_errors=True)
    (dest / "runners").rename(dest / "tiffin" / "runners")
    return dest


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([TIFFIN, *args], capture_output=True, text=True, env=env, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tiffin {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--baseline", metavar="REF", help="also time this git revision's CLI, side by side")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir=BENCH_DIR) as tmp:
        work = Path(tmp)
        (work / "code").mkdir()
        (work / "code" / "score.py").write_text(_SCORE)
        deployment = work / "d.yml"
        deployment.write_text(
            "name: d\nendpoint_name: E\ncode_configuration:\n  code: code/\n  scoring_script: score.py\n"
            "instance_count: 1\n"
        )
        with serve_tiffin(work / "home", env={"BENTOML_DO_NOT_TRACK": "True"}) as server:
            env = {**os.environ, "TIFFIN_URL": server.url, "TIFFIN_ADMIN_TOKEN": server.admin_token}
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's runs read compiled bytecode
            _cli(env, "online-endpoint", "create", "-n", "E")
            _cli(env, "online-deployment", "create", "-f", str(deployment), "--no-wait")
            log(f"timing {args.runs} runs of each command against {server.url}")
            python = [sys.executable, "-c"]
            base_env = dict(env)
            if args.baseline:
                base_env["PYTHONPATH"] = str(_baseline_tree(args.baseline, work / "baseline"))
            cases = [
                ("python -c pass (floor)", [*python, "pass"], "", None),
                ("minimal Typer app --help (floor)", [*python, _TYPER_FLOOR, "--help"], "Usage", None),
                # Typer 0.29 coerces option values with pydantic (typer._adapters): a command pays for it.
                ("minimal Typer app sub show -n E (floor)", [*python, _TYPER_FLOOR, "sub", "show", "-n", "E"], "E",
                 None),
                ("tiffin --help", [TIFFIN, "--help"], "online-endpoint", 0.25),
                ("tiffin online-endpoint show -n E -o json", [TIFFIN, "online-endpoint", "show", "-n", "E", "-o",
                                                              "json"], '"name": "E"', 0.35),
                ("tiffin online-endpoint list", [TIFFIN, "online-endpoint", "list"], '"name": "E"', 0.35),
                ("tiffin online-deployment show -n d -e E", [TIFFIN, "online-deployment", "show", "-n", "d", "-e",
                                                             "E"], '"name": "d"', 0.35),
            ]  # fmt: skip
            for label, command, expect, _target in list(cases):
                if args.baseline and command[0] == TIFFIN:
                    # The same command from the baseline's package; its label marks it for the ratio below.
                    cases.append((f"{label} [{args.baseline}]", [*python, _BASELINE_RUN, *command[1:]], expect, None))
            timings: dict[str, list[float]] = {label: [] for label, *_ in cases}
            for _ in range(2):  # warm the page cache and compile the bytecode (the baseline's too)
                for label, command, expect, _target in cases:
                    _run_once(command, base_env if label.endswith("]") else env, expect)
            for _ in range(args.runs):  # interleaved: a change in the machine's load touches every row alike
                for label, command, expect, _target in cases:
                    timings[label].append(_run_once(command, base_env if label.endswith("]") else env, expect))
            results = [(label, timings[label], target) for label, _command, _expect, target in cases]
            json.loads(_cli(env, "online-endpoint", "show", "-n", "E", "-o", "json"))  # still well-formed

    load = os.getloadavg()
    loads = " ".join(f"{value:.2f}" for value in load)
    print(f"\nCLI start-up, {args.runs} runs each, wall seconds (load average {loads})")
    width = max(len(label) for label, _, _ in results)
    print(f"{'command':<{width}} | best s | median s | target s | met (median)")
    print(f"{'-' * width}-+--------+----------+----------+-------------")
    for label, timings, target in results:
        median = statistics.median(timings)
        goal = f"{target:8.2f}" if target is not None else "       -"
        met = ("yes" if median <= target else "no") if target is not None else "-"
        print(f"{label:<{width}} | {min(timings):6.3f} | {median:8.3f} | {goal} | {met}")
    if args.baseline:
        medians = {label: statistics.median(timings) for label, timings, _ in results}
        print(f"\nmedian of this tree / median of {args.baseline}:")
        for label, _timings, target in results:
            if target is not None:
                print(f"  {label}: {medians[label] / medians[f'{label} [{args.baseline}]']:.2f}x")


if __name__ == "__main__":
    main()
