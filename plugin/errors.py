"""One exception hierarchy for tiffin, grouped by cause.

Every message says what to do next. HTTP status codes and CLI exit codes are derived from the class
in exactly one place each (:func:`http_status` here, the CLI's error handler), so lower layers only
raise.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadRequestError",
    "CapacityError",
    "ClientDisconnectedError",
    "ConflictError",
    "EnvironmentBuildError",
    "InterpreterNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "RunnerError",
    "RunnerLoadError",
    "ScoringError",
    "SpecError",
    "StoreError",
    "TiffinError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "http_status",
]


class TiffinError(Exception):
    """Base class of every error tiffin raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- the user's input: specs, requests -------------------------------------------------------------


class SpecError(TiffinError):
    """A YAML/spec file or a field in it is invalid; the message names the file and the field."""

    status_code = 422

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        prefix = ""
        if source:
            prefix += f"{source}: "
        if field:
            prefix += f"field '{field}': "
        super().__init__(prefix + message)
        self.source = source
        self.field = field


class BadRequestError(TiffinError):
    """A request body cannot be read at all: not UTF-8, not JSON, not an object (400)."""

    status_code = 400


class ValidationError(TiffinError):
    """A well-formed request body does not match the deployment's schema (422)."""

    status_code = 422


class UnsupportedMediaTypeError(TiffinError):
    """The request's Content-Type cannot be handled (415)."""

    status_code = 415


class PayloadTooLargeError(TiffinError):
    """The request body is over the configured size limit (413)."""

    status_code = 413


# --- resources ---------------------------------------------------------------------------------------


class NotFoundError(TiffinError):
    """An endpoint, deployment or job does not exist (404)."""

    status_code = 404


class ConflictError(TiffinError):
    """The resource exists already or is in a state that forbids the change (409)."""

    status_code = 409


class StoreError(TiffinError):
    """The state store cannot be opened or migrated."""


# --- access and capacity -----------------------------------------------------------------------------


class AuthError(TiffinError):
    """Credentials are missing, wrong or expired (401)."""

    status_code = 401


class CapacityError(TiffinError):
    """Too many requests are queued for a deployment (429)."""

    status_code = 429


class UnavailableError(TiffinError):
    """Nothing can take the request right now: no ready replica, no traffic, still loading (503)."""

    status_code = 503


class ClientDisconnectedError(TiffinError):
    """The client went away (or was cut off by the server's body timeout) before its request body was whole;
    nobody is left to answer, and the part that arrived is not forwarded. 499, as nginx counts it."""

    status_code = 499


class RequestTimeoutError(TiffinError):
    """A request ran past its deployment's request_timeout_ms (408)."""

    status_code = 408


# --- environments ------------------------------------------------------------------------------------


class EnvironmentBuildError(TiffinError):
    """A deployment's environment could not be built; the message carries uv's own words (the missing or
    conflicting requirement named). 422: what the environment declares is what needs changing."""

    status_code = 422


class InterpreterNotFoundError(EnvironmentBuildError):
    """No interpreter of the Python version an environment declares is on this machine; the message lists
    those found and how to add one."""


# --- runners -----------------------------------------------------------------------------------------


class RunnerError(TiffinError):
    """A runner could not serve a request for a reason of its own (500)."""


class RunnerLoadError(RunnerError):
    """A runner could not load its model or scoring script; the message says why."""


class ScoringError(RunnerError):
    """The user's scoring code raised; the traceback is in the replica's log, not in the response."""


def http_status(exc: BaseException) -> int:
    """The HTTP status a gateway or replica answers for ``exc``."""
    return exc.status_code if isinstance(exc, TiffinError) else 500
