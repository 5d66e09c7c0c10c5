"""VM sizes a pool may use: cores and memory, for validation and core quotas."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core import errors


@dataclass(frozen=True)
class VmSize:
    name: str
    cores: int
    memory_mb: int

    @property
    def max_task_slots(self) -> int:
        """Azure allows at most 4 x cores concurrent task slots per node, capped at 256."""
        return min(4 * self.cores, 256)


_SIZES = [
    VmSize("Standard_A1_v2", 1, 2048), VmSize("Standard_A2_v2", 2, 4096), VmSize("Standard_A4_v2", 4, 8192),
    VmSize("Standard_D1_v2", 1, 3584), VmSize("Standard_D2_v2", 2, 7168), VmSize("Standard_D2_v3", 2, 8192),
    VmSize("Standard_D4_v3", 4, 16384), VmSize("Standard_D8_v3", 8, 32768), VmSize("Standard_D2s_v3", 2, 8192),
    VmSize("Standard_D4s_v3", 4, 16384), VmSize("Standard_D8s_v3", 8, 32768), VmSize("Standard_D16s_v3", 16, 65536),
    VmSize("Standard_D2ds_v5", 2, 8192), VmSize("Standard_D4ds_v5", 4, 16384), VmSize("Standard_D2s_v5", 2, 8192),
    VmSize("Standard_D4s_v5", 4, 16384), VmSize("Standard_E2s_v3", 2, 16384), VmSize("Standard_E4s_v3", 4, 32768),
    VmSize("Standard_F2s_v2", 2, 4096), VmSize("Standard_F4s_v2", 4, 8192), VmSize("Standard_F8s_v2", 8, 16384),
    VmSize("Standard_NC6s_v3", 6, 114688), VmSize("Standard_HB120rs_v3", 120, 458752),
]
SIZES = {s.name.lower(): s for s in _SIZES}
DEFAULT_LIMITS = VmSize("default", 2, 8192)  # machines whose size is unknown (kept from older records)


def machine_limits(name: str | None) -> dict[str, int]:
    """The cgroup limits of a machine of this size: its cores, its memory, and a process count that stops a
    fork bomb long before the host's own limit."""
    size = SIZES.get((name or "").lower()) or DEFAULT_LIMITS
    return {"cores": size.cores, "memoryBytes": size.memory_mb << 20, "pids": 4096 + 1024 * size.cores}


def lookup(name: str | None, *, target: str = "vmSize") -> VmSize:
    size = SIZES.get((name or "").lower())
    if size is None:
        raise errors.InvalidPropertyValue(
            f"The value provided for {target} '{name}' is not a supported VM size. Supported sizes include "
            + ", ".join(s.name for s in _SIZES[:8]) + ", ...",
            values={"PropertyName": target, "PropertyValue": str(name)})
    return size
