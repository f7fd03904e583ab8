"""Compilation targets: SageMaker Neo's cloud devices ncfctl supports, or an ``os,arch[,accelerator]`` platform.

The table is what the local compiler needs and Neo does not tell us: the CPU architecture and the
vCPUs of the instance the bundle will run on, from which the runtime's thread count is chosen.
Names are validated against the SageMaker API model shipped with botocore, so a typo fails here,
not minutes later in the cloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import botocore.session

from ncfctl.errors import NcfError


@dataclass(frozen=True)
class Target:
    """Where a compiled model will run."""

    name: str  # "ml_c5", or "linux_x86_64[_nvidia]" for a platform
    arch: str  # "x86_64" | "arm64" | ... (lower case)
    accelerator: str | None  # None = CPU; "nvidia", ... for GPUs
    instance: str | None  # the smallest SageMaker hosting instance of the family; None for platforms
    vcpus: int | None
    description: str
    device: str | None = None  # Neo OutputConfig.TargetDevice
    platform: tuple[str, str, str | None] | None = None  # Neo OutputConfig.TargetPlatform (Os, Arch, Accelerator)

    @property
    def local_ok(self) -> bool:
        """The local compiler (ONNX Runtime on CPU) can build for it."""
        return self.accelerator is None

    @property
    def servable(self) -> bool:
        """ncfctl's serving image (linux/amd64, CPU DLR / ONNX Runtime) can run a Neo build for it."""
        return self.arch == "x86_64" and self.accelerator is None

    def output_config(self) -> dict:
        """The TargetDevice/TargetPlatform part of Neo's ``OutputConfig``."""
        if self.device is not None:
            return {"TargetDevice": self.device}
        os_name, arch, accelerator = self.platform
        platform = {"Os": os_name, "Arch": arch}
        if accelerator:
            platform["Accelerator"] = accelerator
        return {"TargetPlatform": platform}


def _cloud(name: str, arch: str, accelerator: str | None, instance: str, vcpus: int, description: str) -> Target:
    return Target(name, arch, accelerator, instance, vcpus, description, device=name)


# Neo cloud targets for ONNX and PyTorch models (CPU families first). vCPUs: the smallest size.
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _cloud("ml_c5", "x86_64", None, "ml.c5.large", 2, "Intel Skylake/Cascade Lake, AVX-512, compute optimised"),
        _cloud("ml_m5", "x86_64", None, "ml.m5.large", 2, "Intel Skylake/Cascade Lake, AVX-512, general purpose"),
        _cloud("ml_c4", "x86_64", None, "ml.c4.large", 2, "Intel Xeon Haswell, AVX2, compute optimised"),
        _cloud("ml_m4", "x86_64", None, "ml.m4.xlarge", 4, "Intel Xeon Broadwell/Haswell, AVX2, general purpose"),
        _cloud("ml_c6g", "arm64", None, "ml.c6g.large", 2, "AWS Graviton2 (Arm Neoverse N1), compute optimised"),
        _cloud("ml_m6g", "arm64", None, "ml.m6g.large", 2, "AWS Graviton2 (Arm Neoverse N1), general purpose"),
        _cloud("ml_g4dn", "x86_64", "nvidia", "ml.g4dn.xlarge", 4, "NVIDIA T4 GPU"),
        _cloud("ml_p3", "x86_64", "nvidia", "ml.p3.2xlarge", 8, "NVIDIA V100 GPU"),
        _cloud("ml_p2", "x86_64", "nvidia", "ml.p2.xlarge", 4, "NVIDIA K80 GPU"),
    )
}


@cache
def _api_enums() -> dict[str, list[str]]:
    """Allowed values of Neo's target fields, from botocore's SageMaker API model (offline)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    return {
        name: list(model.shape_for(name).enum)
        for name in ("TargetDevice", "TargetPlatformOs", "TargetPlatformArch", "TargetPlatformAccelerator")
    }


def _platform(spec: str) -> Target:
    parts = [p.strip().upper() for p in spec.split(",")]
    if len(parts) not in (2, 3) or not all(parts):
        raise NcfError(
            f"compile.target_platform {spec!r}: expected os,arch[,accelerator], e.g. linux,x86_64 or linux,arm64",
            settings=("compile.target_platform",),
        )
    enums = _api_enums()
    fields = zip(("TargetPlatformOs", "TargetPlatformArch", "TargetPlatformAccelerator"), parts, strict=False)
    for field_name, value in fields:
        if value not in enums[field_name]:
            allowed = ", ".join(v.lower() for v in enums[field_name])
            what = field_name.removeprefix("TargetPlatform").lower()
            raise NcfError(
                f"compile.target_platform {spec!r}: unknown {what} '{value}' (known: {allowed})",
                settings=("compile.target_platform",),
            )
    os_name, arch = parts[0], parts[1]
    accelerator = parts[2] if len(parts) == 3 else None
    name = "_".join(p.lower() for p in parts)
    return Target(
        name,
        arch.lower(),
        accelerator.lower() if accelerator else None,
        None,
        None,
        f"{os_name.title()} on {arch}" + (f" with {accelerator}" if accelerator else ""),
        platform=(os_name, arch, accelerator),
    )


_PLATFORM_NAME = re.compile(r"^(?P<os>[a-z]+)_(?P<arch>x86_64|arm64|arm_eabihf|arm_eabi)(?:_(?P<accelerator>[a-z]+))?$")


def target_named(name: str) -> Target | None:
    """The :class:`Target` a bundle's ``target`` names (``ml_c5``, ``linux_x86_64``); None for others (``local``)."""
    if name in TARGETS:
        return TARGETS[name]
    match = _PLATFORM_NAME.match(name)
    if match is None:
        return None
    return _platform(",".join(part for part in match.groups() if part))


