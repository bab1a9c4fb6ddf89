"""What the modules mypyc compiles (rubrisproxy._native.MODULES) must keep to, read from their source."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy._native import MODULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Bases and decorators whose class bodies declare fields or members rather than class attributes.
_DECLARING = ("dataclass", "Enum", "NamedTuple", "Protocol")


def _declares(node: ast.ClassDef) -> bool:
    names = [ast.unparse(each) for each in (*node.bases, *node.decorator_list)]
    return any(kind in name for name in names for kind in _DECLARING)


def made_per_instance(source: str) -> list[str]:
    """Class-body assignments of a value built by a call, neither ``ClassVar`` nor ``Final``: in a native class each
    is an instance attribute's default, built again for every instance."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or _declares(node):
            continue
        for item in node.body:
            if isinstance(item, ast.Assign) and isinstance(item.value, ast.Call):
                found.append(f"{node.name}.{ast.unparse(item.targets[0])}")
            elif (isinstance(item, ast.AnnAssign) and isinstance(item.value, ast.Call)
                  and not ast.unparse(item.annotation).startswith(("ClassVar", "Final"))):
                found.append(f"{node.name}.{ast.unparse(item.target)}")
    return found


class CompiledModulesTests(SynchronousTestCase):
    def test_no_class_body_builds_a_value_for_every_instance(self) -> None:
        found = {}
        for module in MODULES:
            with open(os.path.join(ROOT, *module.split(".")) + ".py") as f:
                if names := made_per_instance(f.read()):
                    found[module] = names
        self.assertEqual(found, {})

    def test_the_check_finds_a_logger_assigned_in_a_class_body(self) -> None:
        source = ("class Exchange:\n    log = Logger()\n    shared: ClassVar[Logger] = Logger()\n"
                  "    state: State = State()\n    name = 'constant'\n")
        self.assertEqual(made_per_instance(source), ["Exchange.log", "Exchange.state"])
