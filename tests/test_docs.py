"""Every code example in the docs runs: the ``python`` blocks of README.md and docs/**/*.md, and
the docstring examples of every module of the package.

The convention (also in ``tests/_docs_snippets.py`` and ``docs/testing.md``): the blocks of one
page run in order as one script, in a subprocess whose working directory is a fresh empty
directory, with ``HYPERLIQUID_URL`` (a running bundled simulator), ``HYPERLIQUID_PRIVATE_KEY``
(a throwaway key) and ``REDIS_URL`` (a real redis-server) set. The package is importable as
installed; the repository's ``examples`` package only on a page carrying
``<!-- snippets: repo-checkout -->``. ``<!-- snippet: skip reason="why" -->`` on the line above a
block skips it, and a skip without a reason fails.
"""

from __future__ import annotations

import doctest
import hashlib
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import resilient_trading
from tests._docs_snippets import (
    REPO_CHECKOUT_MARKER,
    Block,
    SnippetMarkerError,
    blocks_of,
    python_blocks,
    script_of,
)

ROOT = Path(__file__).resolve().parent.parent
PAGE_TIMEOUT = 120.0
#: A throwaway key (never funded anywhere but the simulator, which funds any new signer).
THROWAWAY_KEY = "0x" + hashlib.sha256(b"resilient-trading docs throwaway key").hexdigest()

# Runs a page's script with the page's path as its file name, so a traceback names the page
# and its line numbers (linecache reads the Markdown file itself: the code line is shown).
_DRIVER = """\
import sys
page, script = sys.argv[1], sys.argv[2]
sys.argv = [page]
with open(script, encoding="utf-8") as f:
    source = f.read()
namespace = {"__name__": "__main__", "__file__": script}
exec(compile(source, page, "exec"), namespace)
"""


def doc_pages() -> list[Path]:
    """README.md and every Markdown page under docs/ (not the built site)."""
    pages = [ROOT / "README.md"]
    pages += sorted(
        p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.relative_to(ROOT).parts
    )
    return pages


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _name(page: Path) -> str:
    return _page_id(page) if page.is_relative_to(ROOT) else str(page)


def _simulator_class() -> Any:
    """The bundled simulator: the public ``resilient_trading.testing`` once it ships, else the
    repository's ``examples.hl_sim``."""
    try:
        module = importlib.import_module("resilient_trading.testing")
        return module.Simulator
    except (ImportError, AttributeError):
        from examples.hl_sim import Simulator

        return Simulator


@pytest.fixture
def hyperliquid_url() -> Iterator[str]:
    """A fresh simulator per page on 127.0.0.1 that funds any signer (no budget pressure: the
    pages are not rate-limit tests, and they all share one IP)."""
    simulator = _simulator_class()(seed=1, auto_fund=10_000.0, budget=1_000_000)
    with simulator as sim:
        yield str(sim.base_url)


def block_at(blocks: list[Block], line: int) -> Block | None:
    """The block holding page line ``line`` (the last one opening at or before it)."""
    found = None
    for block in blocks:
        if block.first_code_line <= line:
            found = block
    return found


def run_page(
    page: Path, workdir: Path, env_extra: dict[str, str], timeout: float = PAGE_TIMEOUT
) -> tuple[int, str, str]:
    """Run ``page``'s python blocks as one script in ``workdir``; (returncode, stdout, stderr).

    Raises:
        SnippetMarkerError: A skip marker without a reason.
    """
    text = page.read_text(encoding="utf-8")
    blocks = python_blocks(text, _name(page))
    script = workdir.parent / f"{workdir.name}-script.py"
    script.write_text(script_of(blocks), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra)
    if REPO_CHECKOUT_MARKER in text:
        env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(page), str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def failure_message(page: Path, blocks: list[Block], stderr: str) -> str:
    """Name the page, the failing block's line and show the stderr."""
    lines = [int(n) for n in re.findall(rf'File "{re.escape(str(page))}", line (\d+)', stderr)]
    if not lines:  # a SyntaxError from compile() names the line differently
        lines = [int(n) for n in re.findall(rf"{re.escape(str(page))}, line (\d+)", stderr)]
    where = "an unknown block"
    if lines:
        block = block_at(blocks, lines[-1])
        if block is not None:
            where = f"the block at line {block.line} (error at line {lines[-1]})"
    return f"{_name(page)}: {where} failed:\n{stderr[-6000:]}"


