"""Whether a download can work, asked before it starts: a machine without network gets one clear
error in seconds instead of a minute of retries and a traceback (FineWeb-Edu, OpenAI's GPT-2 from
the Hugging Face hub, lm-eval's datasets). `HF_HUB_OFFLINE=1`, Hugging Face's own switch, says
"offline" without asking."""

from __future__ import annotations

import os
import socket

HUB = "huggingface.co"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within timeout seconds (a name that does not
    resolve, a refused or a silent connection all say no)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def said_offline() -> bool:
    """Whether the user set Hugging Face's offline switch."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in OFFLINE_VARIABLES)


def hub_offline() -> bool:
    """Whether the Hugging Face hub is out of reach here: said so (HF_HUB_OFFLINE=1), or asked."""
    return said_offline() or not reachable(HUB)


def offline_environment() -> dict[str, str]:
    """The environment under which huggingface_hub, transformers and datasets read their caches only,
    failing at once for what is not there (they read it when they are imported)."""
    return {**os.environ, **{name: "1" for name in OFFLINE_VARIABLES}}
