"""One public surface: what a user touches is importable from a public module, and documented.

The public modules are the package root and the documented ones (``docs/api.md``); every other
module starts with ``_`` and is private. Properties checked:

* every name in a public module's ``__all__`` exists there (a re-export, not just a listing);
* every name in the root ``__all__`` is documented: a docstring for a class or function, a
  ``#:`` comment above a constant's assignment (what Sphinx's ``autodata`` shows);
* every type a public signature names (arguments, returns, dataclass fields, properties), when
  it is one of ours, is itself exported by a public module: a user can annotate their own
  code with it without importing a private module;
* the typing test ``tests/typing/api.py`` uses every root name, so it cannot fall behind;
* no example names a private module (``resilient_trading._x``); docs pages and the README
  are checked by ``tests/test_docs.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import inspect
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_MODULES = (
    "resilient_trading",
    "resilient_trading.backends",
    "resilient_trading.presets.hyperliquid",
    "resilient_trading.testing",
)

#: ``resilient_trading._x``, ``resilient_trading.presets.hyperliquid._y``: a private module.
PRIVATE_MODULE = re.compile(r"\bresilient_trading(?:\.[A-Za-z]\w*)*\._[A-Za-z]\w*")


def _all(module_name: str) -> list[str]:
    names: list[str] = list(importlib.import_module(module_name).__all__)
    return names


def _public_objects() -> dict[int, str]:
    """id(object) -> where it is exported, for every class and function of a public module."""
    out: dict[int, str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            out.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    return out


def _ours(tp: object) -> bool:
    return isinstance(tp, type) and tp.__module__.split(".")[0] == "resilient_trading"


def _named_types(hint: object) -> Iterator[type]:
    """Every class a type hint mentions (``list[X] | None`` mentions list, X and NoneType)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        yield hint
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin
    for arg in typing.get_args(hint):
        if isinstance(arg, list):  # Callable[[A, B], R]
            for item in arg:
                yield from _named_types(item)
        else:
            yield from _named_types(arg)


def _hints(obj: object) -> dict[str, object]:
    module = inspect.getmodule(obj)
    namespace = dict(vars(module)) if module is not None else {}
    try:
        return typing.get_type_hints(obj, globalns=namespace)
    except NameError:
        # A name imported only under TYPE_CHECKING: resolve it from the module's own imports.
        source_module = importlib.import_module(getattr(obj, "__module__", "builtins"))
        for imported in _type_checking_imports(source_module):
            namespace.update(imported)
        return typing.get_type_hints(obj, globalns=namespace)


def _type_checking_imports(module: types.ModuleType) -> Iterator[dict[str, object]]:
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported = importlib.import_module(node.module)
            yield {
                alias.asname or alias.name: getattr(imported, alias.name)
                for alias in node.names
                if hasattr(imported, alias.name)
            }


def _members(obj: object) -> Iterator[tuple[str, object]]:
    """The parts of a public object whose signatures a user writes code against."""
    if inspect.isfunction(obj):
        yield "", obj
        return
    if not isinstance(obj, type) or issubclass(obj, (BaseException, enum.Enum)):
        return
    if dataclasses.is_dataclass(obj):
        yield "<fields>", obj
    for name, member in vars(obj).items():
        if name.startswith("_") and name not in {"__init__", "__call__", "__enter__"}:
            continue
        if isinstance(member, property) and member.fget is not None:
            yield name, member.fget
        elif isinstance(member, (staticmethod, classmethod)):
            yield name, member.__func__
        elif inspect.isfunction(member):
            yield name, member


def _signature_types() -> Iterator[tuple[str, type]]:
    """(where, class) for every class named by a public signature."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            for member_name, member in _members(obj):
                where = f"{module_name}.{name}" + (f".{member_name}" if member_name else "")
                for hint in _hints(member).values():
                    for tp in _named_types(hint):
                        yield where, tp


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_listed_name_is_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists names it does not export: {missing}"


def test_root_all_has_no_duplicates() -> None:
    names = _all("resilient_trading")
    assert len(names) == len(set(names))


def _documented_constant(name: str) -> bool:
    """``name`` is assigned at the top of some package module right under a ``#:`` comment."""
    pattern = re.compile(rf"^#:.*\n(?:#:.*\n)*{re.escape(name)}\b[^\n]*=", re.MULTILINE)
    package = ROOT / "src" / "resilient_trading"
    return any(pattern.search(path.read_text()) for path in package.rglob("*.py"))


@pytest.mark.parametrize("name", _all("resilient_trading"))
def test_every_root_name_is_documented(name: str) -> None:
    import resilient_trading

    if name == "__version__":
        return
    obj = getattr(resilient_trading, name)
    if isinstance(obj, type) or callable(obj):
        doc = obj.__doc__
        assert doc and doc.strip(), f"resilient_trading.{name} has no docstring"
        if isinstance(obj, type):
            # Not inherited: the class says what it is itself.
            assert "__doc__" in vars(obj) and vars(obj)["__doc__"], name
    else:
        assert _documented_constant(name), (
            f"resilient_trading.{name} is a constant without a `#:` comment above its assignment"
        )


def test_signatures_name_only_public_types() -> None:
    public = _public_objects()
    leaks = sorted(
        {
            f"{where} names {tp.__module__}.{tp.__qualname__}"
            for where, tp in _signature_types()
            if _ours(tp) and id(tp) not in public
        }
    )
    assert not leaks, "public signatures name types no public module exports:\n" + "\n".join(leaks)


def test_the_signature_walk_sees_our_types() -> None:
    """The leak check above looks where the types are (so it would see a leak)."""
    from resilient_trading._breaker_rules import BreakerSnapshot
    from resilient_trading._retry import RetryEvent

    seen = set(_signature_types())
    assert ("resilient_trading.RetryPolicy.__init__", RetryEvent) in seen
    assert ("resilient_trading.CircuitBreaker.snapshot", BreakerSnapshot) in seen


def test_typing_test_uses_every_root_name() -> None:
    tree = ast.parse((ROOT / "tests" / "typing" / "api.py").read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "resilient_trading"
        for alias in node.names
    }
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names = set(_all("resilient_trading")) - {"__version__"}
    assert not names - imported, f"tests/typing/api.py does not import {names - imported}"
    assert not names - used, f"tests/typing/api.py imports but never uses {names - used}"


def test_no_example_names_a_private_module() -> None:
    """The example bot uses only public names (``grep -r "resilient_trading\\._" examples/``
    finds nothing); the docs pages are checked the same way by ``tests/test_docs.py``."""
    offenders = [
        f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}"
        for path in sorted((ROOT / "examples").rglob("*.py"))
        for lineno, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_MODULE.search(line)
    ]
    assert not offenders, "private modules named in examples/:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("text", "private"),
    [
        ("from resilient_trading._clock import ManualClock", True),
        ("python -m resilient_trading._cli breaker status", True),
        ("from resilient_trading.presets.hyperliquid._weights import X", True),
        ("import resilient_trading.testing._server", True),
        ("from resilient_trading import RetryPolicy", False),
        ("from resilient_trading.presets import hyperliquid as hl", False),
        ("resilient_trading.__version__", False),
    ],
)
def test_private_module_pattern(text: str, private: bool) -> None:
    assert bool(PRIVATE_MODULE.search(text)) is private
