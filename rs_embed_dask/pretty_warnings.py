"""A readable layout for this package's warnings (rs-embed's ``enable_pretty_warnings``).

:func:`enable_pretty_warnings` replaces :func:`warnings.showwarning` with a
handler that renders warnings raised by :mod:`rs_embed_dask` (its code calls
:func:`warnings.warn`, or the category is
:class:`~rs_embed_dask.core.errors.RSEmbedWarning`) as a short block::

    ⚠ rs-embed-dask · UserWarning
    │ temporal=None for model 'rcf': using the default window
    │ 2022-06-01..2022-09-01.
    ╰ rs_embed_dask/resolve.py:85

and hands every other warning to the handler that was installed before, so
other libraries' output is untouched.  It is enabled when the package is
imported unless ``RS_EMBED_PLAIN_WARNINGS`` is ``1``, ``true``, ``yes`` or
``on``; :func:`disable_pretty_warnings` restores the previous handler.

Only the *display* changes: filters, ``-W`` options, ``warnings.catch_warnings``
(and so ``pytest.warns`` and pytest's warning summary, which record warnings
without showing them) and Dask workers, which only print what they emit,
behave as before.  Colour is used on a terminal or in a Jupyter kernel, never
when ``NO_COLOR`` is set or ``TERM=dumb``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["disable_pretty_warnings", "enable_pretty_warnings"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_PKG_PARENT = os.path.dirname(_PKG_DIR)
_PLAIN_VALUES = {"1", "true", "yes", "on"}
_MARK = "_rs_embed_dask_pretty"

_RESET, _BOLD, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
_ACCENT = {
    "DeprecationWarning": "\x1b[35m",
    "PendingDeprecationWarning": "\x1b[35m",
    "FutureWarning": "\x1b[35m",
    "RuntimeWarning": "\x1b[31m",
    "ResourceWarning": "\x1b[31m",
}
_DEFAULT_ACCENT = "\x1b[33m"

#: The handler replaced by :func:`enable_pretty_warnings` (``None`` when not installed).
_previous: Callable[..., Any] | None = None
_ipython_hooked = False


def _plain_requested() -> bool:
    return os.environ.get("RS_EMBED_PLAIN_WARNINGS", "").strip().lower() in _PLAIN_VALUES


def _recording() -> bool:
    """Whether a ``warnings.catch_warnings(record=True)`` (pytest's capture) is active.

    Installing a handler inside one would show warnings it should record.
    """
    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return impl is not None and getattr(impl, "__name__", "") != "_showwarnmsg_impl"


def _python_default(message: Any, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
    """Python's own rendering, written to ``file`` (default ``sys.stderr``)."""
    stream = file if file is not None else sys.stderr
    if stream is None:  # pythonw / closed interpreter
        return
    with contextlib.suppress(OSError, ValueError):
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


def _in_package(filename: str) -> bool:
    try:
        return bool(filename) and os.path.abspath(filename).startswith(_PKG_DIR + os.sep)
    except (TypeError, ValueError, OSError):
        return False


def _warned_from_package() -> bool:
    """Whether the code that called :func:`warnings.warn` is in this package.

    Warnings of ours name the user's line (``stacklevel``), so their
    ``filename`` is not ours: the frame below the ``warnings`` machinery is.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back  # type: ignore[assignment]
    return frame is not None and _in_package(frame.f_code.co_filename)


def _ours(category: type[Warning], filename: str) -> bool:
    """Whether a warning is this package's: of its category, or raised by its code."""
    from rs_embed_dask.core.errors import RSEmbedWarning

    if isinstance(category, type) and issubclass(category, RSEmbedWarning):
        return True
    try:
        return _in_package(filename) or _warned_from_package()
    except Exception:
        return False


def _short_path(filename: str) -> str:
    path = os.path.abspath(filename)
    return os.path.relpath(path, _PKG_PARENT) if path.startswith(_PKG_PARENT + os.sep) else filename


def _in_kernel() -> bool:
    """Whether this is a Jupyter kernel (renders ANSI colour, is no TTY)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _style(stream: TextIO) -> tuple[bool, int | None]:
    """``(use_colour, wrap_width)``; ``None`` leaves wrapping to a notebook cell."""
    try:
        tty = bool(stream.isatty())
    except Exception:
        tty = False
    kernel = _in_kernel()
    colour = (tty or kernel) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    if kernel and not tty:
        return colour, None
    return colour, max(40, min(shutil.get_terminal_size((80, 24)).columns, 100))


def format_warning(message: Any, category: type[Warning], filename: str, lineno: int, *,
                   colour: bool = False, width: int | None = 80) -> str:  # fmt: skip
    """The block :func:`enable_pretty_warnings` prints for one warning.

    Parameters
    ----------
    message : Warning or str
        The warning (its ``str`` is shown).
    category : type
        The warning class.
    filename, lineno : str, int
        Where it was raised.
    colour : bool, default False
        Add ANSI colours.
    width : int or None, default 80
        Wrap the message to this many columns (``None``: one line per paragraph).

    Returns
    -------
    str
        The block, ending with a newline.
    """
    name = getattr(category, "__name__", str(category))
    lines: list[str] = []
    for paragraph in str(message).strip().splitlines() or [""]:
        lines += (textwrap.wrap(paragraph, width=width - 2) or [""]) if width else [paragraph]
    where = f"{_short_path(filename)}:{lineno}"
    if colour:
        accent = _ACCENT.get(name, _DEFAULT_ACCENT)
        head = f"{_BOLD}{accent}⚠ rs-embed-dask{_RESET} {_DIM}· {name}{_RESET}"
        bar, tail = f"{accent}│{_RESET}", f"{accent}╰{_RESET} {_DIM}{where}{_RESET}"
    else:
        head, bar, tail = f"⚠ rs-embed-dask · {name}", "│", f"╰ {where}"
    return "\n".join([head, *(f"{bar} {ln}" for ln in lines), tail]) + "\n"


def _showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
    """The replacement of :func:`warnings.showwarning`."""
    if not _ours(category, filename):
        (_previous or _python_default)(message, category, filename, lineno, file, line)
        return
    stream = file if file is not None else sys.stderr
    if stream is None:
        return
    try:
        colour, width = _style(stream)
        stream.write(format_warning(message, category, filename, lineno, colour=colour, width=width))
    except Exception:  # never lose a warning to the formatter
        _python_default(message, category, filename, lineno, file, line)


setattr(_showwarning, _MARK, True)


def _forget_shown() -> None:
    """Drop the once-per-location registries of our modules (IPython ``pre_run_cell``).

    IPython resets only ``__main__``'s registry between cells, so a warning of
    ours would otherwise show in the first cell that triggers it only.
    """
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "rs_embed_dask" or name.startswith("rs_embed_dask.")):
            module.__dict__.pop("__warningregistry__", None)


def _pre_run_cell(*_args: Any, **_kwargs: Any) -> None:
    _forget_shown()


def _ipython_events() -> Any:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:
        return None
    return getattr(shell, "events", None)


def enable_pretty_warnings() -> None:
    """Show this package's warnings as a short structured block (idempotent).

    Does nothing when ``RS_EMBED_PLAIN_WARNINGS`` is ``1``/``true``/``yes``/``on``,
    or inside ``warnings.catch_warnings(record=True)`` (pytest's capture), whose
    warnings must stay recorded.  Other warnings keep going to the handler
    installed before.

    Returns
    -------
    None
    """
    global _previous, _ipython_hooked
    if _plain_requested():
        return
    events = _ipython_events()
    if events is not None and not _ipython_hooked:
        try:
            events.register("pre_run_cell", _pre_run_cell)
            _ipython_hooked = True
        except Exception:
            pass
    if getattr(warnings.showwarning, _MARK, False) or _recording():
        return
    _previous = warnings.showwarning
    warnings.showwarning = _showwarning


def disable_pretty_warnings() -> None:
    """Restore the warning handler that :func:`enable_pretty_warnings` replaced.

    A handler installed after ours (by another library) is left in place.

    Returns
    -------
    None
    """
    global _previous, _ipython_hooked
    if getattr(warnings.showwarning, _MARK, False):
        warnings.showwarning = _previous or _python_default
    _previous = None
    if _ipython_hooked:
        events = _ipython_events()
        try:
            if events is not None:
                events.unregister("pre_run_cell", _pre_run_cell)
        except Exception:
            pass
        _ipython_hooked = False
