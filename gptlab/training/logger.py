"""The run log: `log.txt` lines `<step> <key> <value>` (build-nanogpt's format: `train`,
`val`, `hella`; other keys for other records), `# ` header lines that describe the run.
Only rank 0 writes. The file is appended to, never truncated."""

from __future__ import annotations

import json
import re
from pathlib import Path


class RunLog:
    def __init__(self, log_dir: Path, enabled: bool = True):
        self.path = Path(log_dir) / "log.txt"
        self.enabled = enabled
        # a write cut short (a full disk, a kill) left a line without its end: the next line starts afresh
        self._broken = enabled and ends_mid_line(self.path)

    def _write(self, line: str) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(("\n" if self._broken else "") + line + "\n")
            self._broken = False

    def header(self, key: str, value) -> None:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        self._write(f"# {key} {text}")

    def record(self, step: int, key: str, value) -> None:
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        self._write(f"{step} {key} {text}")


def read_header(path: Path) -> dict:
    """{key: value} of a log.txt's `# ` header lines (JSON values decoded); the last wins."""
    header = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("# "):
            key, _, text = line[2:].partition(" ")
            try:
                header[key] = json.loads(text)
            except json.JSONDecodeError:
                header[key] = text
    return header


def header_values(path: Path, key: str) -> list:
    """Every value a log.txt's `# key` header lines gave, in order: one per attempt of a resumed run."""
    values = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(f"# {key} "):
            try:
                values.append(json.loads(line[len(key) + 3:]))
            except json.JSONDecodeError:
                values.append(line[len(key) + 3:])
    return values


def read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value), ...]} of the numeric records in a log.txt, as the run stands: a resumed attempt
    (its `# run resumed from ... at step N` line) redoes the steps after N, so what the attempts before it
    logged there is dropped, as the TensorBoard tracker's purge hides it (a record only an abandoned attempt
    wrote, its `startup` or a val it reached before it died, is gone); the evaluation at N itself was logged
    before N's checkpoint and stays. Otherwise the last value for a step wins (step N's train is logged again)."""
    series: dict[str, dict[int, float]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# run resumed from ") and (match := RESUMED_AT.search(line)):
            step = int(match.group(1))
            series = {key: {s: v for s, v in values.items() if s <= step} for key, values in series.items()}
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        try:
            series.setdefault(parts[1], {})[int(parts[0])] = float(parts[2])
        except ValueError:
            continue
    return {key: sorted(values.items()) for key, values in series.items() if values}


def resumed(checkpoint, step: int) -> str:
    """The `# run` header of an attempt resumed from a checkpoint at its step: what read_log reads back."""
    return f"resumed from {checkpoint} at step {step}"


RESUMED_AT = re.compile(r" at step (\d+)$")  # the end of resumed()'s line


def ends_mid_line(path: Path) -> bool:
    """Whether a file's last line lacks its newline."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:  # absent or empty
        return False
