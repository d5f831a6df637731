"""KerasTuner's own distributed mode: one chief serves trials, workers run them."""

from __future__ import annotations

import os

from ..errors import ConfigError


def configure_distributed(role: str | None, oracle: str | None, worker_id: str | None = None) -> str | None:
    """Set KerasTuner's chief/worker environment; return the role (None: not distributed).

    KerasTuner's own distributed mode: the chief serves the oracle over gRPC at
    ``oracle`` (HOST:PORT) and runs no trial; each worker asks it for trials. Values
    already in the KERASTUNER_* environment variables are used when flags are absent.
    """
    import socket

    role = role or ({"chief": "chief"}.get(os.environ.get("KERASTUNER_TUNER_ID", ""), None)
                    or ("worker" if os.environ.get("KERASTUNER_TUNER_ID") else None))
    if role is None:
        return None
    if oracle:
        host, _, port = oracle.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--oracle expects HOST:PORT (e.g. 10.0.0.1:8000); received {oracle!r}.")
        os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
    if not (os.environ.get("KERASTUNER_ORACLE_IP") and os.environ.get("KERASTUNER_ORACLE_PORT")):
        raise ConfigError("Distributed tuning needs the chief's address: pass --oracle HOST:PORT "
                          "(or set KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT).")
    if role == "chief":
        os.environ["KERASTUNER_TUNER_ID"] = "chief"
    elif not os.environ.get("KERASTUNER_TUNER_ID") or os.environ["KERASTUNER_TUNER_ID"] == "chief":
        os.environ["KERASTUNER_TUNER_ID"] = f"tuner-{worker_id or f'{socket.gethostname()}-{os.getpid()}'}"
    return role
