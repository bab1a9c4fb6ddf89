"""The layering of rubrisproxy's units (docs/architecture.md), checked on the source with tools/layers.py."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_layers_tool", ROOT / "tools" / "layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


layers = _load_tool()
SOURCE = ROOT / "rubrisproxy"


class LayeringTests(unittest.TestCase):
    """Dependencies point one way: wiring; frontend > websocket > origin; balancing; the bottom (config imports
    nothing of the runtime). ``if TYPE_CHECKING:`` imports count."""

    def setUp(self) -> None:
        self.imports = layers.scan(SOURCE)

    def test_every_unit_has_a_layer(self) -> None:
        self.assertEqual(layers.undeclared(self.imports), [], "add the unit to tools/layers.py's LAYERS")

    def test_no_unit_imports_a_higher_layer_or_a_sibling_it_may_not(self) -> None:
        wrong = layers.violations(self.imports)
        self.assertEqual(wrong, [], "imports against the layering:\n" + layers.listing(wrong))

    def test_no_cycle_between_units(self) -> None:
        edges = layers.graph(self.imports)
        found = layers.cycles(edges)
        detail = [f"{' <-> '.join(group)}:\n" + layers.listing(
            [each for source in group for target, statements in edges[source].items() if target in group
             for each in statements]) for group in found]
        self.assertEqual(found, [], "units that import each other:\n" + "\n".join(detail))

    def test_no_import_inside_a_function(self) -> None:
        # Except the global reactor: importing it installs the default one, so it is imported late on purpose
        # (twistd chooses the reactor first).
        inside = [each for each in layers.function_imports(self.imports)
                  if not (each.module == "twisted.internet" and " import reactor" in each.statement)]
        self.assertEqual(inside, [], "imports inside a function:\n" + layers.listing(inside))



class ToolTests(unittest.TestCase):
    """tools/layers.py on a small package written for the purpose."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(_remove, self.directory)
        self.source = self.directory / layers.PACKAGE
        files = {
            "__init__.py": "",
            "flow.py": "import os\nfrom . import http\n",
            "http/__init__.py": "from ._a import A\n",
            "http/_a.py": "class A:\n    def f(self):\n        pass\n\n    def g(self):\n        pass\n",
            "config/__init__.py": """
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from ..frontend import Thing


                def load():
                    from rubrisproxy.backend import x
                    return x
            """,
            "frontend/__init__.py": "from ..config import load\nfrom .. import flow\n",
            "backend/__init__.py": "from ..websocket import y\n",
            "websocket/__init__.py": "from ..origin import z\n",
            "origin/__init__.py": "",
        }
        for name, text in files.items():
            path = self.source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        self.imports = layers.scan(self.source)

    def test_the_graph_resolves_relative_and_absolute_imports(self) -> None:
        edges = layers.graph(self.imports)
        self.assertEqual({unit: sorted(targets) for unit, targets in edges.items()}, {
            "backend": ["websocket"], "config": ["backend", "frontend"], "flow": ["http"],
            "frontend": ["config", "flow"], "http": [], "websocket": ["origin"],  # origin imports nothing at all
        })

    def test_function_and_type_checking_imports_are_seen(self) -> None:
        config = {(each.module, each.in_function, each.type_checking) for each in self.imports
                  if each.source == "config"}
        self.assertEqual(config, {("typing", False, False), ("rubrisproxy.frontend", False, True),
                                  ("rubrisproxy.backend", True, False)})
        self.assertEqual([each.where for each in layers.function_imports(self.imports)],
                         [os.path.join("rubrisproxy", "config", "__init__.py") + ":9"])

    def test_a_cycle_and_the_imports_against_the_layering(self) -> None:
        self.assertEqual(layers.cycles(layers.graph(self.imports)), [["config", "frontend"]])
        self.assertEqual(sorted((each.source, each.target) for each in layers.violations(self.imports)), [
            ("backend", "websocket"), ("config", "backend"), ("config", "frontend")])
        self.assertIn("rubrisproxy/config/__init__.py:5  config -> rubrisproxy.frontend: "
                      "from ..frontend import Thing  (under TYPE_CHECKING)", layers.listing(self.imports))

    def test_the_largest_classes(self) -> None:
        ((size,),) = [layers.largest_classes(self.source)]
        self.assertEqual((size.name, size.lines, size.methods), ("A", 6, 2))

    def test_the_report_runs_on_the_real_tree(self) -> None:
        out = layers.report(SOURCE)
        for heading in ("Units and the units each imports", "Cycles between units", "Imports inside a function",
                        "Largest classes"):
            self.assertIn(heading, out)


def _remove(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    directory.rmdir()