def page_failure(
    page: Path, workdir: Path, env: dict[str, str], timeout: float = PAGE_TIMEOUT
) -> str | None:
    """Run the page; ``None`` when its script exits 0, else what to report."""
    blocks = python_blocks(page.read_text(encoding="utf-8"), str(page))
    try:
        code, _, stderr = run_page(page, workdir, env, timeout)
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr or b""
        partial = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        return (
            f"{_name(page)}: its blocks did not finish within {timeout:g}s "
            f"(a block waits forever?); stderr so far:\n{partial[-3000:]}"
        )
    return None if code == 0 else failure_message(page, blocks, stderr)


@pytest.mark.redis
@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_page_snippets_run(
    page: Path, tmp_path: Path, hyperliquid_url: str, redis_url: str
) -> None:
    """Every python block of the page runs, in order, as one script, and exits 0."""
    text = page.read_text(encoding="utf-8")
    blocks = python_blocks(text, _page_id(page))
    if not any(block.skip_reason is None for block in blocks):
        return
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {
        "HYPERLIQUID_URL": hyperliquid_url,
        "HYPERLIQUID_PRIVATE_KEY": THROWAWAY_KEY,
        "REDIS_URL": redis_url,
    }
    failure = page_failure(page, workdir, env)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def undefined_names(script: str) -> str:
    """ruff's undefined-name report (F821) for ``script``; empty when every name is defined.

    Running a block cannot see a name error that the block itself swallows (an
    ``except Exception`` around ``exchange.order(...)``); reading it can.
    """
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "F821",
            "--output-format",
            "concise",
            "--stdin-filename",
            "page.py",
            "-",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout if proc.returncode != 0 else ""


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_page_names_are_defined(page: Path) -> None:
    """Every name a page's blocks use is defined by them (imports, earlier blocks): no
    ``exchange``, ``info`` or ``wallet`` out of nowhere, even where an ``except`` hides it.
    Line numbers in the report are the page's."""
    blocks = python_blocks(page.read_text(encoding="utf-8"), _page_id(page))
    report = undefined_names(script_of(blocks)).replace("page.py:", f"{_page_id(page)}:")
    assert not report, f"{_page_id(page)} uses undefined names:\n{report}"


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_page_skips_have_reasons(page: Path) -> None:
    """A skipped block says why; malformed markers fail (SnippetMarkerError)."""
    python_blocks(page.read_text(encoding="utf-8"), _page_id(page))


_PRIVATE = re.compile(r"\bresilient_trading(?:\.[A-Za-z]\w*)*\._[A-Za-z]\w*")


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_page_names_no_private_module(page: Path) -> None:
    """No page points users at a private name (``resilient_trading._errors``, ...)."""
    found = sorted(set(_PRIVATE.findall(page.read_text(encoding="utf-8"))))
    assert not found, f"{_page_id(page)} names private modules or names: {found}"


def test_api_reference_lists_every_public_name() -> None:
    """docs/api.md documents every name in the package's ``__all__``."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [
        name
        for name in resilient_trading.__all__
        if not name.startswith("__") and f"resilient_trading.{name}" not in api
    ]
    assert not missing, f"docs/api.md does not document: {missing}"


# --- docstring examples ---------------------------------------------------------------------


def package_modules() -> list[str]:
    """Every module of the installed package (private ones too: their docstrings are read)."""
    names = [resilient_trading.__name__]
    for info in pkgutil.walk_packages(resilient_trading.__path__, "resilient_trading."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", package_modules())
def test_docstring_examples(module_name: str) -> None:
    """Every ``>>>`` example in the module's docstrings runs and prints what it shows."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    for test in finder.find(module, module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


# --- the runner itself ----------------------------------------------------------------------


