"""README.md and the documentation site (docs/) cannot drift: every ```python
block runs as pasted, every shell command parses (ganfn's through its own
parser), and the ones that train run, shortened by appending options (later
options win)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ganfn import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEXTS = {str(p.relative_to(ROOT)): p.read_text() for p in PAGES}
README_MAX_LINES = 350
CLUSTER = "# Needs "  # first line of a block that needs torchrun, a cluster or a network: checked, never run here
SHORT = ["--steps", "4", "--n-eval", "100", "--eval-every", "2", "--checkpoint-every", "2", "--no-progress"]
PROGRAMS = ("ganfn", "python", "pip", "torchrun", "tensorboard", "pytest")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced block of one page, in order."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def python_blocks() -> list[tuple[str, str]]:
    """``(page, code)`` of every distinct ```python block of the README and the docs (a block shown on two pages,
    such as the README's loop, is run once, under the first page)."""
    blocks = [(page, code) for page, text in TEXTS.items() for lang, code in fenced_blocks(text) if lang == "python"]
    return [(page, code) for i, (page, code) in enumerate(blocks) if code not in (c for _, c in blocks[:i])]


def not_run(pages: list[str] | None = None) -> set[str]:
    """The commands of plain fenced blocks whose first line starts with ``# Needs ``: parsed, never run."""
    return {c for text in (TEXTS.values() if pages is None else pages)
            for lang, block in fenced_blocks(text) if lang == "" and block.startswith(CLUSTER)
            for c in _page_commands(block.join(["```\n", "```\n"]))}


def shell_commands() -> list[str]:
    """Commands in plain fenced blocks, 4-space indented lines and inline `code` spans of every page."""
    return list(dict.fromkeys(c for text in TEXTS.values() for c in _page_commands(text)))


def _page_commands(text: str) -> list[str]:
    found = [line for lang, block in fenced_blocks(text) if lang == "" for line in block.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found += [line[4:] for line in prose.splitlines() if line.startswith("    ") and line.strip().startswith(PROGRAMS)]
    found += re.findall(r"`([^`\n]+)`", prose)
    out = []
    for line in found:
        line = re.split(r"\s{2,}#", line)[0].strip()
        line = re.split(r"\s+[>|]\s+", line)[0]  # a redirection or pipe: the command is what precedes it
        if line.split(" ")[0] in PROGRAMS and " " in line:
            out += [c.strip() for c in line.split("&&")]
    return list(dict.fromkeys(out))


def _run_python(code: str, tmp_path: Path, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Blocks that define tests are also run: each test_* function is called.
    runner = code + ("\nfor _n, _f in list(globals().items()):\n"
                     "    if _n.startswith('test_') and callable(_f):\n        _f()\n")
    r = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"documentation block failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    return r.stdout


def test_docs_have_blocks_and_commands():
    assert len(python_blocks()) >= 4 and len(shell_commands()) >= 15
    assert any(code.startswith(CLUSTER) for _, code in python_blocks())
    readme = TEXTS["README.md"]
    assert any(lang == "python" for lang, _ in fenced_blocks(readme)), "the README keeps one short custom loop"


def test_readme_is_short_and_points_to_the_docs():
    readme = TEXTS["README.md"]
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "mkdocs serve" in readme and "docs/" in readme


def test_blocks_are_found_in_docs_pages():  # negative check of the collector: a page's block is collected
    page = "# t\n\n```python\nprint(1)\n```\n\nRun `ganfn train --steps 5`.\n"
    assert fenced_blocks(page) == [("python", "print(1)\n")]
    assert _page_commands(page) == ["ganfn train --steps 5"]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())),
                         ids=[f"{page}:{i}" for i, (page, _) in enumerate(python_blocks())])
def test_python_block_runs_as_pasted(index, tmp_path):
    code = python_blocks()[index][1]
    if code.startswith(CLUSTER):
        pytest.skip(code.splitlines()[0])
    out = _run_python(code, tmp_path)
    if "modes covered" in code:
        assert re.search(r"modes covered: [78]/8", out), out


def _ganfn_args(cmd: str) -> list[str] | None:
    words = [w for w in shlex.split(cmd) if w != "..."]
    if words[0] == "torchrun":
        words = words[words.index("ganfn") + 1:] if "ganfn" in words else None
        return words
    return words[1:] if words[0] == "ganfn" else None


def test_every_ganfn_command_parses():
    parser = cli.make_parser()
    cmds = [c for c in shell_commands() if _ganfn_args(c) is not None]
    assert len(cmds) >= 10
    for cmd in cmds:
        try:
            parser.parse_args(_ganfn_args(cmd))
        except SystemExit as e:
            if e.code != 0:  # --help exits 0
                pytest.fail(f"documented command does not parse: {cmd} ({e})")


def test_every_other_command_names_something_that_exists():
    import importlib.util

    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cmd in shell_commands():
        words = shlex.split(cmd)
        if words[0] == "pip":
            for w in words[2:]:
                m = re.fullmatch(r"(?:\.|ganfn)\[(\w+)\]", w)
                if m:
                    assert m.group(1) in extras, cmd
        elif words[0] in ("python", "pytest"):
            args = words[1:]
            if args[:2] == ["-m", "pytest"]:
                args = args[2:]
            elif args[:1] == ["-m"]:
                assert importlib.util.find_spec(args[1]) is not None, cmd
                continue
            paths = [a.split("::")[0] for a in args if a.endswith(".py") or ".py::" in a]
            for p in paths:
                assert (ROOT / p).is_file() or p == "test_gan.py", cmd  # test_gan.py: the README's own snippet
        elif words[0] == "tensorboard":
            assert importlib.util.find_spec("tensorboard") is not None


# The README's training commands, run shortened (data paths and CUDA excepted: those only parse).
def _runnable(cmd: str, pages: list[str] | None = None) -> bool:
    args = _ganfn_args(cmd)
    return (args is not None and cmd.startswith("ganfn") and args[0] in ("train", "sweep") and cmd not in not_run(pages)
            and not any(a in ("cuda", "--help") or "/" in a for a in args))


def test_a_block_marked_needs_is_parsed_but_not_run():
    marked = "```\n# Needs a network: not run by the tests\nganfn train --data ring8\n```\n"
    plain = "```\nganfn train --data ring8\n```\n"
    assert _page_commands(marked) == _page_commands(plain) == ["ganfn train --data ring8"]  # both are checked
    assert not _runnable("ganfn train --data ring8", [marked]) and _runnable("ganfn train --data ring8", [plain])
    # The docs' own: the CPU-only install is marked, the two set-up commands are not.
    assert any(c.startswith("pip install torch") and "/whl/cpu" in c for c in not_run())
    assert "ganfn train" in shell_commands() and "ganfn train" not in not_run()


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in shell_commands() if _runnable(c)])
def test_training_command_runs_shortened(cmd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text("lr_d = 2e-4\nn_critic = 5\n")
    args = _ganfn_args(cmd) + SHORT + ["--run-dir", str(tmp_path / "run")]
    if "--seeds" in args:  # keep stacked runs small: 2 members
        args[args.index("--seeds") + 1] = "2"
    assert cli.main(args) == 0, cmd
    assert (tmp_path / "run" / "metrics.json").is_file()
