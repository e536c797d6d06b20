"""Per-deployment environments (issue 13): which Python environment a deployment or batch job declares
(:mod:`.sources`), a conda file translated to pip requirements (:mod:`.conda`), and the shared shape both
produce (:class:`~.spec.EnvironmentSpec`, whose key names the built environment so equal ones are shared).
"""
