"""The layout docs/layout.md describes holds: small rooms, each saying its job, no import circle."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 350


def modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file, for the package and the analysis (installed as study.analysis)."""
    found = {}
    for folder, prefix in ((ROOT / "study", "study"), (ROOT / "analysis", "study.analysis")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((prefix, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """The package modules `path` imports, at any depth of the file (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:  # a submodule by its own name; any other name from its module
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def test_every_room_is_small_and_its_docstring_names_its_job():
    for path in modules().values():
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines"
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(ROOT)}: no docstring"


def test_no_import_circle():
    found = modules()
    graph = {name: imports(path, name, set(found)) for name, path in found.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, node, target]))
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_layout_page_names_every_room():
    page = (ROOT / "docs" / "layout.md").read_text()
    for path in modules().values():
        if path.name not in ("__init__.py", "__main__.py"):
            assert f" {path.name} " in page or f" {path.name}\n" in page, f"docs/layout.md lacks {path.name}"


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages one by one: a new folder missing there would be left
    out of a (non-editable) install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed
