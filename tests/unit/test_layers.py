"""The import graph of `service/` runs one way, top to bottom:

    main         service.__main__ (python -m service)
    entry        service.cli (the connledger command)
    composition  service.app (the composition root, serve, the relay program), service.simulation
    edges        service.nats, service.http (neither imports the other)
    application  service.pipeline (the write pipeline and the read side)
    domain       service.ledger, service.hooks (neither imports the other)
    projection   service.projections (the fold and its rebuild, pure; the ledger applies them)
    platforms    service.platforms (other platforms' webhooks: signatures, translation; pure)
    base         the top-level modules: events, errors, settings, inbound, decisions, ...

A module may import its own package and any layer below its own, never a layer above nor a
sibling package of its layer. Base modules may import one another (they are single modules,
and Python itself refuses a cycle among them at import time)."""

from __future__ import annotations

import ast
from pathlib import Path

import service

ROOT = Path(service.__file__).parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("main", ("service.__main__",)),
    ("entry", ("service.cli",)),
    ("composition", ("service.app", "service.simulation")),
    ("edges", ("service.nats", "service.http")),
    ("application", ("service.pipeline",)),
    ("domain", ("service.ledger", "service.hooks")),
    ("projection", ("service.projections",)),
    ("platforms", ("service.platforms",)),
]
BASE = len(LAYERS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.relative_to(ROOT).parts:
            continue  # Alembic's scripts, reached through a link; they import nothing of ours
        found[_module_name(path)] = path
    return found


def _component(module: str) -> tuple[int, str]:
    """(layer index, component) of a module; a base module is a component of its own."""
    for index, (_, components) in enumerate(LAYERS):
        for component in components:
            if module == component or module.startswith(component + "."):
                return index, component
    return BASE, module


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `service` that a module imports, anywhere in it (functions and
    TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "service")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "service":
                continue
            for alias in node.names:
                # `from service import schemas` names a module; `from service.x import y`
                # names a thing in module service.x.
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
    return {name for name in found if name in known}


def _violations() -> list[str]:
    modules = _modules()
    known = set(modules)
    wrong = []
    for module, path in sorted(modules.items()):
        layer, component = _component(module)
        for imported in sorted(_imports(module, path, known)):
            target_layer, target_component = _component(imported)
            if target_component == component or target_layer > layer:
                continue
            if layer == BASE and target_layer == BASE:
                continue
            where = "a sibling" if target_layer == layer else "a layer above"
            wrong.append(f"{module} imports {imported} ({where})")
    return wrong


def test_every_module_of_the_service_is_in_a_layer_the_test_knows() -> None:
    modules = _modules()
    assert "service.pipeline.batches" in modules
    assert "service.events" in modules
    unknown_packages = {
        name
        for name, path in modules.items()
        if path.name == "__init__.py" and name != "service" and _component(name)[0] == BASE
    }
    assert not unknown_packages, f"packages missing from LAYERS: {sorted(unknown_packages)}"


def test_imports_run_one_way_down_the_layers() -> None:
    assert _violations() == []


def test_the_check_sees_an_import_that_runs_up(tmp_path: Path) -> None:
    # The ledger importing the pipeline would be an arrow upwards; the parser must see it in
    # any of the forms an import takes.
    known = {"service.pipeline.batches", "service.pipeline", "service.ledger.x", "service.ledger"}
    sources = [
        "from service.pipeline.batches import Pipeline\n",
        "import service.pipeline.batches\n",
        "def f():\n    from service.pipeline import batches\n",
        "from ..pipeline import batches\n",
    ]
    for source in sources:
        path = tmp_path / "x.py"
        path.write_text(source)
        imported = _imports("service.ledger.x", path, known)
        assert imported == {"service.pipeline.batches"}, source
        assert _component("service.ledger.x")[0] > _component("service.pipeline.batches")[0]
