"""Online autoscale: ``scale_settings`` (target_utilization, target_concurrency) honoured by ``tiffin serve``.

:mod:`.policy` decides (pure), :mod:`.readings` samples, :mod:`.engine` runs in the server beside the
supervisor and tells it how many replicas to keep (docs/autoscale.md).
"""
