"""Hardware profiles: training FLOPs -> device-hours and dollars. Pure: no torch.

A profile is a peak rate, the share of it a trial achieves (MFU) and a price per device-hour:

    hours = train_flops / (peak_flops_per_s * mfu) / 3600
    cost_usd = hours * usd_per_hour

The built-in figures and where each comes from (see also docs/plan.md):

- ``h100``: 989 TFLOP/s dense BF16, the NVIDIA H100 SXM5 datasheet (1,979 "with sparsity",
  halved). MFU 0.227: optimix's own compiled trial of ``search_spaces/gpu.yaml`` (35M params,
  ``docs/benchmarks/gpu_trial.json``: 1.056M tokens/s x 212.9M FLOPs per token = 225 TFLOP/s)
  against that peak. The anchors (``docs/anchors``) give 35.2% for a compiled 34M model, but
  against a *measured* 784 TFLOP/s matmul rate: 27.9% of the datasheet peak. Tiny models reach
  far less (0.9% of the peak at 0.2M params, 6.6% at 4.5M, eager), so for them the hours are a
  lower bound.
- ``a100``: 312 TFLOP/s dense BF16, the NVIDIA A100 datasheet. MFU assumed equal to the H100
  measurement (not measured on an A100).
- ``cpu``: one core of the 2-core x86_64 VM optimix's benchmarks ran on: 52,506 tokens/s for the
  quickstart trial (median of ``docs/benchmarks/trial_throughput.json``) x 642,048 FLOPs per
  token = 33.7 GFLOP/s, measured, so MFU is 1 against that rate.
- Prices are assumptions (typical on-demand cloud prices per device-hour, late 2025), not
  quotes: give your own with a ``hardware:`` section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


class HardwareError(ValueError):
    """An unknown profile or a bad ``hardware:`` entry; the message is one line naming the key."""


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """One device a trial runs on."""

    name: str
    peak_flops_per_s: float
    """The device's peak rate for the precision trials use (dense, no sparsity)."""
    mfu: float
    """Achieved share of the peak (model FLOPs utilisation), in (0, 1]."""
    usd_per_hour: float
    """Price of one device for one hour."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        for key in ("peak_flops_per_s", "usd_per_hour"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise HardwareError(f"hardware.{key}: expected a finite number >= 0, got {value!r}")
        if self.peak_flops_per_s <= 0:
            raise HardwareError(f"hardware.peak_flops_per_s: must be > 0, got {self.peak_flops_per_s!r}")
        if not (isinstance(self.mfu, int | float) and not isinstance(self.mfu, bool)
                and 0 < self.mfu <= 1):
            raise HardwareError(f"hardware.mfu: expected a number in (0, 1], got {self.mfu!r}")
        if not isinstance(self.name, str) or not self.name:
            raise HardwareError(f"hardware.name: expected a non-empty string, got {self.name!r}")

    @property
    def flops_per_s(self) -> float:
        """The rate a trial achieves: peak x MFU."""
        return self.peak_flops_per_s * self.mfu

    def hours(self, flops: float) -> float:
        """Device-hours to train ``flops`` on one device."""
        return flops / self.flops_per_s / 3600.0

    def cost_usd(self, flops: float) -> float:
        return self.hours(flops) * self.usd_per_hour

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flops_per_s": self.flops_per_s}


PROFILES: dict[str, Hardware] = {
    "h100": Hardware(
        name="h100", peak_flops_per_s=989e12, mfu=0.227, usd_per_hour=2.50,
        source="peak: NVIDIA H100 SXM5 datasheet, BF16 dense; MFU: optimix gpu_trial benchmark "
               "(35M params, torch.compile, 225 TFLOP/s); price: assumed on-demand cloud rate",
    ),
    "a100": Hardware(
        name="a100", peak_flops_per_s=312e12, mfu=0.227, usd_per_hour=1.50,
        source="peak: NVIDIA A100 datasheet, BF16 dense; MFU: assumed as measured on the H100; "
               "price: assumed on-demand cloud rate",
    ),
    "cpu": Hardware(
        name="cpu", peak_flops_per_s=33.7e9, mfu=1.0, usd_per_hour=0.04,
        source="rate: optimix trial_throughput benchmark, one core of a 2-core x86_64 VM "
               "(52,506 tokens/s x 642,048 FLOPs/token), measured; price: assumed cloud vCPU rate",
    ),
}

_SECTION_KEYS = {"name", "peak_flops_per_s", "mfu", "usd_per_hour", "source"}


def from_section(section: Any) -> Hardware:
    """A ``hardware:`` section of a search space as a profile (its keys are the fields)."""
    if not isinstance(section, Mapping):
        raise HardwareError(f"hardware: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(map(str, section)) - _SECTION_KEYS)
    if unknown:
        raise HardwareError(f"hardware.{unknown[0]}: unknown key (keys: {', '.join(sorted(_SECTION_KEYS))})")
    for key in ("peak_flops_per_s", "mfu", "usd_per_hour"):
        if key not in section:
            raise HardwareError(f"hardware.{key}: missing")
    values = {"name": "space", "source": "the search space's hardware section", **section}
    for key in ("peak_flops_per_s", "mfu", "usd_per_hour"):
        values[key] = _number(key, values[key])
    values["name"], values["source"] = str(values["name"]), str(values["source"])
    return Hardware(**values)


def resolve(name: str | None, section: Any = None) -> Hardware:
    """``--hardware NAME``: a built-in profile; else the space's section; else the H100."""
    if name is None:
        return from_section(section) if section is not None else PROFILES["h100"]
    key = name.lower()
    if key in PROFILES:
        return PROFILES[key]
    if section is not None:
        profile = from_section(section)
        if profile.name.lower() == key:
            return profile
    raise HardwareError(f"--hardware: unknown profile {name!r} (profiles: {', '.join(PROFILES)}, "
                        "or a hardware: section in the search space)")


def _number(key: str, value: Any) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e14 as a string; accept the short form
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HardwareError(f"hardware.{key}: expected a number, got {value!r}")
    return float(value)
