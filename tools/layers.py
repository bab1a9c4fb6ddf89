"""The import graph between rubrisproxy's units, read from the source with ``ast``, and what breaks its layering.

A unit is a top-level module (``service``, ``flow``, ...) or a subpackage (``frontend``, ``config``, ...).
Every ``import`` and ``from ... import`` counts, at any depth: inside functions and under
``if TYPE_CHECKING:`` too (the dependency is real either way).

    python tools/layers.py [SOURCE_DIR]    # default: the rubrisproxy package next to this script

prints the graph (each unit's imports, with how many import statements), the cycles between units, the
imports that break the layering below, every import inside a function, and the ten largest classes.
tests/test_layers.py asserts the layering on the tree it runs in.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "rubrisproxy"
DEFAULT_SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

#: The layers, top to bottom. A unit may import any unit of a lower layer. Within a layer: the wiring and
#: bottom layers' units may import each other (a cycle is still refused); the client/origin layer is ordered
#: (frontend > websocket > origin: only downward); the balancing layer's imports are the pairs listed.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wiring", ("service", "reload", "tap", "ctl", "adminctl", "startup", "admin", "demo", "mainlog", "builder", "listening", "checks",
                "cluster", "workers", "upgrade")),
    ("client and origin sides", ("frontend", "websocket", "origin")),
    ("balancing and servers", ("routing", "clients", "backend")),
    ("bottom", ("http", "flow", "deadline", "counters", "lifecycle", "accesslog", "logoutput", "accepting",
                "signals", "tls", "_compat", "_accesslines", "_native", "collector", "settings", "engineio", "ratelimit", "reuseport", "bus", "budget", "sharing", "transfer", "ampvalues",
                "config", PACKAGE)),
)
ORDERED_LAYERS = frozenset({"client and origin sides"})
#: Imports allowed between units of the balancing layer: routing picks a backend, clients are what it serves.
BALANCING_IMPORTS = frozenset({("routing", "backend"), ("routing", "clients"), ("clients", "backend")})
#: Units that import no other unit: configuration is plain data; the compiled access-log line stands alone; the list of
#: compiled modules is read by setup.py, which has none of the runtime.
LEAVES = frozenset({"config", "_accesslines", "_native", PACKAGE})


@dataclass(frozen=True)
class Import:
    """One import statement of the package, resolved to the module it names."""

    file: str  # relative to the package's parent directory
    line: int
    source: str  # the importing unit
    module: str  # the imported module, dotted (rubrisproxy.x.y for the package's own)
    in_function: bool
    type_checking: bool
    statement: str  # as written (normalised)

    @property
    def target(self) -> str | None:
        """The unit imported, or None for a module outside the package."""
        parts = self.module.split(".")
        if parts[0] != PACKAGE:
            return None
        return parts[1] if len(parts) > 1 else PACKAGE

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def unit_of(path: Path, source: Path) -> str:
    """The unit a file of the package belongs to."""
    parts = path.relative_to(source).parts
    if len(parts) == 1:
        return PACKAGE if parts[0] == "__init__.py" else parts[0].removesuffix(".py")
    return parts[0]


def _module_of(path: Path, source: Path) -> list[str]:
    """The dotted package a file's relative imports start from."""
    parts = [PACKAGE, *path.relative_to(source).with_suffix("").parts]
    return parts[:-1]  # a package's __init__ and its modules alike: the package they are in


def _resolve(node: ast.ImportFrom, path: Path, source: Path) -> list[str]:
    """The modules a ``from`` import names (``from . import x`` names the module ``x`` where there is one)."""
    if node.level == 0:
        base = (node.module or "").split(".")
    else:
        package = _module_of(path, source)
        base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    modules = []
    for alias in node.names:
        candidate = source.parent.joinpath(*base, alias.name)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            modules.append(".".join([*base, alias.name]))
        else:
            modules.append(".".join(base))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(
    node: ast.AST, in_function: bool, type_checking: bool,
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import under ``node``, with whether a function or ``if TYPE_CHECKING:`` encloses it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_checking
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), in_function, True)
            for statement in child.orelse:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), in_function, type_checking)
        else:
            yield from _walk(child, in_function, type_checking)


def _files(source: Path) -> list[Path]:
    return sorted(path for path in source.rglob("*.py") if "__pycache__" not in path.parts)


def scan(source: Path = DEFAULT_SOURCE) -> list[Import]:
    """Every import statement under ``source`` (the package directory)."""
    found = []
    for path in _files(source):
        tree = ast.parse(path.read_text(), str(path))
        file = str(path.relative_to(source.parent))
        unit = unit_of(path, source)
        for node, in_function, type_checking in _walk(tree, False, False):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                modules = _resolve(node, path, source)
            statement = ast.unparse(node)
            for module in dict.fromkeys(modules):
                found.append(Import(file, node.lineno, unit, module, in_function, type_checking, statement))
    return found


