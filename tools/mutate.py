"""A small mutation-testing runner for the decision modules (``make mutate``).

For each module in ``TARGETS`` it makes every single-point mutant the rules below describe
(one at a time), runs that module's own test files against the mutant in a scratch copy of the
tree, and counts the mutant *killed* when a test fails (or the run times out). The score is
killed / all. The tree you work in is never modified.

Mutations (the classic ones, as mutmut and cosmic-ray make them):

- comparison operators swapped: ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``,
  ``is`` ↔ ``is not``, ``in`` ↔ ``not in``;
- arithmetic swapped: ``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``*``;
- boolean operators swapped: ``and`` ↔ ``or``; ``not x`` → ``x``;
- constants nudged: an int ``n`` → ``n + 1``, a float ``x`` → ``x * 2 + 1``, ``True`` ↔
  ``False``, a non-empty string → ``"XX" + s`` (regex alternatives therefore break too;
  the wording of messages, inside f-strings or raised errors, is left alone);
- statements deleted: an expression statement, an assignment, ``break``, ``continue``,
  ``return x`` → ``return None``, ``raise`` → ``pass``.

Docstrings, ``__all__``, logging calls and type annotations are left alone.

Usage::

    python tools/mutate.py               # every target, 2 workers
    python tools/mutate.py --module _classify --limit 50 --workers 2
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import copy
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "resilient_trading"

#: module (relative to the package) -> the test files that are its own.
TARGETS: dict[str, list[str]] = {
    "_limiter_rules.py": ["tests/test_ratelimit_rules.py"],
    "_breaker_rules.py": ["tests/test_breaker_rules.py", "tests/test_breaker.py"],
    "_retry.py": ["tests/test_retry.py"],
    "_retry_rules.py": ["tests/test_retry.py"],
    "_classify.py": ["tests/test_classify.py", "tests/test_classify_network.py"],
    "_classify_messages.py": ["tests/test_classify.py"],
    "_redact.py": ["tests/test_redact.py", "tests/test_errors.py"],
    "presets/hyperliquid/_address_rules.py": [
        "tests/test_address_rules.py",
        "tests/test_address_budget.py",
    ],
}

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Mult,
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int
    line: int
    what: str
    source: str


#: Calls whose result only annotations use (with ``from __future__ import annotations`` they
#: are never evaluated at run time, so mutating them cannot change behaviour).
_TYPING_ONLY = frozenset({"TypeVar", "ParamSpec", "TypeVarTuple", "NewType"})


def _is_none(value: ast.expr | None) -> bool:
    """``return`` and ``return None``: making them ``return None`` would change nothing."""
    return value is None or (isinstance(value, ast.Constant) and value.value is None)


def _skip_node(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Docstrings, __all__, annotations and log calls are not behaviour."""
    cur: ast.AST | None = node
    while cur is not None:
        parent = parents.get(cur)
        if (
            isinstance(parent, (ast.arg, ast.AnnAssign))
            and getattr(parent, "annotation", None) is cur
        ):
            return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and cur is parent.returns:
            return True
        if isinstance(cur, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in cur.targets
        ):
            return True
        if (
            isinstance(cur, ast.Assign)
            and isinstance(cur.value, ast.Call)
            and isinstance(cur.value.func, ast.Name)
            and cur.value.func.id in _TYPING_ONLY
        ):
            return True  # T = TypeVar("T"): only annotations (never evaluated) use it
        if (
            isinstance(cur, ast.Expr)
            and isinstance(cur.value, ast.Call)
            and isinstance(cur.value.func, ast.Attribute)
            and isinstance(cur.value.func.value, ast.Name)
            and cur.value.func.value.id in {"log", "logger", "logging"}
        ):
            return True  # deleting a whole log statement is a logging change too
        if (
            isinstance(cur, ast.Call)
            and isinstance(cur.func, ast.Attribute)
            and isinstance(cur.func.value, ast.Name)
            and cur.func.value.id in {"log", "logger", "logging"}
        ):
            return True
        if (
            isinstance(cur, ast.Expr)
            and isinstance(cur.value, ast.Constant)
            and isinstance(cur.value.value, str)
        ):
            return True  # a docstring
        # The wording of a message is not behaviour: strings inside f-strings and the
        # arguments of a raised exception are left alone.
        message = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if message and isinstance(cur, (ast.JoinedStr, ast.Raise)):
            return True
        cur = parent
    return False


def _sites(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    for node in ast.walk(tree):
        if _skip_node(node, parents):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    yield node, f"cmp:{i}"
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN_SWAP:
            yield node, "binop"
        elif isinstance(node, ast.BoolOp):
            yield node, "boolop"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not"
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or (
                isinstance(value, (int, float)) or (isinstance(value, str) and value)
            ):
                yield node, "const"
        if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Break, ast.Continue)):
            yield node, "delete"
        elif isinstance(node, ast.Return) and not _is_none(node.value):
            yield node, "return-none"
        elif isinstance(node, ast.Raise):
            yield node, "delete"