def test_runner_names_page_line_and_error(tmp_path: Path) -> None:
    """A failing block is reported with the page, its line and the stderr; an earlier block's
    names are visible to a later block; skipped blocks do not run."""
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nx = 1\n```\n\ntext\n\n"
        '<!-- snippet: skip reason="shows a fragment" -->\n```python\nraise SystemExit(3)\n```\n\n'
        "```python\nassert x == 1\nprint(undefined_name)\n```\n",
        encoding="utf-8",
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    code, _, stderr = run_page(page, workdir, {})
    assert code == 1
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    message = failure_message(page, blocks, stderr)
    assert "the block at line 14 (error at line 16)" in message
    assert "NameError" in message
    assert str(page) in message


def test_runner_rejects_top_level_await(tmp_path: Path) -> None:
    """A block with a top-level ``await`` fails (it would fail when pasted into a file)."""
    page = tmp_path / "page.md"
    page.write_text("```python\nimport asyncio\n\nawait asyncio.sleep(0)\n```\n", "utf-8")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    code, _, stderr = run_page(page, workdir, {})
    assert code == 1
    assert "SyntaxError" in stderr
    assert "the block at line 1 (error at line 4)" in failure_message(
        page, python_blocks(page.read_text("utf-8")), stderr
    )


def test_runner_cwd_is_empty_and_examples_need_the_marker(tmp_path: Path) -> None:
    """Blocks run in an empty directory; ``examples`` is importable only with the marker."""
    body = (
        "```python\nimport os\n"
        "assert os.listdir('.') == [], os.listdir('.')\nimport examples\n```\n"
    )
    for marked, expected in ((False, 1), (True, 0)):
        page = tmp_path / f"page{marked}.md"
        page.write_text((REPO_CHECKOUT_MARKER + "\n\n" if marked else "") + body, "utf-8")
        workdir = tmp_path / f"cwd{marked}"
        workdir.mkdir()
        code, _, stderr = run_page(page, workdir, {})
        assert code == expected, stderr


def test_runner_reports_a_page_that_never_finishes(tmp_path: Path) -> None:
    """A block that waits forever fails its page after the timeout, naming the page."""
    page = tmp_path / "page.md"
    page.write_text("```python\nimport threading\n\nthreading.Event().wait()\n```\n", "utf-8")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    failure = page_failure(page, workdir, {}, timeout=1.0)
    assert failure is not None
    assert f"{page}: its blocks did not finish within 1s" in failure


@pytest.mark.parametrize(
    "marker",
    [
        "<!-- snippet: skip -->",
        '<!-- snippet: skip reason="" -->',
        '<!-- snippet: skip reason="  " -->',
        "<!-- snippet: skip reason=because -->",
        '<!-- snippet: sikp reason="typo" -->',
    ],
)
def test_skip_without_a_reason_fails(marker: str) -> None:
    with pytest.raises(SnippetMarkerError, match="needs a written reason"):
        python_blocks(f"text\n{marker}\n```python\nx = 1\n```\n", "page.md")


_code_line = st.one_of(
    st.text(
        alphabet=st.one_of(
            st.sampled_from("`~ \t"),
            st.characters(
                codec="utf-8",
                exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
            ),
        ),
        max_size=30,
    ),
    # fence-like lines: shorter, longer, indented, with an info string, of the other kind
    st.sampled_from(["```", "~~~", "````", "~~~~~", "   ```", "    ~~~~", "``` python", "~~~ x"]),
)


def _closes(line: str, fence: str) -> bool:
    """CommonMark: a closing fence is up to 3 spaces, at least as many of the fence's
    character, then only whitespace."""
    pattern = rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*"
    return re.fullmatch(pattern, line) is not None


_language = st.sampled_from(["python", "py", "console", "json", "text", "", "{eval-rst}"])
_prose = st.lists(
    st.text(alphabet="abc .,-#*", max_size=20).filter(lambda s: "```" not in s), max_size=3
)
_reason = st.one_of(st.none(), st.text(alphabet="abcdef xyz", min_size=1).filter(str.strip))


@given(
    st.lists(
        st.tuples(
            _prose,
            _language,
            st.lists(_code_line, max_size=5),
            _reason,
            st.sampled_from(["```", "````", "~~~", "~~~~~"]),
        ),
        max_size=6,
    )
)
def test_blocks_round_trip(
    parts: list[tuple[list[str], str, list[str], str | None, str]],
) -> None:
    """Any page built from prose and fenced blocks parses back into the same blocks, at the
    same lines, and the script keeps each code line at its page line."""
    lines: list[str] = []
    expected: list[Block] = []
    for prose, language, code, reason, fence in parts:
        lines.extend(prose)
        lines.append("")
        if reason is not None:
            lines.append(f'<!-- snippet: skip reason="{reason}" -->')
        code = [line for line in code if not _closes(line, fence)]
        lines.append(fence + language)
        expected.append(Block(language, len(lines), "\n".join(code), reason and reason.strip()))
        lines.extend(code)
        lines.append(fence)
    text = "\n".join(lines) + "\n"
    assert blocks_of(text) == expected
    runnable = python_blocks(text)
    assert runnable == [b for b in expected if b.language in ("python", "py")]
    script = script_of(runnable).splitlines()
    for block in runnable:
        if block.skip_reason is None:
            for offset, code_line in enumerate(block.code.splitlines()):
                assert script[block.first_code_line - 1 + offset].strip() == code_line.strip()
