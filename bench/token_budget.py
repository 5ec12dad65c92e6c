"""What the tool surface costs the model, in tokens: `tools/list` and a 10-task fan-out.

The text measured is what Claude Code hands the model: for `tools/list`, each tool's name
(as `mcp__parallel-dispatch__<tool>`), description and input schema (and, in a second
column, the output schema too, which Claude Code does not send today); for answers, the
tool result's text content (the JSON of the structured result). Tokens are ESTIMATES, not
a tokenizer's count — two tiktoken-free approximations are printed side by side:

- chars/4: the usual rule of thumb for English with Claude/GPT tokenizers;
- word/punct: each run of letters costs ceil(len/7) tokens, each run of digits ceil(len/3),
  each run of other non-space characters (JSON punctuation, quotes, underscores)
  ceil(len/2); spaces are free. JSON is punctuation-heavy, so for schemas this is usually the
  higher (more conservative) figure.

The budget check uses the larger of the two. Targets (issue 5): the whole `tools/list`
well under 2,000 tokens; a `record_result` answer of a 10-task fan-out a few hundred tokens
(the final one, which carries every summary, is measured and reported separately).

    .venv/bin/python bench/token_budget.py [--summary-words 40] [--prompt-words 40]

Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from parallel_dispatch.server import SERVER_NAME, build_server
from parallel_dispatch.settings import Settings

TOOLS_LIST_TARGET = 2000
PROGRESS_TARGET = 400
TASKS = 10
_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[^A-Za-z0-9\s]+")
_FILLER_TEXT = (
    "checked the module for unhandled errors and found two call sites that swallow "
    "exceptions from the store layer which should be reported to the caller instead of "
    "logged so the fix is a small change in each with a regression test covering both"
)


def chars_over_4(text: str) -> int:
    return math.ceil(len(text) / 4)


def word_punct(text: str) -> int:
    total = 0
    for piece in _PIECES.findall(text):
        if piece[0].isalpha():
            total += math.ceil(len(piece) / 7)
        elif piece[0].isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += math.ceil(len(piece) / 2)
    return total


def tokens(text: str) -> int:
    """The conservative estimate used for the targets."""
    return max(chars_over_4(text), word_punct(text))


def words(count: int, salt: int) -> str:
    filler = _FILLER_TEXT.split()
    return " ".join(filler[(salt + i) % len(filler)] for i in range(count))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def answer_text(result: Any) -> str:
    """What the model reads of a tool result: its text content blocks."""
    if result.is_error:
        raise RuntimeError(f"tool error: {result.content}")
    return "".join(getattr(block, "text", "") for block in result.content)


async def measure(summary_words: int, prompt_words: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="token-budget-") as scratch:
        settings = Settings(database_url=f"sqlite:///{Path(scratch) / 'b.db'}", host_pressure=False)
        async with Client(build_server(settings)) as client:
            tools = (await client.list_tools()).tools
            per_tool = []
            for tool in tools:
                seen = {
                    "name": f"mcp__{SERVER_NAME}__{tool.name}",
                    "description": tool.description or "",
                    "input_schema": tool.input_schema,
                }
                with_output = {**seen, "output_schema": tool.output_schema}
                per_tool.append(
                    {
                        "tool": tool.name,
                        "description": compact(seen["description"]),
                        "input_schema": compact(tool.input_schema),
                        "output_schema": compact(tool.output_schema or {}),
                        "seen": compact(seen),
                        "with_output": compact(with_output),
                    }
                )
            tasks = [
                {
                    "id": f"t{i}",
                    "agent": "general-purpose",
                    "prompt": f"Task t{i}: " + words(prompt_words, i),
                }
                for i in range(TASKS)
            ]
            registered = await client.call_tool(
                "register_coordination", {"tasks": tasks, "label": "token budget"}
            )
            register_text = answer_text(registered)
            assert registered.structured_content is not None
            coordination_id = registered.structured_content["coordination_id"]
            progress_texts = []
            for i in range(TASKS):
                answer = await client.call_tool(
                    "record_result",
                    {
                        "coordination_id": coordination_id,
                        "task_id": f"t{i}",
                        "status": "succeeded",
                        "summary": words(summary_words, 3 * i),
                    },
                )
                progress_texts.append(answer_text(answer))
            final_view = answer_text(
                await client.call_tool("get_coordination", {"coordination_id": coordination_id})
            )
    return {
        "per_tool": per_tool,
        "register": register_text,
        "first_progress": progress_texts[0],
        "progress_typical": progress_texts[TASKS // 2],
        "final_progress": progress_texts[-1],
        "get_coordination": final_view,
    }


def row(label: str, text: str) -> str:
    return f"{label:<44} {len(text):>7} {chars_over_4(text):>8} {word_punct(text):>10}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary-words", type=int, default=40, help="words per summary")
    parser.add_argument("--prompt-words", type=int, default=40, help="words per task prompt")
    args = parser.parse_args()
    data = anyio.run(measure, args.summary_words, args.prompt_words)

    header = f"{'text':<44} {'chars':>7} {'chars/4':>8} {'word/punct':>10}"
    print("tools/list as the model sees it (name, description, input schema)")
    print(header)
    for tool in data["per_tool"]:
        print(row(f"  {tool['tool']}: description", tool["description"]))
        print(row(f"  {tool['tool']}: input schema", tool["input_schema"]))
        print(row(f"  {tool['tool']}: whole entry", tool["seen"]))
        print(row(f"  {tool['tool']}: + output schema", tool["output_schema"]))
    tools_seen = "[" + ",".join(t["seen"] for t in data["per_tool"]) + "]"
    tools_all = "[" + ",".join(t["with_output"] for t in data["per_tool"]) + "]"
    print(row("tools/list total", tools_seen))
    print(row("tools/list total with output schemas", tools_all))
    print()
    print(
        f"answers of a {TASKS}-task fan-out ({args.prompt_words}-word prompts, "
        f"{args.summary_words}-word summaries)"
    )
    print(header)
    print(row("register_coordination", data["register"]))
    print(row("record_result, first (launch empty)", data["first_progress"]))
    print(row("record_result, typical (mid-way)", data["progress_typical"]))
    print(row("record_result, final (all results)", data["final_progress"]))
    print(row("get_coordination, completed", data["get_coordination"]))
    print()

    checks = [
        ("tools/list", tokens(tools_seen), TOOLS_LIST_TARGET),
        ("typical record_result", tokens(data["progress_typical"]), PROGRESS_TARGET),
    ]
    missed = False
    for name, value, target in checks:
        verdict = "ok" if value < target else "MISSED"
        missed |= value >= target
        print(f"{verdict:<6} {name}: ~{value} tokens (target < {target})")
    print(
        "final record_result: ~"
        f"{tokens(data['final_progress'])} tokens, of which the {TASKS} summaries are "
        f"~{sum(tokens(words(args.summary_words, 3 * i)) for i in range(TASKS))}"
    )
    print("estimates: chars/4 and word/punct heuristics, not a tokenizer; target uses the max")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
