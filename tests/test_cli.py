"""The command line: settings from variables and flags, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from parallel_dispatch.cli import main
from parallel_dispatch.settings import Settings, default_database_url


def test_settings_default_to_the_contract_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_PARALLEL", "MAX_ACTIVE_AGENTS", "TASK_TIMEOUT_S", "HOST_PRESSURE"):
        monkeypatch.delenv(f"PARALLEL_DISPATCH_{name}", raising=False)
    settings = Settings()
    assert (settings.max_parallel, settings.max_active_agents) == (10, 20)
    assert settings.task_timeout_s == 1800
    assert settings.host_pressure is True
    assert settings.auth_token is None


@pytest.mark.parametrize(("value", "expected"), [("off", False), ("on", True)])
def test_host_pressure_reads_on_and_off(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("PARALLEL_DISPATCH_HOST_PRESSURE", value)
    assert Settings().host_pressure is expected


def test_the_default_database_follows_xdg_state_home(tmp_path: Path) -> None:
    url = default_database_url({"XDG_STATE_HOME": str(tmp_path), "HOME": "/nowhere"})
    assert url == f"sqlite:///{tmp_path}/parallel-dispatch/parallel-dispatch.db"
    fallback = default_database_url({"HOME": str(tmp_path)})
    assert fallback == f"sqlite:///{tmp_path}/.local/state/parallel-dispatch/parallel-dispatch.db"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve", "--max-parallel", "0"], {}, "max_parallel"),
        (["serve"], {"PARALLEL_DISPATCH_MAX_ACTIVE_AGENTS": "-1"}, "max_active_agents"),
        (["serve", "--http", "--host", "0.0.0.0"], {}, "PARALLEL_DISPATCH_AUTH_TOKEN"),
        (["serve", "--otlp-headers", "no-equals-sign"], {}, "telemetry"),
    ],
)
def test_bad_settings_are_refused_before_serving(
    args: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    env = {"PARALLEL_DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", **env}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2
    assert expected in result.output
    assert not (tmp_path / "x.db").exists()


def test_every_setting_is_also_a_serve_flag() -> None:
    serve = main.commands["serve"]
    flags = {opt.lstrip("-").replace("-", "_") for p in serve.params for opt in p.opts}
    missing = set(Settings.model_fields) - flags
    assert missing == set()