def resolve_target(device: str | None, platform: str | None = None) -> Target:
    """A :class:`Target` from ``compile.target`` or, when set, ``compile.target_platform``."""
    if platform:
        return _platform(platform)
    name = (device or "").strip().lower()
    if name in TARGETS:
        return TARGETS[name]
    known = ", ".join(TARGETS)
    if name in _api_enums()["TargetDevice"]:
        raise NcfError(f"target '{name}' is a Neo device ncfctl does not build NCF bundles for (supported: {known})")
    raise NcfError(f"unknown target '{device}' (config key compile.target; supported: {known})")


_SIZE = re.compile(r"^ml\.(?P<family>[a-z0-9]+)\.(?P<mult>\d*)(?P<size>x?large)$")
_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*$")  # c6g, m6gd, c7gn: AWS Graviton (arm64)
IMAGE_PLATFORM = "linux/amd64 CPU"  # the only serving image ncfctl builds


def instance_platform(instance_type: str) -> tuple[str, str | None]:
    """``(arch, accelerator)`` of a SageMaker instance type: ``ml.c6g.large`` -> ``("arm64", None)``."""
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml" or not parts[1]:
        raise NcfError(f"instance type '{instance_type}' is not of the form ml.<family>.<size>")
    family = parts[1]
    if family.startswith(("inf", "trn")):
        return "x86_64", "neuron"
    if family.startswith(("g", "p", "dl")):
        return "x86_64", "gpu"
    return ("arm64" if _GRAVITON.match(family) else "x86_64"), None


def check_serving_pair(what: str, target_name: str | None, runtime: str, instance_type: str | None) -> None:
    """Refuse, in one line, a bundle the image cannot run or an instance the image cannot run on.

    ``what`` names the bundle (an artifact id or a package ARN). ``instance_type`` None means
    serverless inference (x86 CPU). A DLR bundle is native code for its Neo target, so it runs
    only on that target's family (a platform target: any x86 CPU instance); ONNX Runtime and
    TorchScript bundles run on any x86 CPU instance.
    """
    target = target_named(target_name or "")
    if runtime == "dlr" and target is not None and not target.servable:
        kind = f"{target.accelerator} GPU" if target.accelerator else target.arch
        raise NcfError(
            f"{what} is Neo-compiled for {target.name} ({kind}); the serving image is {IMAGE_PLATFORM}",
            hint="compile for an x86 CPU target (ml_c5, ml_m5, ml_c4, ml_m4 or linux,x86_64)",
        )
    if instance_type is None:
        return
    arch, accelerator = instance_platform(instance_type)
    if arch != "x86_64" or accelerator:
        raise NcfError(
            f"instance type {instance_type} is {accelerator or arch}; the serving image is {IMAGE_PLATFORM}",
            hint="choose an x86 CPU instance such as ml.c5.large",
        )
    family = instance_type.split(".")[1]
    same_cpu = target is not None and family.removeprefix(target.name[3:]) in {"", "d", "n", "dn"}
    if runtime == "dlr" and target is not None and target.device is not None and not same_cpu:
        raise NcfError(
            f"{what} is Neo-compiled for {target.name}: deploy it on {target.name.replace('_', '.')}.* instances "
            f"(got {instance_type}), or compile for ml_{family}"
        )


def instance_vcpus(target: Target, instance_type: str | None) -> int | None:
    """vCPUs of ``instance_type`` when it belongs to the target's family, else of the family's smallest size.

    EC2 sizing is regular for these families: ``large`` = 2 vCPUs, ``xlarge`` = 4, ``Nxlarge`` = 4N.
    """
    match = _SIZE.match(instance_type or "")
    if target.device is None or match is None or f"ml_{match['family']}" != target.name:
        return target.vcpus
    if match["size"] == "large":
        return 2
    return 4 * int(match["mult"] or 1)


def default_threads(target: Target, instance_type: str | None) -> int:
    """Intra-op threads for the bundle: one per physical core of the serving instance.

    x86 vCPUs are hyper-threads, two per core sharing its vector units, so a second thread per
    core mostly adds contention; Graviton vCPUs are whole cores.
    Platforms of unknown size get 1 (set ``compile.threads`` to choose).
    """
    vcpus = instance_vcpus(target, instance_type)
    if vcpus is None:
        return 1
    return vcpus if target.arch == "arm64" else max(1, vcpus // 2)
