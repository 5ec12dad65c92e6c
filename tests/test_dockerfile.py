"""The Dockerfile is lint-clean and builds the image the contract describes.

No Docker engine runs in CI (see docs/ci.md), so the image is checked statically: hadolint
with failure on warnings, plus the structure a user of the image relies on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port, http_server, server_env

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continuations and dropping comments."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    return instructions


def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage() -> list[Instruction]:
    parsed = instructions()
    last = max(i.stage for i in parsed)
    return [i for i in parsed if i.stage == last]


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extras (`pip install -e '.[test]'`)")
    return found


def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_warning_so_the_lint_test_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3008" in result.stdout  # unpinned apt package


def test_image_is_built_in_two_stages_and_the_runtime_copies_from_the_build() -> None:
    froms = [i for i in instructions() if i.keyword == "FROM"]
    assert len(froms) == 2
    build_name = froms[0].arguments.split()[-1]
    assert re.search(r"\bAS\s+\S+$", froms[0].arguments, re.IGNORECASE), "name the build stage"
    copies_from_build = [
        i for i in final_stage() if i.keyword == "COPY" and f"--from={build_name}" in i.arguments
    ]
    assert copies_from_build, "the runtime stage must take the built venv from the build stage"
    assert not any(i.keyword == "COPY" and "server" in i.arguments for i in final_stage()), (
        "the runtime stage must not copy sources; it gets the installed package"
    )


def test_runtime_runs_as_a_non_root_user_that_the_image_creates() -> None:
    stage = final_stage()
    users = [i.arguments.split(":")[0] for i in stage if i.keyword == "USER"]
    assert users, "the runtime stage needs a USER"
    user = users[-1]
    assert user not in {"root", "0"}
    useradds = [i.arguments for i in stage if i.keyword == "RUN" and "useradd" in i.arguments]
    assert useradds, "the runtime stage must create its user"
    created = " ".join(useradds)
    if user.isdigit():
        assert re.search(rf"--uid\s+{user}\b", created), f"uid {user} is never created"
    else:
        assert re.search(rf"useradd\b[^&;]*\s{re.escape(user)}(\s|$)", created), (
            f"user {user} is never created"
        )
    user_at = stage.index(next(i for i in stage if i.keyword == "USER"))
    create_at = stage.index(next(i for i in stage if "useradd" in i.arguments))
    assert create_at < user_at


def test_database_defaults_to_sqlite_on_a_data_volume_owned_by_the_user() -> None:
    stage = final_stage()
    env = " ".join(i.arguments for i in stage if i.keyword == "ENV")
    assert "PARALLEL_DISPATCH_DATABASE_URL=sqlite:////data/" in env
    volumes = [json.loads(i.arguments) for i in stage if i.keyword == "VOLUME"]
    assert ["/data"] in volumes
    assert any(
        i.keyword == "RUN" and re.search(r"chown\s+\S+\s+/data", i.arguments) for i in stage
    ), "the non-root user must be able to write the volume"


def test_healthcheck_probes_healthz_with_python_not_curl() -> None:
    checks = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].arguments.partition("CMD ")
    assert "--interval" in options
    argv = json.loads(command)
    assert argv[0] == "python"
    assert "curl" not in checks[0].arguments
    probe = argv[-1]
    compile(probe, "<healthcheck>", "exec")  # the probe is valid Python
    # The probe asks loopback for /healthz on the server's port: 8765 unless the user moved it
    # with PARALLEL_DISPATCH_PORT, which the server reads as well.
    assert "http://127.0.0.1:%s/healthz" in probe
    assert "os.environ.get('PARALLEL_DISPATCH_PORT', '8765')" in probe


def healthcheck_probe() -> str:
    check = next(i for i in final_stage() if i.keyword == "HEALTHCHECK")
    probe: str = json.loads(check.arguments.partition("CMD ")[2])[-1]
    return probe


def test_healthcheck_probe_succeeds_against_a_running_server_and_fails_without_one(
    tmp_path: Path,
) -> None:
    # Without a Docker engine, run the image's probe with this Python against the real server.
    probe = healthcheck_probe()
    database_url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    env = server_env(database_url)
    with http_server(database_url, tmp_path) as (base_url, _process):
        port = base_url.rsplit(":", 1)[1]
        healthy = subprocess.run(
            [sys.executable, "-c", probe],
            env={**env, "PARALLEL_DISPATCH_PORT": port},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert healthy.returncode == 0, healthy.stderr
    unhealthy = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PARALLEL_DISPATCH_PORT": port},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert unhealthy.returncode != 0


def test_image_command_refuses_all_interfaces_without_a_token(tmp_path: Path) -> None:
    stage = final_stage()
    entrypoint = next(json.loads(i.arguments) for i in stage if i.keyword == "ENTRYPOINT")
    cmd = next(json.loads(i.arguments) for i in stage if i.keyword == "CMD")
    executable = Path(sys.executable).with_name(entrypoint[0])
    env = server_env(
        f"sqlite:///{tmp_path / 'dispatch.db'}", PARALLEL_DISPATCH_PORT=str(free_port())
    )
    refused = subprocess.run(
        [str(executable), *entrypoint[1:], *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "PARALLEL_DISPATCH_AUTH_TOKEN" in refused.stderr


def test_entrypoint_and_cmd_are_exec_form_and_serve_http_on_all_interfaces() -> None:
    stage = final_stage()
    entrypoints = [json.loads(i.arguments) for i in stage if i.keyword == "ENTRYPOINT"]
    cmds = [json.loads(i.arguments) for i in stage if i.keyword == "CMD"]
    assert entrypoints == [["parallel-dispatch"]]
    assert cmds == [["serve", "--http", "--host", "0.0.0.0"]]


def test_dockerfile_tells_the_user_to_pass_the_auth_token() -> None:
    # Binding 0.0.0.0 requires PARALLEL_DISPATCH_AUTH_TOKEN (DESIGN.md, Transports).
    comments = "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if line.lstrip().startswith("#")
    )
    assert "-e PARALLEL_DISPATCH_AUTH_TOKEN=" in comments
    assert not any(
        "PARALLEL_DISPATCH_AUTH_TOKEN=" in i.arguments
        for i in instructions()
        if i.keyword in {"ENV", "ARG"}
    ), "a token baked into the image is a shared secret"


def test_build_context_includes_what_pip_needs_and_leaves_out_local_state() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = " ".join(i.arguments for i in instructions() if i.keyword == "COPY")
    for needed in ("pyproject.toml", "README.md", "server"):
        assert needed not in ignored
        assert needed in shlex.split(copied)


@pytest.mark.slow
def test_build_stage_wheel_from_the_copied_files_carries_the_whole_package_and_migrates(
    tmp_path: Path,
) -> None:
    # The editable install of the test run hides missing package data; the image does not.
    # Build the wheel the way the build stage does, from only what its COPY lines take.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(
        REPO / "server",
        context / "server",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("parallel_dispatch-*.whl")

    package = context / "server" / "parallel_dispatch"
    sources = {
        path.relative_to(package.parent).as_posix() for path in package.rglob("*") if path.is_file()
    }
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    assert sources - packaged == set(), "files the image would lack"

    # The packaged copy, not the editable checkout, migrates a fresh database.
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PARALLEL_DISPATCH_")
    }
    env["PYTHONPATH"] = str(tmp_path / "installed")
    env["PARALLEL_DISPATCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'image.db'}"
    upgraded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, parallel_dispatch, parallel_dispatch.cli as cli; "
            "print(parallel_dispatch.__file__, file=sys.stderr); "
            "sys.argv = ['parallel-dispatch', 'db', 'upgrade']; cli.main()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert str(tmp_path / "installed") in upgraded.stderr
    assert (tmp_path / "image.db").is_file()
