"""``tiffin online-endpoint rollout``: a guarded rollout of an endpoint's traffic to a new deployment (issue 17).

``rollout -n E --to green --steps 5,25,50,100 --step-interval 60s`` starts one (with ``--mirror 20`` a mirror
phase and its agreement report first); ``rollout show|pause|resume|abort -n E`` follow and steer it. The server
does the work (tiffin.rollout.driver); these commands only call the REST API. See docs/rollouts.md.
"""

# No `from __future__ import annotations`: Typer reads the options' types from the annotations.

from typing import Annotated

import typer

from tiffin.cli.online import online_endpoint_app
from tiffin.cli.options import OutputOpt, QueryOpt
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import connect
from tiffin.errors import SpecError

__all__ = ["online_endpoint_app", "rollout_app"]

rollout_app = typer.Typer(
    help="Shift an endpoint's traffic to a deployment in guarded steps (rolled back when a guard fails).",
    invoke_without_command=True,
)
online_endpoint_app.add_typer(rollout_app, name="rollout")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the endpoint.")]


@rollout_app.callback()
def rollout_start(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Name of the endpoint.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The deployment that takes the traffic.")] = None,
    steps: Annotated[str, typer.Option("--steps", help="Percentages to it, step by step, ending with 100.")] = (
        "5,25,50,100"
    ),
    step_interval: Annotated[str, typer.Option("--step-interval", help="How long each step is judged.")] = "60s",
    max_error_rate: Annotated[str, typer.Option("--max-error-rate", help="Its error rate limit (5xx).")] = "1%",
    max_p99_ratio: Annotated[float, typer.Option("--max-p99-ratio", help="Its P99 over the current's.")] = 1.5,
    min_requests: Annotated[
        int, typer.Option("--min-requests", help="Requests it serves before a step is judged.")
    ] = 200,
    mirror: Annotated[int, typer.Option("--mirror", help="Mirror this % to it first (0: no mirror phase).")] = 0,
    mirror_duration: Annotated[str, typer.Option("--mirror-duration", help="How long the mirror phase lasts.")] = "5m",
    tolerance: Annotated[float, typer.Option("--tolerance", help="Numbers in JSON answers this close agree.")] = 1e-6,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Start a guarded rollout: `rollout -n E --to green`; then `rollout show|pause|resume|abort -n E`."""
    if ctx.invoked_subcommand is not None:
        return
    if name is None or to is None:
        raise SpecError("start a rollout with `tiffin online-endpoint rollout -n ENDPOINT --to DEPLOYMENT`")
    options = {
        "steps": steps,
        "step_interval": step_interval,
        "max_error_rate": max_error_rate,
        "max_p99_ratio": max_p99_ratio,
        "min_requests": min_requests,
        "mirror": mirror,
        "mirror_duration": mirror_duration,
        "tolerance": tolerance,
    }
    with connect() as client:
        emit(client.online_endpoints.rollout(name, to, **options), output, query)


@rollout_app.command("show")
def rollout_show(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """The rollout: status, step, guard readings, agreement report of the mirror phase, why it stopped."""
    with connect() as client:
        emit(client.online_endpoints.get_rollout(name), output, query)


@rollout_app.command("pause")
def rollout_pause(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Hold the rollout at its step; traffic stays as it is."""
    with connect() as client:
        emit(client.online_endpoints.pause_rollout(name), output, query)


@rollout_app.command("resume")
def rollout_resume(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Go on from the paused step (judged afresh)."""
    with connect() as client:
        emit(client.online_endpoints.resume_rollout(name), output, query)


@rollout_app.command("abort")
def rollout_abort(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Stop the rollout and put the traffic back as it was before it."""
    with connect() as client:
        emit(client.online_endpoints.abort_rollout(name), output, query)
