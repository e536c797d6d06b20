"""``client.autoscale``: autoscale settings, as ``az monitor autoscale`` (and azure-mgmt-monitor's
``autoscale_settings``) manage them: a setting per online deployment, its rules and its profiles.

Conditions and scale actions are az's words (``"CpuUtilizationPercentage > 70 avg 5m"``, ``"out 2"``); the server
parses them, so a bad one raises :class:`~tiffin.errors.SpecError` naming the accepted form.
"""

from __future__ import annotations

from typing import Any

from ._transport import Transport, path

__all__ = ["AutoscaleOperations"]

_ROOT = "autoscale-settings"


def _dropped(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class AutoscaleOperations:
    """Autoscale settings by name; each answer is the setting as ``az monitor autoscale show`` prints it."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(
        self,
        name: str,
        *,
        resource: str | None = None,
        endpoint_name: str | None = None,
        deployment_name: str | None = None,
        min_count: int,
        max_count: int,
        count: int,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create the setting for an online deployment: ``resource`` (its Azure id,
        ``.../onlineEndpoints/E/deployments/D``) or ``endpoint_name`` and ``deployment_name``."""
        body = _dropped(
            name=name,
            resource=resource,
            endpoint_name=endpoint_name,
            deployment_name=deployment_name,
            min_count=min_count,
            max_count=max_count,
            count=count,
            enabled=enabled,
        )
        return self._t.request("POST", path(_ROOT), json=body)

    def update(
        self,
        name: str,
        *,
        min_count: int | None = None,
        max_count: int | None = None,
        count: int | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Change the default profile's counts, or enable or disable the setting."""
        body = _dropped(min_count=min_count, max_count=max_count, count=count, enabled=enabled)
        return self._t.request("PATCH", path(_ROOT, name), json=body)

    def get(self, name: str) -> dict[str, Any]:
        """One setting (:class:`NotFoundError` if there is none)."""
        return self._t.request("GET", path(_ROOT, name))

    def list(self) -> list[dict[str, Any]]:
        """Every setting, by name; ``targetExists`` is False for one whose deployment was deleted."""
        return self._t.request("GET", path(_ROOT))

    def delete(self, name: str) -> None:
        """Delete the setting; the deployment keeps its current instance count."""
        self._t.request("DELETE", path(_ROOT, name))

    def create_rule(
        self,
        name: str,
        condition: str,
        scale: str,
        *,
        cooldown: str | None = None,
        resource: str | None = None,
        profile: str | None = None,
    ) -> dict[str, Any]:
        """Add a rule (``condition`` e.g. ``"RequestLatency > 70 avg 5m"``, ``scale`` e.g. ``"out 1"``; cooldown
        ``5m`` unless given) to a profile, the default one unless ``profile`` names another."""
        body = _dropped(condition=condition, scale=scale, cooldown=cooldown, resource=resource, profile=profile)
        return self._t.request("POST", path(_ROOT, name, "rules"), json=body)

    def delete_rule(self, name: str, index: int | str, *, profile: str | None = None) -> dict[str, Any]:
        """Delete a profile's rule by 0-based index (``"*"``: all of them)."""
        params = _dropped(profile=profile)
        return self._t.request("DELETE", path(_ROOT, name, "rules", str(index)), params=params)

    def put_profile(
        self,
        name: str,
        profile: str,
        *,
        min_count: int,
        max_count: int,
        count: int,
        recurrence: str | None = None,
        start: str | None = None,
        end: str | None = None,
        timezone: str | None = None,
        copy_rules: str | None = None,
    ) -> dict[str, Any]:
        """Create or replace a profile: counts, and ``recurrence`` (``"week sat sun"``; ``start``/``end`` times
        ``HH:MM``) or fixed dates (``start``/``end``), in ``timezone`` (Windows or IANA name, UTC by default)."""
        body = _dropped(
            min_count=min_count,
            max_count=max_count,
            count=count,
            recurrence=recurrence,
            start=start,
            end=end,
            timezone=timezone,
            copy_rules=copy_rules,
        )
        return self._t.request("PUT", path(_ROOT, name, "profiles", profile), json=body)

    def delete_profile(self, name: str, profile: str) -> dict[str, Any]:
        """Delete a profile other than the default one."""
        return self._t.request("DELETE", path(_ROOT, name, "profiles", profile))
