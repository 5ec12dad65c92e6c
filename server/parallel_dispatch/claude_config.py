"""How to register the server with Claude Code: pure logic, no process is run here.

Builds the `claude mcp add/get/remove` command lines, reads what `claude mcp get` printed,
and merges an entry into a project's `.mcp.json` without disturbing anything else in it.
The entry format is the one `claude mcp add --scope project` itself writes.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from parallel_dispatch.errors import DispatchError

DEFAULT_SERVER_NAME = "parallel-dispatch"
Scope = Literal["user", "project", "local"]
SCOPES: tuple[Scope, ...] = ("user", "project", "local")
MCP_JSON = ".mcp.json"


class SetupError(DispatchError):
    """A set-up step cannot be done as asked; the message says what to do instead."""


@dataclass(frozen=True)
class ServerEntry:
    """What Claude Code should start (stdio) or connect to (http) under `name`."""

    name: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "http" if self.url is not None else "stdio"

    def describe(self) -> str:
        """One line for humans: the command line or the URL."""
        return self.url if self.url is not None else shlex.join(self.command)

    def as_mcp_json(self) -> dict[str, Any]:
        """The `.mcp.json` entry, keyed and ordered as Claude Code writes it."""
        if self.url is not None:
            entry: dict[str, Any] = {"type": "http", "url": self.url}
            if self.headers:
                entry["headers"] = dict(self.headers)
            return entry
        return {
            "type": "stdio",
            "command": self.command[0],
            "args": list(self.command[1:]),
            "env": dict(self.env),
        }


def server_launcher(
    python: str | None = None, which: Mapping[str, str | None] | None = None
) -> tuple[str, ...]:
    """The command that starts this installation's server: `<abs path>/parallel-dispatch serve`.

    Prefers the console script beside the running interpreter (the same install, also when
    it is not on PATH), then the one on PATH, then `<python> -m parallel_dispatch serve`.
    `which` maps a name to its PATH lookup (tests pass a dict; None means a real lookup).
    """
    import shutil

    interpreter = Path(python or sys.executable)
    beside = interpreter.with_name("parallel-dispatch")
    if beside.is_file():
        return (str(beside.absolute()), "serve")
    found = (
        which.get("parallel-dispatch") if which is not None else shutil.which("parallel-dispatch")
    )
    if found:
        return (str(Path(found).absolute()), "serve")
    return (str(interpreter.absolute()), "-m", "parallel_dispatch", "serve")


def parse_pairs(values: Sequence[str], separator: str, what: str) -> dict[str, str]:
    """`KEY=VALUE` (or `Name: value`) strings into a dict.

    Raises:
        SetupError: a value has no separator or an empty key.
    """
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition(separator)
        if not sep or not key.strip():
            raise SetupError(f"{what} {value!r} is not of the form KEY{separator}VALUE")
        pairs[key.strip()] = rest.strip() if separator == ":" else rest
    return pairs


# --- the claude CLI ------------------------------------------------------------------------


def claude_add_argv(claude: str, entry: ServerEntry, scope: Scope) -> list[str]:
    """`claude mcp add ...` for the entry."""
    if entry.url is not None:
        argv = [
            claude,
            "mcp",
            "add",
            "--transport",
            "http",
            "--scope",
            scope,
            entry.name,
            entry.url,
        ]
        for name, value in entry.headers.items():
            argv += ["--header", f"{name}: {value}"]
        return argv
    # `-e` takes several values, so it goes after the name and is ended by `--`.
    argv = [claude, "mcp", "add", "--scope", scope, entry.name]
    for key, value in entry.env.items():
        argv += ["-e", f"{key}={value}"]
    return [*argv, "--", *entry.command]


def claude_get_argv(claude: str, name: str) -> list[str]:
    return [claude, "mcp", "get", name]


def claude_remove_argv(claude: str, name: str, scope: str) -> list[str]:
    return [claude, "mcp", "remove", name, "--scope", scope]


@dataclass(frozen=True)
class RegisteredServer:
    """What `claude mcp get <name>` says about a registered server."""

    name: str
    scope: str | None
    status: str
    transport: str
    command: str | None = None
    args: str | None = None
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return "Connected" in self.status and "Failed" not in self.status

    def same_as(self, entry: ServerEntry) -> bool:
        """Whether it starts (or reaches) the same server with the same settings."""
        if entry.url is not None:
            return (
                self.transport == "http"
                and self.url == entry.url
                and self.headers == dict(entry.headers)
            )
        return (
            self.transport == "stdio"
            and self.command == entry.command[0]
            and (self.args or "") == " ".join(entry.command[1:])
            and self.env == dict(entry.env)
        )

    def describe(self) -> str:
        if self.transport == "stdio":
            return " ".join(part for part in (self.command, self.args) if part)
        return self.url or "?"


def parse_mcp_get(name: str, text: str) -> RegisteredServer | None:
    """Read the output of `claude mcp get <name>` (Claude Code 2.1); None if it is not there.

    The output is `name:` then indented `Key: value` lines; `Environment:` and `Headers:`
    are followed by deeper-indented entries; the last line names the scope
    (`claude mcp remove <name> -s <scope>`).
    """
    lines = text.splitlines()
    if f"{name}:" not in (line.strip() for line in lines):
        return None
    fields: dict[str, str] = {}
    sections: dict[str, dict[str, str]] = {"Environment": {}, "Headers": {}}
    section: str | None = None
    scope: str | None = None
    for raw in lines:
        stripped = raw.strip()
        if stripped.startswith(f"To remove this server, run: claude mcp remove {name} -s "):
            scope = stripped.rsplit(" ", 1)[-1]
            continue
        if raw.startswith("    ") and section is not None:
            separator = "=" if section == "Environment" else ":"
            key, _, value = stripped.partition(separator)
            sections[section][key.strip()] = value.strip() if separator == ":" else value
            continue
        section = None
        if raw.startswith("  ") and ":" in stripped:
            key, _, value = stripped.partition(":")
            if key in sections and not value.strip():
                section = key
            else:
                fields[key] = value.strip()
    return RegisteredServer(
        name=name,
        scope=scope,
        status=fields.get("Status", ""),
        transport=fields.get("Type", "stdio"),
        command=fields.get("Command"),
        args=fields.get("Args"),
        url=fields.get("URL"),
        env=sections["Environment"],
        headers=sections["Headers"],
    )


# --- .mcp.json -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeOutcome:
    """The merged file text and what happened to our entry: added, unchanged or replaced."""

    text: str
    action: Literal["added", "unchanged", "replaced"]


def merge_mcp_json(existing: str | None, entry: ServerEntry, *, force: bool) -> MergeOutcome:
    """Put `entry` into a `.mcp.json` text, keeping every other server and key as they were.

    Keys keep their order (ours goes last when new); the result is 2-space indented JSON
    with a final newline.

    Raises:
        SetupError: the file is not a JSON object with an `mcpServers` object, or it already
            has a different server under this name and `force` is false.
    """
    document: dict[str, Any] = {}
    if existing is not None and existing.strip():
        try:
            loaded = json.loads(existing)
        except json.JSONDecodeError as exc:
            raise SetupError(
                f"{MCP_JSON} is not valid JSON ({exc}); fix or move it, then run this again"
            ) from exc
        if not isinstance(loaded, dict):
            raise SetupError(f"{MCP_JSON} must hold a JSON object with an mcpServers object")
        document = loaded
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise SetupError(f'"mcpServers" in {MCP_JSON} must be an object; fix it by hand first')
    wanted = entry.as_mcp_json()
    current = servers.get(entry.name)
    if current == wanted:
        action: Literal["added", "unchanged", "replaced"] = "unchanged"
    elif current is None:
        action = "added"
    elif not force:
        raise SetupError(
            f"{MCP_JSON} already has a different server named {entry.name!r} "
            f"({json.dumps(current, sort_keys=True)}); rerun with --force to replace it, "
            "or choose another --name"
        )
    else:
        action = "replaced"
    servers[entry.name] = wanted
    return MergeOutcome(json.dumps(document, indent=2, ensure_ascii=False) + "\n", action)
