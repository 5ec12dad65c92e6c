"""Set-up commands: `install claude`, `install agents` and `doctor`.

They print for a human (click.echo to stdout); none of them serves the protocol. The logic
lives in `claude_config`, `agent_templates` and `doctor`; this module runs processes, writes
files and renders the outcome.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from parallel_dispatch.agent_templates import plan_agent_files
from parallel_dispatch.claude_config import (
    DEFAULT_SERVER_NAME,
    MCP_JSON,
    SCOPES,
    RegisteredServer,
    Scope,
    ServerEntry,
    SetupError,
    claude_add_argv,
    claude_get_argv,
    claude_remove_argv,
    merge_mcp_json,
    parse_mcp_get,
    parse_pairs,
    server_launcher,
)
from parallel_dispatch.doctor import (
    CheckResult,
    check_claude,
    check_database,
    check_telemetry,
    load_settings,
    run_command,
)

NEXT_STEPS = (
    "next: `claude mcp list` should show it ✔ Connected; "
    "`parallel-dispatch install agents` adds the orchestrator and worker agents."
)


@click.group()
def install() -> None:
    """Register the server with Claude Code and add the agent templates."""


@install.command("claude")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="user",
    show_default=True,
    help="user: all your projects; project: this directory's .mcp.json; local: you, here.",
)
@click.option("--http", "url", default=None, help="Use a running HTTP server at this /mcp URL.")
@click.option("--name", default=DEFAULT_SERVER_NAME, show_default=True, help="Server name.")
@click.option("--env", "env", multiple=True, help="KEY=VALUE for the server (stdio), repeatable.")
@click.option(
    "--header", "headers", multiple=True, help="'Name: value' sent to --http, repeatable."
)
@click.option("--force", is_flag=True, help="Replace a different server of the same name.")
@click.option("--no-cli", is_flag=True, help="Do not use the claude CLI (--scope project only).")
@click.option("--dry-run", is_flag=True, help="Print what would be run or written; change nothing.")
def install_claude(
    scope: Scope,
    url: str | None,
    name: str,
    env: tuple[str, ...],
    headers: tuple[str, ...],
    force: bool,
    no_cli: bool,
    dry_run: bool,
) -> None:
    """Register parallel-dispatch as an MCP server of Claude Code (idempotent).

    With the claude CLI on PATH this runs `claude mcp add`; with --scope project and no CLI
    (or --no-cli) it merges the server into ./.mcp.json, keeping the other servers.
    """
    if url is not None and env:
        raise click.UsageError("--env applies to a server Claude Code starts, not to --http")
    if url is None and headers:
        raise click.UsageError("--header applies to --http only")
    if url is not None and not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--http wants a URL like http://127.0.0.1:8765/mcp, not {url!r}")
    try:
        entry = ServerEntry(
            name=name,
            command=() if url else server_launcher(),
            env=parse_pairs(env, "=", "--env"),
            url=url,
            headers=parse_pairs(headers, ":", "--header"),
        )
        claude = None if no_cli else shutil.which("claude")
        if claude is None:
            _install_without_cli(entry, scope, force=force, dry_run=dry_run, asked_no_cli=no_cli)
        else:
            _install_with_cli(claude, entry, scope, force=force, dry_run=dry_run)
    except SetupError as exc:
        raise click.ClickException(str(exc)) from exc


def _install_without_cli(
    entry: ServerEntry, scope: Scope, *, force: bool, dry_run: bool, asked_no_cli: bool
) -> None:
    if scope != "project":
        why = "--no-cli was given" if asked_no_cli else "the claude CLI is not on PATH"
        snippet = json_snippet(entry)
        raise SetupError(
            f"{why}, and --scope {scope} is kept by Claude Code itself. Install Claude Code "
            "(https://code.claude.com) and run this again, or use --scope project to write "
            f"./{MCP_JSON}, or add this to your Claude Code config by hand:\n{snippet}"
        )
    path = Path.cwd() / MCP_JSON
    existing = path.read_text() if path.exists() else None
    outcome = merge_mcp_json(existing, entry, force=force)
    if outcome.action == "unchanged":
        click.echo(f"{path} already has {entry.name}: {entry.describe()} (unchanged)")
        return
    if dry_run:
        click.echo(f"would write {path} ({outcome.action} {entry.name}):\n{outcome.text}", nl=False)
        return
    _write_atomically(path, outcome.text)
    click.echo(f"{outcome.action} {entry.name} in {path}: {entry.describe()}")
    click.echo(
        "Claude Code asks to approve project servers on first use (or set "
        "enableAllProjectMcpServers). " + NEXT_STEPS
    )


def _install_with_cli(
    claude: str, entry: ServerEntry, scope: Scope, *, force: bool, dry_run: bool
) -> None:
    existing = _registered(claude, entry.name)
    steps: list[list[str]] = []
    if existing is not None:
        where = f"{existing.scope or 'unknown'} scope"
        same = existing.same_as(entry)
        if same and (existing.scope == scope or not force):
            moved = (
                ""
                if existing.scope == scope
                else f"; it is what Claude Code uses here (--force moves it to {scope} scope)"
            )
            click.echo(
                f"{entry.name} is already registered with Claude Code ({where}): "
                f"{existing.describe()} — nothing to do{moved}"
            )
            return
        if not same and not force:
            raise SetupError(
                f"Claude Code already has a different server named {entry.name!r} ({where}: "
                f"{existing.describe()}); this install would run {entry.describe()}. Rerun "
                "with --force to replace it, or choose another --name"
            )
        steps.append(claude_remove_argv(claude, entry.name, existing.scope or scope))
    steps.append(claude_add_argv(claude, entry, scope))
    if dry_run:
        for argv in steps:
            click.echo(f"would run: {shlex.join(argv)}")
        return
    for argv in steps:
        done = _run(argv)
        if done.returncode != 0:
            raise SetupError(
                f"`{shlex.join(argv)}` failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
    click.echo(
        f"registered {entry.name} with Claude Code ({scope} scope): {entry.describe()}\n"
        + NEXT_STEPS
    )


def _registered(claude: str, name: str) -> RegisteredServer | None:
    done = _run(claude_get_argv(claude, name))
    registered = parse_mcp_get(name, done.stdout)
    if registered is None and done.returncode != 0 and "No MCP server" not in done.stderr:
        raise SetupError(
            f"`claude mcp get {name}` failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return registered


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return run_command(argv)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"`{shlex.join(argv)}` did not run: {exc}") from exc


def json_snippet(entry: ServerEntry) -> str:
    return json.dumps({"mcpServers": {entry.name: entry.as_mcp_json()}}, indent=2)


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step so an interrupted write never leaves half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        scratch.write_text(text)
        scratch.replace(path)
    except OSError as exc:
        raise SetupError(f"cannot write {path}: {exc}") from exc


@install.command("agents")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".claude/agents"),
    show_default=True,
    help="Where Claude Code looks for agents (~/.claude/agents for every project).",
)
@click.option("--force", is_flag=True, help="Overwrite agent files that differ from ours.")
@click.option("--dry-run", is_flag=True, help="Print what would be written; change nothing.")
@click.option(
    "--server-name",
    default=DEFAULT_SERVER_NAME,
    show_default=True,
    help="The name the server is registered under (tool names are mcp__<name>__*).",
)
def install_agents(directory: Path, force: bool, dry_run: bool, server_name: str) -> None:
    """Write the parallel-orchestrator and parallel-worker sub-agent definitions."""
    planned = plan_agent_files(directory, force=force, server_name=server_name)
    refused = [f for f in planned if f.action == "refuse"]
    if refused:
        names = ", ".join(str(f.path) for f in refused)
        raise click.ClickException(
            f"{names} already exist(s) with different content; nothing was written. "
            "Rerun with --force to overwrite, or --dir to write elsewhere."
        )
    past = {"create": "created", "replace": "replaced", "unchanged": "unchanged"}
    for file in planned:
        if dry_run:
            if file.action == "unchanged":
                click.echo(f"unchanged: {file.path}")
            else:
                click.echo(f"would {file.action} {file.path}:\n{file.text}")
            continue
        if file.action != "unchanged":
            try:
                _write_atomically(file.path, file.text)
            except SetupError as exc:
                raise click.ClickException(str(exc)) from exc
        click.echo(f"{past[file.action]}: {file.path}")


@click.command()
@click.option("--database-url", default=None, help="PARALLEL_DISPATCH_DATABASE_URL.")
@click.option("--otlp-endpoint", default=None, help="PARALLEL_DISPATCH_OTLP_ENDPOINT.")
@click.option("--name", default=DEFAULT_SERVER_NAME, show_default=True, help="Server name.")
def doctor(database_url: str | None, otlp_endpoint: str | None, name: str) -> None:
    """Check the database, configuration, telemetry and Claude Code; say what to fix.

    Exits 1 when any check fails. The database is migrated, as `serve` would.
    """
    overrides: dict[str, Any] = {"database_url": database_url, "otlp_endpoint": otlp_endpoint}
    settings, configuration = load_settings(overrides)
    results: list[CheckResult] = [configuration]
    if settings is not None:
        results.append(check_database(settings.database_url))
        results.append(check_telemetry(settings, os.environ))
    results.append(check_claude(shutil.which("claude"), name))
    for result in results:
        click.echo(result.line())
    failed = [r.check for r in results if r.level == "fail"]
    if failed:
        click.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        click.get_current_context().exit(1)
    warned = sum(1 for r in results if r.level == "warn")
    click.echo("all checks passed" + (f" ({warned} warning(s))" if warned else ""))
