"""The ceiling MFU is measured against: what this device's matrix multiply reaches, in the
dtype the benchmark trains in, measured here rather than taken from a table (a laptop CPU
has no data sheet, and a throttled or shared GPU is not its data sheet)."""

from __future__ import annotations

import time

import torch

from gptlab.training.distributed import PEAK_FLOPS


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float = 1.0) -> dict:
    """The best FLOP/s of square n x n matrix multiplies in `dtype` over about `seconds`:
    {"flops": FLOP/s, "n": n, "dtype": name}. n defaults to 8192 on a GPU and 1024 on a
    CPU, sizes where the multiply is compute-bound."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up: kernels chosen, caches filled
    synchronize(device)
    best, spent, repeats = 0.0, 0.0, 1
    while spent < seconds:
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = max(best, 2 * n ** 3 * repeats / elapsed), spent + elapsed
        repeats = repeats * 2 if elapsed < 0.05 else repeats
    return {"flops": best, "n": n, "dtype": str(dtype).removeprefix("torch.")}


def data_sheet_peak(device: torch.device, dtype: torch.dtype) -> dict | None:
    """{"flops", "source"}: the dense bf16 tensor-core peak of a known GPU, or None (a CPU,
    an unknown GPU, or a dtype the table does not describe)."""
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    key = next((key for key in PEAK_FLOPS if key in name), None)
    return {"flops": PEAK_FLOPS[key], "source": f"data sheet, dense bf16 of {key}"} if key else None
