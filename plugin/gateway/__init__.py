"""The gateway: authenticates, routes and forwards requests to deployment replicas."""

from tiffin.gateway.app import Gateway

__all__ = ["Gateway"]
