"""mkdocs hooks: pages whose text comes from the code or the repository.

- ``<!-- cli-reference -->`` becomes the ``--help`` text of ``ganfn`` and each
  of its subcommands, taken from the parser itself, so the CLI reference cannot
  drift from the options.
- ``<!-- include: PATH -->`` becomes the text of a file of the repository
  (the benchmark READMEs), its headings shifted one level down.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_reference() -> str:
    from ganfn import cli

    parser = cli.make_parser()
    out = ["## ganfn", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # argparse keeps its subcommands in this private field only
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"## ganfn {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def include(path: str) -> str:
    text = (ROOT / path).read_text()
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


def on_page_markdown(markdown: str, **_) -> str:
    markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return re.sub(r"<!-- include: (\S+) -->", lambda m: include(m.group(1)), markdown)
