"""The one place bncourse imports mxnet, and what the course does where mxnet does not exist.

mxnet 1.9.1, the last release of MXNet (retired upstream), publishes wheels for Linux on x86_64 and
aarch64 only, so ``requirements.txt`` installs it only there. Everywhere else (macOS, Windows) the rest
of the course installs and runs, and the Gluon part -- :mod:`bncourse.gluon`, notebook 05, exercise 10
and ``tests/test_gluon.py`` -- is skipped with :data:`MISSING`, which says what is missing, why, and
where to run that part instead.

Nothing else in bncourse (nor the tests) imports mxnet directly: they call :func:`import_mxnet`, which
first makes mxnet importable under the course's NumPy (see :func:`_restore_numpy_bool`), or
:func:`available`, which tells whether that works here.
"""

from __future__ import annotations

__all__ = [
    "MISSING", "MxnetUnavailableError", "import_mxnet", "available", "skip_reason",
]

import sys
from types import ModuleType

import numpy

#: Why the Gluon part of the course is skipped on a machine without mxnet, and where to run it.
MISSING = (
    "The Gluon part of the course (notebook 05, exercise 10 and the Gluon tests) is skipped here because "
    "mxnet cannot be imported: mxnet 1.9.1 has wheels only for Linux (x86_64 and aarch64), none for "
    "macOS or Windows, so to run it use Linux, WSL on Windows, or a Linux container."
)


class MxnetUnavailableError(ImportError):
    """mxnet cannot be imported on this machine; the message is :data:`MISSING`, plus the cause when
    mxnet is installed but fails to import."""


_available: bool | None = None
_error: MxnetUnavailableError | None = None


def _restore_numpy_bool() -> None:
    """Give NumPy back its ``numpy.bool`` alias of the builtin ``bool``, if it lacks one.

    mxnet 1.9.1 was released when ``numpy.bool`` still existed (a deprecated alias of ``bool``, removed
    in NumPy 1.24); it reads the alias at import and in array indexing. The course pins NumPy 1.26,
    the oldest series with wheels for both Python 3.11 and 3.12, so the alias is put back here, right
    before mxnet is imported and nowhere else: a process that never imports mxnet keeps NumPy as it
    is. The alias is exactly what NumPy up to 1.23 had, so nothing else changes. (NumPy 2 has a
    ``numpy.bool`` of its own, but mxnet 1.9.1 requires NumPy < 2.)
    """
    if "bool" not in vars(numpy):
        numpy.bool = bool  # type: ignore[attr-defined]


def import_mxnet() -> ModuleType:
    """Import mxnet and return it, after making it importable under the course's NumPy.

    Importing mxnet lowers the OpenMP thread count torch uses as well; :mod:`bncourse.gluon` and
    :func:`available` give torch its threads back.

    Raises:
        MxnetUnavailableError: (an ``ImportError``) if mxnet is not installed here or fails to load;
            its message is :data:`MISSING`, followed by the cause when mxnet is installed.
    """
    _restore_numpy_bool()
    try:
        import mxnet
    except (ImportError, OSError) as err:  # OSError: the installed libmxnet.so failed to load
        not_installed = isinstance(err, ModuleNotFoundError) and err.name == "mxnet"
        message = MISSING if not_installed else f"{MISSING} (Importing it failed: {type(err).__name__}: {err})"
        raise MxnetUnavailableError(message, name="mxnet") from err
    return mxnet


def available() -> bool:
    """Whether mxnet can be imported here (imports it once to find out; the answer is cached).

    torch's thread count is left as it was, though mxnet's import lowers it.
    """
    global _available, _error
    if _available is None:
        import torch

        threads, already_imported = torch.get_num_threads(), "mxnet" in sys.modules
        try:
            import_mxnet()
            _available = True
        except MxnetUnavailableError as err:
            _available, _error = False, err
        finally:
            if not already_imported:
                torch.set_num_threads(threads)
    return _available


def skip_reason() -> str:
    """Why the Gluon part is skipped here: :data:`MISSING`, with the cause if mxnet is installed but
    failed to import; ``""`` where mxnet is available."""
    if available():
        return ""
    return str(_error) if _error is not None else MISSING
