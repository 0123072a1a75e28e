"""The code version of a stage: a hash of the package code the stage can execute.

``code_version("train_rm")`` follows the static import graph from ``paper_repro.stages.train_rm``
(module-level and function-local imports, relative and absolute, within ``paper_repro``; importing
``a.b`` also runs ``a/__init__.py``) and hashes each module's AST with docstrings removed. So a
docstring, comment or formatting edit, or any edit under ``tests/``, changes nothing; an edit of
code a stage imports changes that stage's version (Snakemake reruns it and everything downstream,
workflow/rules/common.smk). The report imports ``reporting/``, which no other stage does, so a
report-only edit reruns only ``report``.

Left out on purpose: ``paper_repro.tracking`` (MLflow records: it never changes a file a stage
writes), ``identity``, ``codeversion`` and ``lock`` (bookkeeping about the stage, not its result).
Package data that code reads is hashed with the module that reads it (``PACKAGE_DATA``).

Cost: about 70 modules parsed once per process (a few hundred ms on CPU); Snakemake computes it at
parse time for every rule, the stages once at start for their checkpoint identity.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "paper_repro"
ROOT = Path(__file__).resolve().parents[1]
# Bookkeeping modules (and their subpackages): they record what a stage did, never change it.
EXCLUDED = (
    f"{PACKAGE}.tracking",
    f"{PACKAGE}.provenance.identity",
    f"{PACKAGE}.provenance.codeversion",
    f"{PACKAGE}.provenance.lock",
)
# Files a module reads at run time (relative to the package): the tiny fixtures and tokenizer.
PACKAGE_DATA = {
    f"{PACKAGE}.fixtures.tiny": ("fixtures/data",),
    f"{PACKAGE}.downstream.taskdata": ("downstream/tasks",),
}


def _file(module: str, root: Path) -> Path | None:
    """The source file of ``paper_repro.x.y``: ``x/y.py`` or ``x/y/__init__.py``."""
    rel = Path(*module.split(".")[1:])
    if rel == Path():
        return root / "__init__.py"
    for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _excluded(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EXCLUDED)


def _parsed(module: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """(normalised AST dump, imported package modules) of one module."""
    path = _file(module, root)
    dump, imports = _analyse(module, path.read_bytes(), path.name == "__init__.py")
    ours = {m for m in imports if m.split(".")[0] == PACKAGE and _file(m, root) is not None}
    return dump, tuple(sorted(ours))


@functools.cache  # by source bytes: an edited file is parsed again
def _analyse(module: str, source: bytes, is_package: bool) -> tuple[str, frozenset[str]]:
    tree = ast.parse(source)
    imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                parts = module.split(".")[: None if is_package else -1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            imports.add(base)
            imports.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:]  # the docstring (ast.walk already queued the children)
    return ast.dump(tree), frozenset(imports)


def import_closure(module: str, root: Path = ROOT) -> list[str]:
    """Every package module importing ``module`` can execute, parents' ``__init__`` included.
    ``root``: the package folder (another copy of the package in tests)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or _excluded(m):
            continue
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_parsed(m, root)[1])
    return sorted(seen)


def _data_digest(module: str, root: Path) -> str:
    h = hashlib.sha256()
    for rel in PACKAGE_DATA.get(module, ()):
        for f in sorted(p for p in (root / rel).rglob("*") if p.is_file()):
            if "__pycache__" not in f.parts:
                h.update(f"{f.relative_to(root)}\0".encode() + f.read_bytes())
    return h.hexdigest()


def code_version(stage: str, root: Path = ROOT) -> str:
    """16 hex digits identifying the code ``paper_repro.stages.<stage>`` can run."""
    return module_version(f"stages.{stage}", root)


def module_version(name: str, root: Path = ROOT) -> str:
    """16 hex digits identifying the code ``paper_repro.<name>`` can run (a part of a stage,
    e.g. the tiny stand-in's training, which an evaluation-only edit leaves alone)."""
    h = hashlib.sha256()
    for module in import_closure(f"{PACKAGE}.{name}", root):
        h.update(f"{module}\0{_parsed(module, root)[0]}\0{_data_digest(module, root)}\0".encode())
    return h.hexdigest()[:16]
