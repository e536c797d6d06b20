"""Azure's VM sizes as Kubernetes resources: what one instance of a deployment with an ``instance_type`` has on Azure
(used by :mod:`tiffin.containers.kubernetes`; docs/kubernetes.md lists the table)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INSTANCE_TYPES", "InstanceSize", "instance_size"]


@dataclass(frozen=True)
class InstanceSize:
    """An Azure VM size as Kubernetes resources: what one instance of a deployment has on Azure."""

    cpu: int
    memory_gib: float
    gpus: int = 0

    def resources(self) -> dict[str, dict[str, str]]:
        """Requests equal to limits (a dedicated VM per instance on Azure; Guaranteed QoS here)."""
        amount = {"cpu": str(self.cpu), "memory": f"{round(self.memory_gib * 1024)}Mi"}
        if self.gpus:
            amount["nvidia.com/gpu"] = str(self.gpus)
        return {"requests": dict(amount), "limits": dict(amount)}


# vCPUs and memory (GiB) of the sizes Azure's managed online endpoints offer, from Azure's VM size documentation
# (Dv2/DSv2, Dsv3, Fsv2, Esv3, NCv3 and NCasT4_v3 series). docs/kubernetes.md lists them.
INSTANCE_TYPES: dict[str, InstanceSize] = {
    "Standard_DS1_v2": InstanceSize(1, 3.5),
    "Standard_DS2_v2": InstanceSize(2, 7),
    "Standard_DS3_v2": InstanceSize(4, 14),
    "Standard_DS4_v2": InstanceSize(8, 28),
    "Standard_DS5_v2": InstanceSize(16, 56),
    "Standard_D2s_v3": InstanceSize(2, 8),
    "Standard_D4s_v3": InstanceSize(4, 16),
    "Standard_D8s_v3": InstanceSize(8, 32),
    "Standard_D16s_v3": InstanceSize(16, 64),
    "Standard_D32s_v3": InstanceSize(32, 128),
    "Standard_F2s_v2": InstanceSize(2, 4),
    "Standard_F4s_v2": InstanceSize(4, 8),
    "Standard_F8s_v2": InstanceSize(8, 16),
    "Standard_F16s_v2": InstanceSize(16, 32),
    "Standard_F32s_v2": InstanceSize(32, 64),
    "Standard_F48s_v2": InstanceSize(48, 96),
    "Standard_F64s_v2": InstanceSize(64, 128),
    "Standard_F72s_v2": InstanceSize(72, 144),
    "Standard_E2s_v3": InstanceSize(2, 16),
    "Standard_E4s_v3": InstanceSize(4, 32),
    "Standard_E8s_v3": InstanceSize(8, 64),
    "Standard_E16s_v3": InstanceSize(16, 128),
    "Standard_NC6s_v3": InstanceSize(6, 112, 1),
    "Standard_NC12s_v3": InstanceSize(12, 224, 2),
    "Standard_NC24s_v3": InstanceSize(24, 448, 4),
    "Standard_NC4as_T4_v3": InstanceSize(4, 28, 1),
    "Standard_NC8as_T4_v3": InstanceSize(8, 56, 1),
    "Standard_NC16as_T4_v3": InstanceSize(16, 110, 1),
    "Standard_NC64as_T4_v3": InstanceSize(64, 440, 4),
}

_BY_KEY = {name.lower(): size for name, size in INSTANCE_TYPES.items()}


def instance_size(instance_type: str) -> InstanceSize | None:
    """The size of ``instance_type`` (Azure's names are case-insensitive), or None when the table lacks it."""
    return _BY_KEY.get(instance_type.lower())
