"""Every shell block the docs mark runnable is run and prints what the docs show, so no example
can rot.

Marks, in README.md and docs/*.md, each an HTML comment on the line before a fence:

- `<!-- runnable -->`: a ```console block of `$ command` lines, each followed by the output it
  must print (stdout and stderr as one stream; a line `...` stands for any lines, `...` within
  a line for any text), or by none, and then it must succeed.
- `<!-- background -->`: a ```sh block of servers the page starts in other shells (one command
  a line; `make X` runs X's recipe). They run beside the page's next runnable block, which
  starts once every `127.0.0.1:PORT` and `--port PORT` they name accepts connections, and
  are stopped after it. Such a block runs in a network namespace of its own (unshare), so the
  ports the docs name are free whatever else runs on the machine.
- `<!-- file: NAME -->`: the block is the file NAME for the page's runnable blocks, so the
  config a page shows is the one its commands read.

Blocks run in a scratch directory holding a copy of examples/ and the test's .venv, with that
.venv's bin first on PATH and none of the variables ratelimitd reads."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, clean_environment

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- (runnable|background|file: (\S+)) -->$")
FENCE = re.compile(r"```(\w*)$")
PORT = re.compile(r"(?:127\.0\.0\.1:|--port )(\d+)")
# Servers must answer within this, and a block finish within it once they do.
TIMEOUT_S = 60


@dataclass(frozen=True)
class Block:
    """A runnable block, with the servers to run beside it and the files of its page."""

    page: Path
    line: int  # of the fence, 1-based
    language: str
    text: str
    background: tuple[str, ...]
    files: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def shell_lines(text: str) -> list[str]:
    """A block's lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def marked_blocks(page: Path) -> list[Block]:
    """The page's runnable blocks."""
    lines = page.read_text().splitlines()
    found: list[tuple[int, str, str]] = []  # (fence line, language, text) of runnable ones
    background: dict[int, list[str]] = {}  # by the number of runnable blocks before
    files: list[tuple[str, str]] = []
    for number, line in enumerate(lines):
        mark = MARK.match(line)
        if not mark:
            continue
        fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        assert fence, f"{page.relative_to(REPO)}:{number + 1}: a mark not before a fence"
        end = lines.index("```", number + 2)
        text = "\n".join(lines[number + 2 : end]) + "\n"
        if mark.group(2):
            files.append((mark.group(2), text))
        elif mark.group(1) == "background":
            background.setdefault(len(found), []).extend(shell_lines(text))
        else:
            found.append((number + 2, fence.group(1), text))
    return [
        Block(page, line, language, text, tuple(background.get(i, [])), tuple(files))
        for i, (line, language, text) in enumerate(found)
    ]


BLOCKS = [block for page in PAGES for block in marked_blocks(page)]


def commands(text: str) -> list[tuple[str, str]]:
    """A console block as (command, expected output) pairs; a command continues over lines
    ending in a backslash."""
    pairs: list[tuple[str, list[str]]] = []
    continued = False
    for line in text.splitlines():
        if continued:
            pairs[-1] = (pairs[-1][0] + "\n" + line, [])
        elif line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            assert pairs, f"output before any command: {line!r}"
            pairs[-1][1].append(line)
        continued = line.endswith("\\") and not pairs[-1][1]
    return [(command, "\n".join(output)) for command, output in pairs]


def pattern(expected: str) -> re.Pattern[str]:
    """`expected` as a regex: a line `...` is any lines, `...` in a line any text."""
    parts = []
    for line in expected.splitlines():
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts), re.DOTALL)


def recipe(command: str) -> str:
    """`make TARGET` as the command its recipe ends with; any other command as it is, less
    its comment."""
    words = shlex.split(command, comments=True)
    if words[0] != "make":
        return shlex.join(words)
    # --no-print-directory: under `make test` (CI) a nested make would announce directories.
    printed = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", *words[1:]],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return printed.splitlines()[-1]


def script(block: Block, runs: list[str]) -> str:
    """The bash script that runs a console block's commands, each into files of its own,
    beside its background servers."""
    lines = []
    if block.background:
        lines.append("ip link set lo up")  # the namespace's loopback starts down
    for number, command in enumerate(block.background):
        lines.append(f"{recipe(command)} > background-{number}.log 2>&1 &")
    for port in sorted({int(p) for c in block.background for p in PORT.findall(recipe(c))}):
        lines.append(
            f"for _ in $(seq {TIMEOUT_S * 10}); do (exec 3<>/dev/tcp/127.0.0.1/{port}) "
            "2>/dev/null && break; sleep 0.1; done"
        )
    for number, command in enumerate(runs):
        lines.append(f"( {command}\n) > out-{number}.txt 2>&1; echo $? > status-{number}.txt")
    if block.background:
        lines.append("kill $(jobs -p); wait")
    return "\n".join(lines) + "\n"


def namespaced() -> list[str]:
    """The prefix that runs a command in a network namespace of its own; skips the test
    where there is none to be had (outside CI)."""
    prefix = ["unshare", "--map-root-user", "--net"]
    tools = bool(shutil.which("unshare") and shutil.which("ip"))
    if not tools or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("blocks with servers need unshare (util-linux) and ip (iproute2)")
        pytest.skip("no network namespace to run servers in (unshare, ip)")
    return prefix


def test_the_docs_mark_console_blocks() -> None:
    assert len(BLOCKS) >= 8
    assert [str(block) for block in BLOCKS if block.language != "console"] == []
    assert any(block.background for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_runnable_block(block: Block, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    for name, text in block.files:
        (tmp_path / name).write_text(text)
    environ = clean_environment()
    environ["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    pairs = commands(block.text)
    (tmp_path / "block.sh").write_text(script(block, [command for command, _ in pairs]))
    prefix = namespaced() if block.background else []
    process = subprocess.Popen(
        [*prefix, "bash", "block.sh"], cwd=tmp_path, env=environ, start_new_session=True
    )
    try:
        process.wait(timeout=2 * TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    servers = "".join(log.read_text() for log in sorted(tmp_path.glob("background-*.log")))
    for number, (command, expected) in enumerate(pairs):
        printed = (tmp_path / f"out-{number}.txt").read_text()
        if printed and not printed.endswith("\n"):  # curl prints bodies as they are
            printed += "\n"
        status = (tmp_path / f"status-{number}.txt").read_text().strip()
        if not expected:
            assert status == "0", f"{block}: `{command}` exited {status}:\n{printed}{servers}"
        assert pattern(expected + "\n" if expected else "").fullmatch(printed), (
            f"{block}: `{command}` printed\n{printed}\nand the docs show\n{expected}"
            + (f"\n\nthe servers beside it logged:\n{servers}" if servers else "")
        )
