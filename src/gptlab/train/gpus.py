"""Peak throughput of a few data-center GPUs: data for training-cost estimates (``gptlab cost``).

Figures are NVIDIA's datasheet numbers for *dense* tensor-core math in the precision large models
train in (bf16; fp16 on the V100, which has no bf16). Datasheets often print the "with
sparsity" figure, twice the dense one; the dense figure is the one that applies to training.
Real training sustains a fraction of the peak (model FLOPs utilization, typically 30–50 %), which
``gptlab cost --utilization`` applies.

Sources (read 2024):
- V100 SXM2: 125 TFLOPS fp16 tensor ("Deep Learning" row), 32 GB —
  https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf
- A100 SXM4: 312 TFLOPS bf16 tensor dense (624 with sparsity), 80 GB —
  https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
- H100 SXM5: 989 TFLOPS bf16 tensor dense (1,979 with sparsity), 80 GB —
  https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
- H200 SXM: 989 TFLOPS bf16 tensor dense (1,979 with sparsity; same compute as H100), 141 GB —
  https://www.nvidia.com/en-us/data-center/h200/
"""

from __future__ import annotations

from dataclasses import dataclass

from gptlab.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    """One accelerator: peak dense tensor-core throughput in ``precision`` and its memory."""

    name: str
    full_name: str
    peak_tflops: float
    precision: str
    memory_gb: int

    @property
    def peak_flops(self) -> float:
        """Peak FLOP/s (not TFLOP/s)."""
        return self.peak_tflops * 1e12


GPUS: dict[str, GPU] = {
    gpu.name.lower(): gpu
    for gpu in (
        GPU("V100", "NVIDIA V100 SXM2 32GB", 125.0, "fp16", 32),
        GPU("A100", "NVIDIA A100 SXM4 80GB", 312.0, "bf16", 80),
        GPU("H100", "NVIDIA H100 SXM5 80GB", 989.0, "bf16", 80),
        GPU("H200", "NVIDIA H200 SXM 141GB", 989.0, "bf16", 141),
    )
}


def get_gpu(name: str) -> GPU:
    """The GPU of that name (case-insensitive: ``h100``, ``H100``). Unknown names raise ConfigError."""
    try:
        return GPUS[name.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"unknown GPU {name!r}; choose one of {', '.join(g.name for g in GPUS.values())} "
            "or give a sustained throughput in TFLOPS (a number)"
        ) from None


def peak_flops_of(device: object) -> float | None:
    """Dense bf16 peak FLOP/s of the CUDA GPU ``device`` is, or None when it is not one we know.

    Matched on the name CUDA reports: A100 (SXM or PCIe: 312 TFLOP/s), H100 SXM ("H100 80GB HBM3",
    "H100 SXM": 989), H200 (989). Other GPUs (H100 PCIe/NVL, consumer cards, ...) return None:
    MFU is then not reported rather than guessed.
    """
    import torch

    if not isinstance(device, torch.device) or device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def peak_flops_for_name(name: str) -> float | None:
    """See ``peak_flops_of``; ``name`` as ``torch.cuda.get_device_name`` gives it."""
    upper = name.upper()
    if "A100" in upper:
        return GPUS["a100"].peak_flops
    if "H200" in upper:
        return GPUS["h200"].peak_flops
    if "H100" in upper and ("HBM3" in upper or "SXM" in upper):
        return GPUS["h100"].peak_flops
    return None
