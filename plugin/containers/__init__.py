"""Containers: OCI images per deployment, container engines, and Kubernetes manifests.

Modules are imported by their full names (``tiffin.containers.naming``, ``tiffin.containers.engine``,
``tiffin.containers.kubernetes``); this package imports nothing itself, so ``tiffin serve`` pays nothing for it.
"""
