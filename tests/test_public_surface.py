"""rs_embed_dask exports every public name of rs-embed 0.3.1 with the same signature.

The reference, ``tests/data/rs_embed_0_3_1_signatures.json``, was read from
rs-embed's source with ``ast`` (``tests/data/make_rs_embed_signatures.py``).
Ours match when parameter names, order, kinds and defaults agree; a
parameter of ours that rs-embed lacks is allowed only keyword-only with a
default (e.g. ``provider_options=None``).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import rs_embed_dask
from rs_embed_dask import SpecError, TemporalSpec

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "rs_embed_0_3_1_signatures.json").read_text())
NAMES: list[str] = REF["all"]
SIGNED = [n for n in NAMES if REF["names"][n]["kind"] != "attribute"]
METHODS = [
    (cls, meth)
    for cls in NAMES
    if REF["names"][cls]["kind"] == "class"
    for meth in REF["names"][cls].get("methods", {})
]
_MISSING = object()


def _ours(name: str) -> Any:
    obj = getattr(rs_embed_dask, name, _MISSING)
    if obj is _MISSING:
        pytest.fail(f"rs_embed_dask has no {name!r} (rs-embed 0.3.1 exports it)")
    return obj


def _ref_default(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except ValueError:
        return eval(text, dict(vars(rs_embed_dask)))  # e.g. "OutputSpec.pooled()", "ExportConfig()"


def _our_default(p: inspect.Parameter, owner: Any) -> Any:
    if p.default is dataclasses._HAS_DEFAULT_FACTORY:  # type: ignore[attr-defined]
        return owner.__dataclass_fields__[p.name].default_factory()
    return p.default


#: Deliberate, documented departures from rs-embed's signatures: (name, parameter) -> why.
DEVIATIONS = {
    ("export_batch", "target"): "optional: the legacy out=/layout=, out_dir=, out_path= keywords may name the target",
    ("export_batch", "config_kwargs"): "the legacy flat run options (format=, chunk_size=, resume=, ...)",
    ("ModelResult", "<dataclass>"): "a plain class with rs-embed's constructor: dask-backed arrays are read on first access",
}


def _mismatches(
    ref_params: list[dict[str, Any]], sig: inspect.Signature, owner: Any = None, name: str = ""
) -> list[str]:
    """What differs between rs-embed's parameters and ours (empty when they match)."""
    problems: list[str] = []
    ref_names = {p["name"] for p in ref_params}
    ours: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        if (name, p.name) in DEVIATIONS:
            continue
        if p.name in ref_names:
            ours.append(p)
        elif p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            problems.append(f"extra parameter {p.name!r} ({p.kind.name}) must be keyword-only with a default")
    got = [(p.name, p.kind.name) for p in ours]
    want = [(p["name"], p["kind"]) for p in ref_params if (name, p["name"]) not in DEVIATIONS]
    if got != want:
        problems.append(f"parameters {got} != rs-embed's {want}")
        return problems
    for ref, p in zip([r for r in ref_params if (name, r["name"]) not in DEVIATIONS], ours, strict=True):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        has_ref_default = ref["default"] is not None or "default_factory" in ref
        if not has_ref_default:
            if p.default is not p.empty:
                problems.append(f"{p.name!r} has default {p.default!r}; rs-embed's has none")
            continue
        if p.default is p.empty:
            problems.append(
                f"{p.name!r} has no default; rs-embed's is {ref.get('default') or ref['default_factory']}"
            )
            continue
        want_value = (
            _ref_default(ref["default_factory"] + "()")
            if "default_factory" in ref
            else _ref_default(ref["default"])
        )
        got_value = _our_default(p, owner)
        if type(got_value) is not type(want_value) or got_value != want_value:
            problems.append(f"{p.name!r} default {got_value!r} != rs-embed's {ref.get('default')}")
    return problems


def test_reference_covers_rs_embed_all():
    assert REF["version"] == "0.3.1"
    assert len(NAMES) == len(set(NAMES)) == 33
    assert set(REF["names"]) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_name_importable_and_exported(name):
    _ours(name)
    assert name in rs_embed_dask.__all__, f"{name!r} is importable but not in rs_embed_dask.__all__"


def test_all_is_sorted_and_resolves():
    assert rs_embed_dask.__all__ == sorted(rs_embed_dask.__all__)
    missing = [n for n in rs_embed_dask.__all__ if not hasattr(rs_embed_dask, n)]
    assert not missing


