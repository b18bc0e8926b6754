"""Process setup: one process, or one per device under torchrun (NCCL on CUDA, gloo on CPU)."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else self.device.split(":")[0]


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class DeviceError(RuntimeError):
    """The device asked for is not on this machine; the message says what is."""


def check_device(device: str) -> None:
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        built = "with" if torch.backends.cuda.is_built() else "without"
        raise DeviceError(f"--device {device}: this machine has no usable CUDA device (torch {torch.__version__} is "
                          f"built {built} CUDA); use --device cpu, or leave --device out for the best available")
    if kind == "cuda" and ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"--device {device}: MPS is not available here; use --device cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {device} is not a device gptlab knows; use cpu, cuda, cuda:N or mps")


def setup(device: str | None = None) -> Dist:
    """Read torchrun's environment; start the process group when there is more than one rank; use the CPUs
    this process was given (`set_threads`)."""
    set_threads()
    if device:
        check_device(device)
    if "RANK" not in os.environ:
        return Dist(device=device or default_device())
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    device = device or default_device()
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank=rank, local_rank=local_rank, world_size=world, device=device)


def allocated_cpus(environ=os.environ) -> int | None:
    """The CPUs a scheduler gave this node's processes: SLURM_CPUS_PER_TASK, or the affinity mask where it is
    narrower than the machine (taskset, cgroups' cpusets); None where nothing says."""
    if (environ.get("SLURM_CPUS_PER_TASK") or "").isdigit():
        return int(environ["SLURM_CPUS_PER_TASK"])
    available = cpus_available()
    return available if available < (os.cpu_count() or available) else None


def set_threads(environ=os.environ) -> int:
    """Torch's CPU threads: the allocated CPUs shared by this node's processes (LOCAL_WORLD_SIZE), unless
    OMP_NUM_THREADS says how many (torchrun sets 1 for several processes); a task given 1 CPU ran 2
    threads, each waiting on the other. Returns the threads."""
    cpus = allocated_cpus(environ)
    if cpus is not None and "OMP_NUM_THREADS" not in environ:
        threads = max(1, cpus // max(1, int(environ.get("LOCAL_WORLD_SIZE") or 1)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    return torch.get_num_threads()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Dist) -> None:
    if ctx.ddp:
        dist.barrier()


def mean_over_ranks(value: torch.Tensor, ctx: Dist) -> torch.Tensor:
    if ctx.ddp:
        dist.all_reduce(value, op=dist.ReduceOp.AVG if ctx.device_type == "cuda" else dist.ReduceOp.SUM)
        if ctx.device_type != "cuda":  # gloo has no AVG
            value /= ctx.world_size
    return value


def sum_over_ranks(value: torch.Tensor, ctx: Dist) -> torch.Tensor:
    if ctx.ddp:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_ranks_agree(flag: bool, ctx: Dist) -> bool:
    """True on every rank when flag is true on every rank."""
    return _reduce_flag(flag, ctx, dist.ReduceOp.MIN)


def any_rank(flag: bool, ctx: Dist) -> bool:
    """True on every rank when flag is true on some rank."""
    return _reduce_flag(flag, ctx, dist.ReduceOp.MAX)


def _reduce_flag(flag: bool, ctx: Dist, op) -> bool:
    if not ctx.ddp:
        return flag
    value = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(value, op=op)
    return bool(value.item())


def gather_objects(obj, ctx: Dist) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.ddp:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def torchrun_command(script: str, argv: list[str], nproc: int) -> list[str]:
    """The command that restarts this script under torchrun on nproc local devices."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            script, *argv]


def should_launch_torchrun(no_launch: bool) -> int:
    """Number of GPUs to relaunch on when started plainly on a machine with several, else 0."""
    if no_launch or "RANK" in os.environ or not torch.cuda.is_available():
        return 0
    count = torch.cuda.device_count()
    return count if count > 1 else 0


# dense bf16 tensor-core peak FLOP/s from NVIDIA's data sheets, by a part of the device name; the
# first match wins, so the variants with another peak come before their family's name
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
              "A100": 312e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def cpu_name() -> str:
    """The processor's model name (AMD EPYC ..., Intel Xeon ...): speeds are compared on one processor only."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def process_seconds() -> float | None:
    """Seconds since this process started (Linux: its start time in /proc against the uptime, to 10 ms), the
    interpreter's start and its imports included; None where the system does not say."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def peak_flops(ctx: Dist) -> dict | None:
    """{"flops": peak FLOP/s, "source": where the figure comes from} for this device, or None
    where it is not known (then no MFU is reported rather than a wrong one)."""
    if ctx.device_type != "cuda":
        return None
    name = torch.cuda.get_device_name(ctx.device)
    key = next((key for key in PEAK_FLOPS if key in name), None)
    return {"flops": PEAK_FLOPS[key], "source": f"data sheet, dense bf16 of {key}"} if key else None
