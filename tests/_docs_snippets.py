"""Find the code blocks of a Markdown page and turn its ``python`` blocks into one script.

The docs' snippet convention (run by ``tests/test_docs.py``):

- every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` runs; the blocks of one
  page run in order as ONE script, so a later block may use names from an earlier one;
- ``<!-- snippet: skip reason="why" -->`` on the line right above a block skips it; the reason
  is mandatory;
- ``<!-- snippets: repo-checkout -->`` anywhere on a page says its blocks need a checkout of the
  repository (they import the ``examples`` package); the page must say so in its prose too.

The script keeps every code line at the line number it has in the Markdown file, so a
traceback's ``line N`` is the page's line N.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

__all__ = [
    "PYTHON_LANGUAGES",
    "REPO_CHECKOUT_MARKER",
    "Block",
    "SnippetMarkerError",
    "blocks_of",
    "python_blocks",
    "script_of",
]

#: Info strings that mark a block as Python to run (``py`` and ``python3`` too, so a block
#: cannot escape the runner by its spelling).
PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})
#: A page-level marker: the page's blocks import the repository's ``examples`` package.
REPO_CHECKOUT_MARKER = "<!-- snippets: repo-checkout -->"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*snippet\s*:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r'^\s*skip\s+reason\s*=\s*"(?P<reason>[^"]*)"\s*$')


class SnippetMarkerError(ValueError):
    """A ``<!-- snippet: ... -->`` marker that is not ``skip reason="a reason"``."""


@dataclass(frozen=True)
class Block:
    """One fenced code block.

    Attributes:
        language: The first word of the info string, lower-cased (``""`` when none).
        line: The 1-based line number of the opening fence in the page.
        code: The block's content, dedented by the fence's indentation.
        skip_reason: The reason of a skip marker on the line above, else ``None``.
    """

    language: str
    line: int
    code: str
    skip_reason: str | None = None

    @property
    def first_code_line(self) -> int:
        """The 1-based page line of the block's first code line."""
        return self.line + 1


def _language(info: str) -> str:
    word = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    # MyST directives: ```{code-block} python / ```{code} python
    if word in ("{code-block}", "{code}", "{sourcecode}"):
        rest = info.strip().split()
        word = rest[1] if len(rest) > 1 else ""
    return word.lower()


def _skip_reason(previous_line: str, page: str, line: int) -> str | None:
    match = _MARKER.match(previous_line)
    if match is None:
        return None
    skip = _SKIP.match(match.group("body"))
    if skip is None or not skip.group("reason").strip():
        raise SnippetMarkerError(
            f"{page}:{line}: snippet marker {previous_line.strip()!r} is not "
            '`<!-- snippet: skip reason="why" -->`; a skip needs a written reason'
        )
    return skip.group("reason").strip()


def blocks_of(text: str, page: str = "<page>") -> list[Block]:
    """Every fenced code block of a Markdown ``text``, in order (CommonMark fence rules).

    Raises:
        SnippetMarkerError: A snippet marker above a block is malformed or has no reason.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or (opening.group("fence")[0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if (
                closing is not None
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
                and not closing.group("info").strip(" \t")
            ):
                break
            body.append(lines[i])
            i += 1
        i += 1  # past the closing fence (or the end of the page: an unclosed block runs to it)
        code = "\n".join(line[min(indent, len(line) - len(line.lstrip(" "))) :] for line in body)
        reason = _skip_reason(lines[start - 1], page, start) if start > 0 else None
        blocks.append(Block(_language(opening.group("info")), start + 1, code, reason))
    return blocks


def python_blocks(text: str, page: str = "<page>") -> list[Block]:
    """The blocks of ``text`` that the docs test runs or skips: the Python ones."""
    return [block for block in blocks_of(text, page) if block.language in PYTHON_LANGUAGES]


def script_of(blocks: list[Block]) -> str:
    """One script from ``blocks`` (skipped ones left out), each code line at its page line.

    Lines between blocks are blank, so line N of the script is line N of the page.
    """
    out: list[str] = []
    for block in blocks:
        if block.skip_reason is not None:
            continue
        code = textwrap.dedent(block.code)
        out.extend([""] * (block.first_code_line - 1 - len(out)))
        out.extend(code.splitlines())
    return "\n".join(out) + "\n"