@pytest.mark.parametrize("name", SIGNED)
def test_signature_matches_rs_embed(name):
    ref = REF["names"][name]
    obj = _ours(name)
    if ref["kind"] == "function":
        assert callable(obj), f"{name} should be a function"
        assert not isinstance(obj, type), f"{name} should be a function, not a class"
        problems = _mismatches(ref["params"], inspect.signature(obj), name=name)
    else:
        assert isinstance(obj, type), f"{name} should be a class"
        problems = []
        if ref["dataclass"] is not None and ref["methods"].get("__init__") is None:
            if not dataclasses.is_dataclass(obj) and (name, "<dataclass>") not in DEVIATIONS:
                problems.append("rs-embed's is a dataclass; ours is not")
            elif ref["dataclass"].get("frozen") == "True" and not obj.__dataclass_params__.frozen:
                problems.append("rs-embed's dataclass is frozen; ours is not")
        if ref["members"]:
            assert issubclass(obj, enum.Enum)
            got = {m.name: m.value for m in obj}
            want = {m["name"]: m["value"] for m in ref["members"]}
            if {k: got.get(k) for k in want} != want:
                problems.append(f"enum members {got} != rs-embed's {want}")
        else:
            problems += _mismatches(ref["params"], inspect.signature(obj), owner=obj, name=name)
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize(("cls_name", "method"), METHODS, ids=[f"{c}.{m}" for c, m in METHODS])
def test_method_matches_rs_embed(cls_name, method):
    ref = REF["names"][cls_name]["methods"][method]
    cls = _ours(cls_name)
    static = inspect.getattr_static(cls, method, _MISSING)
    assert static is not _MISSING, f"{cls_name}.{method} is missing"
    if ref["kind"] == "property":
        assert isinstance(static, property) or (hasattr(static, "__get__") and not callable(static)), (
            f"{cls_name}.{method} should be a property"
        )
        return
    if ref["kind"] in ("staticmethod", "classmethod"):
        # called on the class either way: a classmethod of ours may stand for a staticmethod
        fn = getattr(cls, method)
        assert callable(fn), f"{cls_name}.{method} should be callable on the class"
        sig = inspect.signature(fn)
    else:
        assert inspect.isfunction(static), f"{cls_name}.{method} should be a plain method"
        params = list(inspect.signature(static).parameters.values())[1:]
        sig = inspect.Signature(params)
    problems = _mismatches(ref["params"], sig)
    assert not problems, f"{cls_name}.{method}: " + "; ".join(problems)


def test_version_is_a_string():
    assert isinstance(rs_embed_dask.__version__, str)
    assert rs_embed_dask.__version__


def test_reference_is_what_the_generator_writes():
    src = Path("/tmp/rsembed/src/rs_embed")
    if not (src / "__init__.py").exists():
        pytest.skip("rs-embed 0.3.1 source not unpacked at /tmp/rsembed/src/rs_embed")
    spec = importlib.util.spec_from_file_location("_make_sigs", DATA / "make_rs_embed_signatures.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert json.loads(json.dumps(mod.build(src))) == REF


def test_mismatch_checker_is_strict():
    def f(a, *, b=1, extra=None, **kw): ...

    ref = [
        {"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "default": None},
        {"name": "b", "kind": "KEYWORD_ONLY", "default": "1"},
        {"name": "kw", "kind": "VAR_KEYWORD", "default": None},
    ]
    assert _mismatches(ref, inspect.signature(f)) == []

    def wrong_default(a, *, b=2, **kw): ...

    def wrong_kind(a, b=1, **kw): ...

    def extra_positional(a, x=None, *, b=1, **kw): ...

    def extra_required(a, *, b=1, x, **kw): ...

    def true_for_one(a, *, b=True, **kw): ...

    for bad in (wrong_default, wrong_kind, extra_positional, extra_required, true_for_one):
        assert _mismatches(ref, inspect.signature(bad)), bad.__name__


# -- rs_embed.core import paths --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("embedding", ["Embedding"]),
        ("errors", ["RSEmbedError", "SpecError", "ProviderError", "ModelError"]),
        (
            "specs",
            ["BBox", "PointBuffer", "SpatialSpec", "TemporalSpec", "SensorSpec", "FetchSpec", "OutputSpec",
             "InputPrepSpec"],
        ),
        ("types", ["ExportConfig", "ExportLayout", "ExportModelRequest", "ExportTarget", "ModelConfig", "UserData"]),
        ("registry", ["list_models"]),
    ],
)  # fmt: skip
def test_core_paths_are_the_same_objects(module, names):
    mod = importlib.import_module(f"rs_embed_dask.core.{module}")
    for name in names:
        ours = getattr(mod, name)
        top = getattr(rs_embed_dask, name, None)
        if top is None:  # not exported at the top level (as in rs-embed)
            top = getattr(importlib.import_module("rs_embed_dask.core.specs"), name)
        assert ours is top, f"rs_embed_dask.core.{module}.{name}"
        assert name in mod.__all__


