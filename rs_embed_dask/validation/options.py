"""Provider options, declared by each provider and checked on the client.

A provider lists its options as :class:`ProviderOption` values in
``Provider.option_specs`` (name, accepted types, range, choices, whether the
value is a path).  :func:`check_provider_options` validates a request's
``provider_options`` against them before anything is submitted: an unknown
name, a value of the wrong type or out of range, and any credential content
are refused with a :class:`ProviderOptionError` naming the option and what is
allowed.  A provider that declares nothing (``option_specs = None``, e.g. a
third-party plugin) is checked against the keyword names of its constructor.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rs_embed_dask.core.errors import ProviderError, SpecError
from rs_embed_dask.validation.secrets import SECRET_OPTION_NAMES, looks_like_secret, shown

__all__ = ["ProviderOption", "ProviderOptionError", "check_option_mapping", "check_provider_options"]


class ProviderOptionError(SpecError, ProviderError):
    """A provider option is unknown, of the wrong type, out of range or a secret.

    A :class:`~rs_embed_dask.SpecError` (a ``ValueError``) raised on the client,
    and a :class:`~rs_embed_dask.ProviderError` as the provider's own
    constructor would raise on a worker.
    """


_TYPE_NAMES = {
    numbers.Integral: "an integer",
    numbers.Real: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    tuple: "a list",
    os.PathLike: "a path",
}


def _type_text(types: tuple[type, ...]) -> str:
    names = list(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types))
    return " or ".join(names)


@dataclass(frozen=True)
class ProviderOption:
    """One option a provider accepts.

    Attributes
    ----------
    name : str
        The keyword of the provider's constructor.
    types : tuple of type
        Accepted types (``numbers.Integral``, ``numbers.Real``, ``str``,
        ``bool``, ``list`` ...); ``bool`` is never taken for a number.
    nullable : bool
        Whether ``None`` is accepted (the provider's default then applies).
    minimum, maximum : float, optional
        Inclusive bounds of a number.
    choices : tuple, optional
        The accepted values.
    items : tuple of type, optional
        Accepted element types of a list value.
    path : bool
        The value is a file or folder path (or a list of them): key contents
        are refused without being echoed.
    finite : bool
        Numbers must be finite (``False`` for a no-data value, which may be NaN).
    doc : str
        One line for messages and documentation.
    """

    name: str
    types: tuple[type, ...]
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    items: tuple[type, ...] | None = None
    path: bool = False
    finite: bool = True
    doc: str = ""

    def check(self, provider: str, value: Any) -> None:
        """Raise :class:`ProviderOptionError` when ``value`` is not acceptable."""
        where = f"{provider} provider option {self.name}"
        if value is None:
            if self.nullable or (self.choices is not None and None in self.choices):
                return
            raise ProviderOptionError(f"{where} must be {_type_text(self.types)}; got None.")
        if self._is_secret(value):
            raise ProviderOptionError(
                f"{where} looks like the contents of a credential (withheld here): pass the path of "
                "the key file on storage every worker can read, never its contents; credentials "
                "never travel in the task graph."
            )
        if not self._type_ok(value, self.types):
            raise ProviderOptionError(
                f"{where} must be {_type_text(self.types)}; got {type(value).__name__} {shown(value)}."
            )
        if isinstance(value, (list, tuple)) and self.items is not None:
            bad = [v for v in value if not self._type_ok(v, self.items)]
            if bad:
                raise ProviderOptionError(
                    f"{where} must be a list of {_type_text(self.items)} values; got {shown(bad[0])}."
                )
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            self._check_range(where, float(value))
        if self.choices is not None and value not in self.choices:
            raise ProviderOptionError(f"{where} must be one of {list(self.choices)}; got {shown(value)}.")

    def _is_secret(self, value: Any) -> bool:
        vals = value if isinstance(value, (list, tuple)) else [value]
        return any(looks_like_secret(v) for v in vals if isinstance(v, (str, bytes)))

    @staticmethod
    def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
        if isinstance(value, bool):
            return bool in types
        return isinstance(value, types)

    def _check_range(self, where: str, x: float) -> None:
        if self.finite and not math.isfinite(x):
            raise ProviderOptionError(f"{where} must be a finite number; got {x!r}.")
        lo, hi = self.minimum, self.maximum
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            lo_t = "-inf" if lo is None else f"{lo:g}"
            hi_t = "inf" if hi is None else f"{hi:g}"
            raise ProviderOptionError(f"{where} must be in [{lo_t}, {hi_t}]; got {x!r}.")


def check_option_mapping(options: Any, field: str = "provider_options") -> dict[str, Any]:
    """``options`` as a dict, or :class:`TypeError` when it is not a mapping of names."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{field} must be a dict of option name to value (e.g. {{'seed': 1}}); "
            f"got {type(options).__name__}."
        )
    bad = [k for k in options if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{field} keys must be option names (str); got {type(bad[0]).__name__} {shown(bad[0])}.")
    return dict(options)


def _constructor_names(cls: type, *, explicit: bool = False) -> set[str] | None:
    """Keyword names of ``cls.__init__``; ``None`` when it takes ``**kwargs`` (unless ``explicit``)."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    except (TypeError, ValueError):
        return None
    names: set[str] = set()
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD and not explicit:
            return None
        if p.name != "self" and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.add(p.name)
    return names


def _declared(cls: type) -> tuple[tuple[ProviderOption, ...] | None, set[str], bool]:
    """``(specs, extra names, own)``: the nearest declaration in the class hierarchy.

    A subclass that overrides ``__init__`` without declaring its options
    (a test or plugin provider adding a keyword to ``synthetic``) adds the
    keyword names of its constructors to the inherited declaration; ``own``
    says whether the declaration covers ``cls``'s constructor exactly.
    """
    owner = next((k for k in cls.__mro__ if "option_specs" in k.__dict__), None)
    if owner is None:
        return None, set(), False
    below = cls.__mro__[: cls.__mro__.index(owner)]  # subclasses of the declaring class
    overriding = [k for k in below if "__init__" in k.__dict__]
    extra: set[str] = set()
    for klass in overriding:
        extra |= _constructor_names(klass, explicit=True) or set()
    return getattr(owner, "option_specs", None), extra, not overriding


def check_provider_options(cls: Any, options: Any, *, construct: bool = True) -> dict[str, Any]:
    """Validate ``options`` for the provider class ``cls``; return them as a dict.

    Parameters
    ----------
    cls : type
        A :class:`~rs_embed_dask.providers.base.Provider` subclass.
    options : mapping or None
        The request's ``provider_options``.
    construct : bool, default True
        For a provider that declares its options, also build it once on the
        client (constructors are cheap and offline by contract; clients and
        credentials are made in ``ensure_ready``), so a rule its constructor
        enforces is found here too.

    Raises
    ------
    TypeError
        ``options`` is not a mapping with string keys.
    ProviderOptionError
        An unknown or secret option, or a value of the wrong type or range.
    """
    opts = check_option_mapping(options)
    name = getattr(cls, "name", "") or cls.__name__
    secret = sorted(k for k in opts if k.lower() in SECRET_OPTION_NAMES)
    if secret:
        raise ProviderOptionError(
            f"{name} provider option(s) {secret} are not accepted (their values are withheld here): "
            "credentials never travel in the task graph; pass the path of a key file "
            "(e.g. credentials_file=...) or set the provider's environment variables on every worker."
        )
    specs, extra, own = _declared(cls)
    if specs is None:
        allowed = _constructor_names(cls)
        if allowed is not None:
            unknown = sorted(set(opts) - allowed)
            if unknown:
                raise ProviderOptionError(
                    f"Unknown {name} provider option(s) {unknown}; allowed: {sorted(allowed)}."
                )
        for k, v in opts.items():
            if isinstance(v, (str, bytes)) and looks_like_secret(v):
                raise ProviderOptionError(
                    f"{name} provider option {k} looks like the contents of a credential (withheld here); "
                    "pass a path or a name, never key material."
                )
        return opts
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(opts) - set(by_name) - extra)
    if unknown:
        raise ProviderOptionError(
            f"Unknown {name} provider option(s) {unknown}; allowed: {sorted(set(by_name) | extra)}."
        )
    for k, v in opts.items():
        if k in by_name:
            by_name[k].check(name, v)
        elif isinstance(v, (str, bytes)) and looks_like_secret(v):
            raise ProviderOptionError(
                f"{name} provider option {k} looks like the contents of a credential (withheld here); "
                "pass a path or a name, never key material."
            )
    if construct and own:
        _construct(cls, name, opts)
    return opts


def _construct(cls: Any, name: str, opts: dict[str, Any]) -> None:
    try:
        cls.check_available()
    except ProviderError:
        return  # the client may lack a dependency the workers have; checked there
    try:
        cls(**opts)
    except ProviderOptionError:
        raise
    except (ProviderError, TypeError, ValueError) as exc:
        raise ProviderOptionError(str(exc) or f"invalid {name} provider options") from None
