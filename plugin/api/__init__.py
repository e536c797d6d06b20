"""tiffin's control plane REST API (mounted at ``/api`` by ``tiffin serve``).

    from tiffin.api import create_api

    app = create_api(store, admin_token=token, public_url="http://127.0.0.1:7700", home=home)

Routes and their OpenAPI document come from one table, :data:`OPERATIONS`; the logic behind them is
:class:`ControlPlane`, usable without HTTP.
"""

from .app import create_api
from .control import ControlPlane, is_local, tail_lines
from .openapi import openapi_document
from .operations import OPERATIONS, Operation

__all__ = ["OPERATIONS", "ControlPlane", "Operation", "create_api", "is_local", "openapi_document", "tail_lines"]