def graph(imports: list[Import]) -> dict[str, dict[str, list[Import]]]:
    """For each unit, the other units it imports, with the statements that do."""
    edges: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for each in imports:
        target = each.target
        edges[each.source]  # every unit appears, even one that imports no other
        if target is not None and target != each.source:
            edges[each.source][target].append(each)
    return {unit: dict(targets) for unit, targets in sorted(edges.items())}


def cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The groups of units that import each other, directly or not (strongly connected, more than one unit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in edges.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:  # the root of a group: it is what the stack holds from it up
            group = stack[stack.index(unit):]
            del stack[stack.index(unit):]
            if len(group) > 1:
                groups.append(sorted(group))

    for unit in sorted(edges):
        if unit not in index:
            visit(unit)
    return sorted(groups)


def layer_of(unit: str) -> tuple[int, int] | None:
    """(layer, position within it), top first; None for a unit no layer declares."""
    for depth, (_, units) in enumerate(LAYERS):
        if unit in units:
            return depth, units.index(unit)
    return None


def allowed(source: str, target: str) -> bool:
    """Whether the layering lets unit ``source`` import unit ``target``."""
    if source in LEAVES:
        return False
    here, there = layer_of(source), layer_of(target)
    if here is None or there is None:
        return False
    if here[0] != there[0]:
        return there[0] > here[0]
    name = LAYERS[here[0]][0]
    if name in ORDERED_LAYERS:
        return there[1] > here[1]
    if name == "balancing and servers":
        return (source, target) in BALANCING_IMPORTS
    return True


def violations(imports: list[Import]) -> list[Import]:
    """The imports of one unit from another that the layering does not allow."""
    return [each for each in imports
            if each.target is not None and each.target != each.source and not allowed(each.source, each.target)]


def undeclared(imports: list[Import]) -> list[str]:
    """Units no layer declares."""
    return sorted({each.source for each in imports} - {unit for _, units in LAYERS for unit in units})


def function_imports(imports: list[Import]) -> list[Import]:
    """Every import inside a function (of the package's own modules or any other)."""
    return [each for each in imports if each.in_function]


@dataclass(frozen=True)
class ClassSize:
    where: str
    name: str
    lines: int
    methods: int


def largest_classes(source: Path = DEFAULT_SOURCE, count: int = 10) -> list[ClassSize]:
    """The ``count`` longest classes under ``source``: lines (docstring and comments included) and methods."""
    sizes = []
    for path in _files(source):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body)
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                sizes.append(ClassSize(f"{path.relative_to(source.parent)}:{node.lineno}", node.name, lines, methods))
    return sorted(sizes, key=lambda size: (-size.lines, size.where))[:count]


def listing(found: list[Import]) -> str:
    """Import statements as ``file:line  importer -> imported module: the statement`` lines."""
    return "\n".join(f"  {each.where}  {each.source} -> {each.module}: {each.statement}"
                     f"{'  (under TYPE_CHECKING)' if each.type_checking else ''}" for each in found)


def report(source: Path = DEFAULT_SOURCE) -> str:
    """The whole printout of this script."""
    imports = scan(source)
    edges = graph(imports)
    out = ["Units and the units each imports (import statements; * = only under TYPE_CHECKING):"]
    for unit, targets in edges.items():
        named = [f"{target}({len(found)}{'*' if all(f.type_checking for f in found) else ''})"
                 for target, found in sorted(targets.items())]
        layer = layer_of(unit)
        out.append(f"  {unit} [{LAYERS[layer[0]][0] if layer else 'no layer'}] -> {', '.join(named) or '-'}")
    found_cycles = cycles(edges)
    out.append(f"\nCycles between units: {len(found_cycles)}")
    out.extend(f"  {' <-> '.join(group)}" for group in found_cycles)
    missing = undeclared(imports)
    if missing:
        out.append(f"\nUnits in no layer: {', '.join(missing)}")
    wrong = violations(imports)
    out.append(f"\nImports the layering does not allow: {len(wrong)}")
    if wrong:
        out.append(listing(wrong))
    inside = function_imports(imports)
    out.append(f"\nImports inside a function: {len(inside)}")
    if inside:
        out.append(listing(inside))
    out.append("\nLargest classes (lines, methods):")
    out.extend(f"  {size.lines:5d} {size.methods:4d}  {size.name}  {size.where}" for size in largest_classes(source))
    return "\n".join(out)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT_SOURCE))
