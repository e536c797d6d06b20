"""tiffin: Azure-ML-style endpoints and deployments for BentoML.

The public surface on one screen; everything else is an implementation detail.
"""

from typing import TYPE_CHECKING

from tiffin._lazy import lazy_attributes

# Names are imported on first use (PEP 562), so `import tiffin.something` - a batch worker, the CLI -
# does not pay for the SDK, the specs and pydantic when it needs none of them.
_WHERE = {
    **dict.fromkeys(
        (
            "AuthError", "BadRequestError", "CapacityError", "ConflictError", "NotFoundError", "PayloadTooLargeError",
            "RequestTimeoutError", "RunnerError", "RunnerLoadError", "ScoringError", "SpecError", "StoreError",
            "TiffinError", "UnavailableError", "UnsupportedMediaTypeError", "ValidationError",
        ),
        "tiffin.errors",
    ),
    "TiffinClient": "tiffin.sdk",
    **dict.fromkeys(
        (
            "BatchDeployment", "BatchEndpoint", "CodeConfiguration", "Environment", "LoadedSpec", "Model",
            "OnlineDeployment", "OnlineEndpoint", "ProbeSettings", "RequestSettings", "load_spec", "parse_spec",
        ),
        "tiffin.specs",
    ),
    "typed": "tiffin.typed",
}  # fmt: skip

if TYPE_CHECKING:
    from tiffin.errors import (
        AuthError,
        BadRequestError,
        CapacityError,
        ConflictError,
        NotFoundError,
        PayloadTooLargeError,
        RequestTimeoutError,
        RunnerError,
        RunnerLoadError,
        ScoringError,
        SpecError,
        StoreError,
        TiffinError,
        UnavailableError,
        UnsupportedMediaTypeError,
        ValidationError,
    )
    from tiffin.sdk import TiffinClient
    from tiffin.specs import (
        BatchDeployment,
        BatchEndpoint,
        CodeConfiguration,
        Environment,
        LoadedSpec,
        Model,
        OnlineDeployment,
        OnlineEndpoint,
        ProbeSettings,
        RequestSettings,
        load_spec,
        parse_spec,
    )
    from tiffin.typed import typed


__getattr__ = lazy_attributes("tiffin", globals(), _WHERE)


__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadRequestError",
    "BatchDeployment",
    "BatchEndpoint",
    "CapacityError",
    "CodeConfiguration",
    "ConflictError",
    "Environment",
    "LoadedSpec",
    "Model",
    "NotFoundError",
    "OnlineDeployment",
    "OnlineEndpoint",
    "PayloadTooLargeError",
    "ProbeSettings",
    "RequestSettings",
    "RequestTimeoutError",
    "RunnerError",
    "RunnerLoadError",
    "ScoringError",
    "SpecError",
    "StoreError",
    "TiffinClient",
    "TiffinError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "__version__",
    "load_spec",
    "parse_spec",
    "typed",
]