def _apply(node: ast.AST, kind: str) -> str:
    """Mutate ``node`` in place; return a description."""
    if kind.startswith("cmp:"):
        assert isinstance(node, ast.Compare)
        i = int(kind.split(":")[1])
        old = node.ops[i]
        node.ops[i] = _CMP_SWAP[type(old)]()
        return f"{type(old).__name__} -> {type(node.ops[i]).__name__}"
    if kind == "binop":
        assert isinstance(node, (ast.BinOp, ast.AugAssign))
        old_op = node.op
        node.op = _BIN_SWAP[type(old_op)]()
        return f"{type(old_op).__name__} -> {type(node.op).__name__}"
    if kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        old_b = node.op
        node.op = ast.Or() if isinstance(old_b, ast.And) else ast.And()
        return f"{type(old_b).__name__} -> {type(node.op).__name__}"
    if kind == "const":
        assert isinstance(node, ast.Constant)
        value = node.value
        if isinstance(value, bool):
            node.value = not value
        elif isinstance(value, int):
            node.value = value + 1
        elif isinstance(value, float):
            node.value = value * 2 + 1
        else:
            node.value = "XX" + str(value)
        return f"{value!r} -> {node.value!r}"
    raise AssertionError(kind)


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, kind: str) -> None:
        self.target = target
        self.kind = kind

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            if self.kind == "delete":
                return ast.Pass()
            if self.kind == "return-none":
                return ast.Return(value=ast.Constant(value=None))
        return super().generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if node is self.target and self.kind == "not":
            operand: ast.AST = self.visit(node.operand)
            return operand
        return self.generic_visit(node)


def mutants(module: str) -> list[Mutant]:
    path = PKG / module
    text = path.read_text()
    base = ast.parse(text)
    sites = list(_sites(base))
    out: list[Mutant] = []
    for index, (_node, kind) in enumerate(sites):
        tree = copy.deepcopy(base)
        target, _ = list(_sites(tree))[index]
        line = getattr(target, "lineno", 0)
        if kind in {"delete", "return-none", "not"}:
            what = {
                "delete": "statement deleted",
                "return-none": "return None",
                "not": "not removed",
            }[kind]
            tree = _Replace(target, kind).visit(tree)
        else:
            what = _apply(target, kind)
        ast.fix_missing_locations(tree)
        try:
            source = ast.unparse(tree)
            compile(source, str(path), "exec")
        except (SyntaxError, ValueError):
            continue
        out.append(Mutant(module, index, line, what, source))
    return out


def _scratch() -> Path:
    work = Path(tempfile.mkdtemp(prefix="mutate-"))
    shutil.copytree(ROOT / "src", work / "src")
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    if (ROOT / "examples").exists():
        shutil.copytree(
            ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    return work


def _run(work: Path, tests: list[str], timeout: float) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(work / "src") + os.pathsep + str(work),
        "HYPOTHESIS_PROFILE": "dev",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if proc.returncode == 0 else "killed"


def _worker(batch: list[Mutant], tests: list[str], timeout: float) -> list[tuple[Mutant, str]]:
    work = _scratch()
    try:
        results = []
        target = work / "src" / "resilient_trading"
        for m in batch:
            original = (target / m.module).read_text()
            (target / m.module).write_text(m.source)
            try:
                results.append((m, _run(work, tests, timeout)))
            finally:
                (target / m.module).write_text(original)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="only these modules (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="sample at most N mutants a module")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 below this score")
    args = parser.parse_args()
    wanted = {
        m: t
        for m, t in TARGETS.items()
        if (not args.module or m in args.module or m.strip("_.py") in args.module)
        and (PKG / m).exists()
    }
    total_killed = total = 0
    started = time.monotonic()
    for module, tests in wanted.items():
        tests = [t for t in tests if (ROOT / t).exists()]
        if not tests:
            print(f"{module}: no test files, skipped")
            continue
        pool = mutants(module)
        if args.limit and len(pool) > args.limit:
            pool = sorted(random.Random(args.seed).sample(pool, args.limit), key=lambda m: m.index)
        batches = [pool[i :: args.workers] for i in range(args.workers)]
        results: list[tuple[Mutant, str]] = []
        with concurrent.futures.ProcessPoolExecutor(args.workers) as ex:
            for part in ex.map(
                _worker, batches, [tests] * len(batches), [args.timeout] * len(batches)
            ):
                results.extend(part)
        killed = sum(1 for _, r in results if r != "survived")
        total_killed += killed
        total += len(results)
        score = killed / len(results) if results else 1.0
        print(f"{module}: {killed}/{len(results)} killed ({score:.0%}) by {', '.join(tests)}")
        for m, r in sorted(results, key=lambda x: x[0].line):
            if r == "survived":
                print(f"    survived: line {m.line}: {m.what}")
    score = total_killed / total if total else 1.0
    print(
        f"TOTAL: {total_killed}/{total} mutants killed ({score:.1%}) "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
