"""tiffin: Azure-ML-style endpoints and deployments for BentoML.

The public surface on one screen; everything else is an implementation detail.
"""

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
