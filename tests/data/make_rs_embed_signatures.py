"""Write ``rs_embed_0_3_1_signatures.json``: rs-embed 0.3.1's public signatures, read with ``ast``.

The reference was generated once, from the source of the ``rs-embed==0.3.1``
sdist unpacked at ``/tmp/rsembed/src/rs_embed``, with::

    python tests/data/make_rs_embed_signatures.py /tmp/rsembed/src/rs_embed \
        > tests/data/rs_embed_0_3_1_signatures.json

rs-embed is never imported (its import pulls in torch and Earth Engine): the
package's ``__init__.py`` is parsed for ``__all__`` and for the module each
name is imported from, and that module is parsed for the definition.

Each entry of ``names`` is one of

* ``{"kind": "function", "params": [...]}``;
* ``{"kind": "class", "params": [...], "dataclass": {...} | null, "methods": {...},
  "members": [...]}`` where ``params`` are the constructor's parameters (the
  fields of a dataclass, the ``__init__`` parameters otherwise, without
  ``self``), ``members`` the values of an ``Enum`` and ``methods`` the public
  methods, static/class methods and properties;
* ``{"kind": "attribute"}`` (``__version__``).

A parameter is ``{"name", "kind", "default"}`` with ``kind`` one of
``inspect.Parameter``'s kind names and ``default`` the source text of the
default expression (``null`` when there is none); a dataclass field with
``field(default_factory=f)`` has ``"default_factory": "f"`` instead.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

_NO_DEFAULT = None


def _params(args: ast.arguments, *, drop_first: bool) -> list[dict[str, Any]]:
    """The parameters of a ``def``, in ``inspect.signature`` order and kinds."""
    out: list[dict[str, Any]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, (a, d) in enumerate(zip(positional, defaults, strict=True)):
        kind = "POSITIONAL_ONLY" if i < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append({"name": a.arg, "kind": kind, "default": ast.unparse(d) if d is not None else _NO_DEFAULT})
    if args.vararg is not None:
        out.append({"name": args.vararg.arg, "kind": "VAR_POSITIONAL", "default": None})
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(
            {"name": a.arg, "kind": "KEYWORD_ONLY", "default": ast.unparse(d) if d is not None else None}
        )
    if args.kwarg is not None:
        out.append({"name": args.kwarg.arg, "kind": "VAR_KEYWORD", "default": None})
    if drop_first and out and out[0]["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD"):
        out = out[1:]
    return out


def _decorator_names(node: ast.ClassDef | ast.FunctionDef) -> dict[str, ast.expr]:
    names: dict[str, ast.expr] = {}
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        names[ast.unparse(target).split(".")[-1]] = d
    return names


def _dataclass_fields(node: ast.ClassDef, kw_only: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(stmt.annotation):
            continue
        entry: dict[str, Any] = {
            "name": stmt.target.id,
            "kind": "KEYWORD_ONLY" if kw_only else "POSITIONAL_OR_KEYWORD",
            "default": None,
        }
        value = stmt.value
        if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field":
            kws = {k.arg: k.value for k in value.keywords}
            if "default" in kws:
                entry["default"] = ast.unparse(kws["default"])
            if "default_factory" in kws:
                entry["default_factory"] = ast.unparse(kws["default_factory"])
            if "init" in kws and ast.unparse(kws["init"]) == "False":
                continue
        elif value is not None:
            entry["default"] = ast.unparse(value)
        out.append(entry)
    return out


def _methods(node: ast.ClassDef) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stmt in node.body:
        if not isinstance(stmt, ast.FunctionDef) or stmt.name.startswith("_"):
            continue
        decos = _decorator_names(stmt)
        if "property" in decos:
            out[stmt.name] = {"kind": "property"}
        elif "staticmethod" in decos:
            out[stmt.name] = {"kind": "staticmethod", "params": _params(stmt.args, drop_first=False)}
        elif "classmethod" in decos:
            out[stmt.name] = {"kind": "classmethod", "params": _params(stmt.args, drop_first=True)}
        else:
            out[stmt.name] = {"kind": "method", "params": _params(stmt.args, drop_first=True)}
    return out


def _describe_class(node: ast.ClassDef) -> dict[str, Any]:
    decos = _decorator_names(node)
    bases = [ast.unparse(b) for b in node.bases]
    entry: dict[str, Any] = {"kind": "class", "bases": bases, "dataclass": None, "members": [], "params": []}
    init = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    if "dataclass" in decos:
        call = decos["dataclass"]
        opts = {k.arg: ast.unparse(k.value) for k in call.keywords} if isinstance(call, ast.Call) else {}
        entry["dataclass"] = opts
        entry["params"] = _dataclass_fields(node, kw_only=opts.get("kw_only") == "True")
    if init is not None:
        entry["params"] = _params(init.args, drop_first=True)
    if any(b.split(".")[-1] == "Enum" for b in bases):
        entry["members"] = [
            {"name": s.targets[0].id, "value": ast.literal_eval(s.value)}
            for s in node.body
            if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
        ]
    entry["methods"] = _methods(node)
    return entry


def _module_file(pkg: Path, module: str, level: int) -> Path:
    assert level == 1, "rs-embed's __init__ uses relative imports only"
    base = pkg.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def build(pkg: Path) -> dict[str, Any]:
    """The reference for the package at ``pkg`` (``.../src/rs_embed``)."""
    init = ast.parse((pkg / "__init__.py").read_text())
    all_names: list[str] = []
    origin: dict[str, Path] = {}
    for stmt in init.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in stmt.targets):
            all_names = list(ast.literal_eval(stmt.value))
        elif isinstance(stmt, ast.ImportFrom) and stmt.module:
            for alias in stmt.names:
                origin[alias.asname or alias.name] = _module_file(pkg, stmt.module, stmt.level)
    version = ast.parse((pkg / "_version.py").read_text())
    version_value = next(
        ast.literal_eval(s.value)
        for s in version.body
        if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", None) == "__version__"
    )
    names: dict[str, Any] = {}
    for name in all_names:
        if name == "__version__":
            names[name] = {"kind": "attribute", "value": version_value}
            continue
        tree = ast.parse(origin[name].read_text())
        node = next(s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.ClassDef)) and s.name == name)
        if isinstance(node, ast.ClassDef):
            names[name] = _describe_class(node)
        else:
            names[name] = {"kind": "function", "params": _params(node.args, drop_first=False)}
        names[name]["module"] = "rs_embed." + str(origin[name].relative_to(pkg).with_suffix("")).replace(
            "/", "."
        )
    return {"package": "rs-embed", "version": version_value, "all": all_names, "names": names}


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rsembed/src/rs_embed")
    json.dump(build(root), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
