"""Registered assets, as Azure ML keeps them: models, environments, data (versioned) and computes.

``references`` parses what Azure's YAML and CLI flags use to name them (``azureml:NAME:VERSION``,
``azureml:NAME@latest``, resource ids, registry URIs); the store keeps them (:mod:`tiffin.store.assets`).
"""