def test_core_registry_and_fetch_result():
    from rs_embed_dask.core.registry import get_embedder_cls, get_model_class, register, unregister_model
    from rs_embed_dask.core.types import FetchResult
    from rs_embed_dask.models.rcf import RCFEmbedder
    from rs_embed_dask.providers.base import FetchResult as ProviderFetchResult

    assert FetchResult is ProviderFetchResult
    assert get_embedder_cls("rcf") is get_model_class("rcf")

    @register("rcf_core_path")
    class Registered(RCFEmbedder):
        pass

    try:
        assert get_embedder_cls("rcf_core_path") is Registered
    finally:
        unregister_model("rcf_core_path")


@pytest.mark.parametrize("first", ["types", "registry", "embedding"])
def test_core_imports_first_in_a_fresh_interpreter(run_python, first):
    code = (
        f"import rs_embed_dask.core.{first}\n"
        "import rs_embed_dask.core.types, rs_embed_dask.core.registry, rs_embed_dask.core.errors\n"
        "import rs_embed_dask.core.embedding, rs_embed_dask.core.specs\n"
        "from rs_embed_dask.core.types import UserData\n"
        "print(UserData.__module__)\n"
    )
    assert run_python(code) == "rs_embed_dask.user_data"


# -- TemporalSpec.validate messages are rs-embed's ---------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TemporalSpec(mode="year", year=None), "TemporalSpec.year requires year."),
        (TemporalSpec(mode="year", year="x"), "TemporalSpec.year requires an integer year."),
        (TemporalSpec(mode="year", year=True), "TemporalSpec.year requires an integer year."),
        (TemporalSpec(mode="year", year=float("inf")), "TemporalSpec.year requires an integer year."),
        (TemporalSpec(mode="year", year=0), "TemporalSpec.year must be in [1, 9999]."),
        (TemporalSpec(mode="year", year=10000), "TemporalSpec.year must be in [1, 9999]."),
        (TemporalSpec(mode="range", start="2022-01-01"), "TemporalSpec.range requires start and end."),
        (TemporalSpec(mode="range", end="2022-01-01"), "TemporalSpec.range requires start and end."),
        (TemporalSpec(mode="range", start="2022-1-1", end="2022-02-01"),
         "TemporalSpec.range expects ISO dates 'YYYY-MM-DD'."),
        (TemporalSpec(mode="range", start="2022-02-01", end="2022-02-01"), "TemporalSpec.range requires start < end."),
        # rs-embed's words, then the allowed values (this package names them in every message)
        (TemporalSpec(mode="decade"), "Unknown TemporalSpec mode: decade (expected 'year' or 'range')."),
    ],
)  # fmt: skip
def test_temporal_messages(spec, message):
    with pytest.raises(SpecError) as info:
        spec.validate()
    assert str(info.value) == message


# -- pretty warnings ------------------------------------------------------------------------------
_WARN_CODE = (
    "import warnings\n"
    "import rs_embed_dask\n"
    "from rs_embed_dask.resolve import default_temporal\n"
    "print(getattr(warnings.showwarning, '_rs_embed_dask_pretty', False))\n"
    "default_temporal('rcf')\n"
    "warnings.warn('someone else')\n"
)


def _run_warn(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RS_EMBED_PLAIN_WARNINGS", "NO_COLOR")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", _WARN_CODE], capture_output=True, text=True, env=env, timeout=120, check=True
    )


