"""Settings: environment variables prefixed PARALLEL_DISPATCH_, each also a `serve` flag.

Only `cli.py` instantiates `Settings()`; everything else receives it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/parallel-dispatch`, else `~/.local/state/parallel-dispatch`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(base) / "parallel-dispatch"


def default_database_url(environ: dict[str, str] | None = None) -> str:
    return f"sqlite:///{default_state_dir(environ) / 'parallel-dispatch.db'}"


class Settings(BaseSettings):
    """Every setting of the server. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="PARALLEL_DISPATCH_", extra="ignore")

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL; sqlite:///path or postgresql+psycopg://...",
    )
    max_parallel: int = Field(10, ge=1, le=1000, description="hard cap on width")
    max_active_agents: int = Field(
        20, ge=1, le=10_000, description="agent slots shared by all open coordinations"
    )
    task_timeout_s: float = Field(
        1800.0, gt=0, le=7 * 24 * 3600, description="a running task is timed_out after this"
    )
    host_pressure: bool = Field(True, description="on/off: let CPU and memory shrink width")
    load_per_core_high: float = Field(1.5, gt=0, description="1-min load per core seen as busy")
    memory_available_low: float = Field(
        0.10, ge=0, le=1, description="available memory fraction seen as scarce"
    )
    max_tasks: int = Field(1000, ge=1, le=100_000, description="most tasks in one call")
    auth_token: SecretStr | None = Field(None, description="bearer token for HTTP")
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    otlp_endpoint: str | None = Field(None, description="OTLP base URL, e.g. http://127.0.0.1:4318")
    otlp_protocol: str | None = Field(None, description="http/protobuf (default) or grpc")
    otlp_headers: str | None = Field(None, description="k=v,k2=v2 sent to the collector")
    service_name: str | None = Field(None, description="OTel service.name")