def test_pretty_warnings_enabled_on_import():
    proc = _run_warn({})
    assert proc.stdout.strip() == "True"
    block, _, rest = proc.stderr.partition("╰ ")
    assert block.startswith("⚠ rs-embed-dask · UserWarning\n│ temporal=None for model 'rcf'")
    assert "\x1b[" not in proc.stderr  # a pipe gets no colour
    assert "<string>:6: UserWarning: someone else" in rest  # other warnings keep Python's format


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_plain_warnings_opt_out(value):
    proc = _run_warn({"RS_EMBED_PLAIN_WARNINGS": value})
    assert proc.stdout.strip() == "False"
    assert "⚠" not in proc.stderr
    assert "UserWarning: temporal=None for model 'rcf'" in proc.stderr


@pytest.fixture
def outside_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Act as outside pytest's ``catch_warnings(record=True)``, where the handler installs."""
    from rs_embed_dask import pretty_warnings as pw

    monkeypatch.setattr(pw, "_recording", lambda: False)


@pytest.mark.usefixtures("outside_recording")
def test_enable_disable_restore_previous_handler():
    from rs_embed_dask import pretty_warnings as pw

    original = warnings.showwarning
    try:
        rs_embed_dask.disable_pretty_warnings()

        def mine(*args: Any, **kwargs: Any) -> None: ...

        warnings.showwarning = mine
        assert rs_embed_dask.enable_pretty_warnings() is None
        assert warnings.showwarning is pw._showwarning
        assert rs_embed_dask.enable_pretty_warnings() is None  # idempotent
        assert rs_embed_dask.disable_pretty_warnings() is None
        assert warnings.showwarning is mine
        rs_embed_dask.disable_pretty_warnings()
        assert warnings.showwarning is mine  # someone else's handler stays
    finally:
        warnings.showwarning = original


@pytest.mark.usefixtures("outside_recording")
def test_pretty_handler_delegates_and_formats(tmp_path: Path):
    from rs_embed_dask import pretty_warnings as pw

    seen: list[tuple[Any, ...]] = []
    original = warnings.showwarning
    try:
        rs_embed_dask.disable_pretty_warnings()
        warnings.showwarning = lambda *a: seen.append(a)
        rs_embed_dask.enable_pretty_warnings()
        out = tmp_path / "w.txt"
        with out.open("w") as fh:
            warnings.showwarning("foreign", UserWarning, "/elsewhere/x.py", 3, fh, None)
            warnings.showwarning("ours", UserWarning, pw.__file__, 7, fh, None)
        assert [a[0] for a in seen] == ["foreign"]
        assert (
            out.read_text() == "⚠ rs-embed-dask · UserWarning\n│ ours\n╰ rs_embed_dask/pretty_warnings.py:7\n"
        )
    finally:
        rs_embed_dask.disable_pretty_warnings()
        warnings.showwarning = original
        rs_embed_dask.enable_pretty_warnings()
    text = pw.format_warning("a " * 50, RuntimeWarning, "/x/y.py", 1, colour=True, width=40)
    assert text.count("│") >= 3
    assert "\x1b[31m" in text


def test_pretty_warnings_keep_pytest_capture():
    from rs_embed_dask.core.errors import RSEmbedWarning
    from rs_embed_dask.resolve import default_temporal

    with pytest.warns(UserWarning, match="default window"):
        default_temporal("rcf")
    with pytest.warns(RSEmbedWarning, match="custom"):
        warnings.warn("custom", RSEmbedWarning, stacklevel=1)
    original = warnings.showwarning
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        rs_embed_dask.disable_pretty_warnings()
        rs_embed_dask.enable_pretty_warnings()  # inside a recording context: not installed
        default_temporal("rcf")
    assert warnings.showwarning is original
    assert [str(r.message)[:14] for r in rec] == ["temporal=None "]


_DASK_CODE = """
import warnings
from distributed import Client, LocalCluster

def task():
    import rs_embed_dask
    from rs_embed_dask.resolve import default_temporal
    warnings.simplefilter("always")
    assert getattr(warnings.showwarning, "_rs_embed_dask_pretty", False)
    return default_temporal("rcf").to_dict()

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        with Client(lc) as c:
            print(c.submit(task, pure=False).result(timeout=120))
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_pretty_warnings_in_dask_worker_processes(tmp_path: Path):
    script = tmp_path / "dask_warn.py"
    script.write_text(_DASK_CODE)
    env = {k: v for k, v in os.environ.items() if k != "RS_EMBED_PLAIN_WARNINGS"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "'start': '2022-06-01'" in proc.stdout
    assert "⚠ rs-embed-dask · UserWarning" in proc.stderr  # shown by the worker process
