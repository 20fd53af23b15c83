"""The exercise framework: an :class:`Exercise` with ``check``, ``hint`` and ``solution``, the placeholder
``____``, the solution mode, and the scoreboard (:func:`summary`, :func:`all_passed`).

Each notebook's exercises live in a module of their own (``bncourse.exercises.ex06`` for notebook 06);
this module knows nothing about any of them.

Every exercise asks for a function. The learner writes it in the notebook and calls
``qN.check(their_function)``; the check runs it on numeric test cases and says precisely what is wrong
(for common mistakes it recognizes the mistake by name). ``qN.hint()`` gives a nudge and
``qN.solution()`` shows the reference solution with an explanation.

Placeholders and the solution mode
----------------------------------
Learners start from cells holding the placeholder :data:`____` (``return ____``). The call
``f = qN.answer_or_solution(f)`` returns the learner's own function -- unless the environment variable
``BNCOURSE_EXERCISE_SOLUTIONS`` is set to ``1`` (or ``true``/``yes``), in which case it returns the
reference solution instead and says so. The course's test suite sets that variable, so an executed
notebook runs every check (and every experiment built on the answers) with the reference solutions
filled in, while the notebook a learner opens shows the placeholders.
"""

from __future__ import annotations

__all__ = [
    "SOLUTIONS_ENV", "Placeholder", "____", "PLACEHOLDER", "solutions_enabled", "CheckResult", "Note", "Exercise",
    "summary", "all_passed",
]

import copy
import inspect
import math
import os
import signal
import textwrap
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import _mxnet

#: Environment variable that switches :meth:`Exercise.answer_or_solution` to the reference solutions.
SOLUTIONS_ENV = "BNCOURSE_EXERCISE_SOLUTIONS"


class Placeholder:
    """The blank a learner replaces with an answer; there is exactly one, :data:`____`."""

    _instance: "Placeholder | None" = None

    def __new__(cls) -> "Placeholder":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "____"


#: The placeholder learners see in exercise cells (Kaggle-learn style ``____``).
____ = Placeholder()
PLACEHOLDER = ____


def solutions_enabled() -> bool:
    """Whether ``BNCOURSE_EXERCISE_SOLUTIONS`` asks for the reference solutions (``1``/``true``/``yes``)."""
    return os.environ.get(SOLUTIONS_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True, repr=False)
class CheckResult:
    """The verdict of :meth:`Exercise.check`: truthy when correct; displays its message in Jupyter."""

    exercise: str
    passed: bool
    message: str
    answered: bool = True
    #: The check could not run on this machine (the Gluon exercise without mxnet); ``message`` says why.
    skipped: bool = False

    def __bool__(self) -> bool:
        return self.passed

    @property
    def status(self) -> str:
        """``"Correct"``, ``"Incorrect"``, ``"Not answered yet"`` or ``"Skipped"``."""
        if self.skipped:
            return "Skipped"
        if not self.answered:
            return "Not answered yet"
        return "Correct" if self.passed else "Incorrect"

    def __repr__(self) -> str:
        mark = "✔" if self.passed else ("–" if self.skipped else "✘")
        return f"{mark} {self.exercise} — {self.status}: {self.message}"

    def _repr_markdown_(self) -> str:
        colour = "#2e7d32" if self.passed else ("#9e9e9e" if not self.answered or self.skipped else "#c62828")
        return f'<span style="color:{colour}">**{self.status}**</span> ({self.exercise}): {self.message}'


@dataclass(frozen=True, repr=False)
class Note:
    """A hint or a solution: Markdown shown by Jupyter, plain text anywhere else."""

    title: str
    text: str

    def __repr__(self) -> str:
        return f"{self.title}\n{self.text}"

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n{self.text}"


class _Wrong(Exception):
    """Raised inside a check at the first failed test; its message is shown to the learner."""


class _Unanswered(Exception):
    """Raised inside a check when the learner's function still returns the placeholder."""


#: Seconds one ``check()`` may run before it is stopped, so that a learner's function that never returns
#: gets an answer instead of a hung kernel. Every reference solution is checked in a few seconds.
CHECK_TIME_LIMIT = 120.0


class _TimedOut(BaseException):
    """Raised by the time limit inside the learner's code (a BaseException: ``except Exception`` can't swallow it)."""


class _TimeLimit:
    """Stop the code inside after ``seconds`` (SIGALRM; in the main thread of a POSIX process, else no limit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False

    def _expire(self, signum: int, frame: object) -> None:
        raise _TimedOut

    def __enter__(self) -> "_TimeLimit":
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def _close(a: Any, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.detach().double(), b.double(), atol=atol, rtol=rtol)


class Exercise:
    """One exercise: a task, a reference solution, a hint and a check with precise feedback.

    Subclasses set :attr:`title`, :attr:`task`, :attr:`hint_text`, :attr:`explanation` and
    :attr:`reference` (a module-level function, shown by :meth:`solution`) and implement
    :meth:`_verify`, which raises ``_Wrong(message)`` at the first failed test.
    """

    number: int = 0
    title: str = ""
    task: str = ""
    hint_text: str = ""
    explanation: str = ""
    reference: Callable[..., Any]
    #: The check builds Gluon networks: where mxnet cannot be imported it is skipped, saying why.
    requires_mxnet: bool = False

    def __init__(self) -> None:
        self.last_result: CheckResult | None = None

    @property
    def name(self) -> str:
        """``"Exercise N · title"``."""
        return f"Exercise {self.number} · {self.title}"

    def __repr__(self) -> str:
        return f"<{self.name}>"

    # -- the learner's side ------------------------------------------------------------------
    def answer_or_solution(self, answer: Any) -> Any:
        """Return ``answer``, or the reference solution when :func:`solutions_enabled` is true.

        In solution mode a one-line note is printed, so an executed notebook says openly which
        function its checks ran.
        """
        if solutions_enabled():
            print(f"{self.name}: using the reference solution ({SOLUTIONS_ENV}=1).")
            return type(self).reference
        return answer

    def usable(self, answer: Any) -> Any:
        """What a later cell that builds on this exercise should run: ``answer`` once its last check passed,
        otherwise the reference solution, with a printed note saying so (a notebook run with the exercise
        unanswered, or answered wrongly, still runs to the end)."""
        if self.last_result is not None and self.last_result.passed:
            return answer
        result = self.last_result
        state = ("has not been checked" if result is None else "is not answered yet" if not result.answered
                 else "was skipped" if result.skipped else "did not pass its check")
        print(f"{self.name} {state}: this cell uses the reference solution instead of your answer.")
        return type(self).reference

    def check(self, answer: Any) -> CheckResult:
        """Run ``answer`` (the learner's function) on the exercise's test cases.

        Returns:
            A :class:`CheckResult` (truthy when every test passes) whose message says what is
            wrong, or confirms what was verified; it is also kept in :attr:`last_result`. An
            exercise that needs mxnet, on a machine where it cannot be imported, returns a skipped
            result whose message says why and where to run it.
        """
        if self.requires_mxnet and not _mxnet.available():
            self.last_result = CheckResult(self.name, False, _mxnet.skip_reason(), skipped=True)
            return self.last_result
        try:
            if answer is PLACEHOLDER:
                raise _Unanswered
            if not callable(answer):
                raise _Wrong(f"expected a function, got {type(answer).__name__} {answer!r}")
            with torch.random.fork_rng(devices=[]), _TimeLimit(CHECK_TIME_LIMIT):   # the learner's random state is left alone
                message = self._verify(answer)
            result = CheckResult(self.name, True, message)
        except _TimedOut:
            result = CheckResult(self.name, False, f"your function did not return within {CHECK_TIME_LIMIT:g} s, so the "
                                 "check stopped it: look for a loop that never ends (or a wait that never ends).")
        except SystemExit as stop:
            result = CheckResult(self.name, False, f"your function called sys.exit({stop.code!r}) (or exit()/quit()): "
                                 "a function returns its answer, it does not end the program.")
        except _Unanswered:
            result = CheckResult(self.name, False, "replace the ____ placeholder with your code, then check again.", answered=False)
        except _Wrong as wrong:
            result = CheckResult(self.name, False, str(wrong))
        self.last_result = result
        return result

    def hint(self) -> Note:
        """A nudge towards the answer."""
        return Note(f"Hint — {self.name}", self.hint_text)

    def solution(self) -> Note:
        """The reference solution's source code and why it is right."""
        source = textwrap.dedent(inspect.getsource(type(self).reference))
        return Note(f"Solution — {self.name}", f"```python\n{source}```\n\n{self.explanation}")

    # -- the checking side --------------------------------------------------------------------
    def _verify(self, answer: Callable[..., Any]) -> str:
        raise NotImplementedError

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the learner's function; its exceptions and placeholder returns become feedback."""
        try:
            out = fn(*args, **kwargs)
        except _Unanswered:
            raise
        except Exception as exc:  # the learner's code failed: say how, with the call that failed
            raise _Wrong(f"your function raised {type(exc).__name__}: {exc}") from None
        if out is PLACEHOLDER or (isinstance(out, tuple) and any(o is PLACEHOLDER for o in out)):
            raise _Unanswered
        return out

    @staticmethod
    def _diagnose(got: torch.Tensor, expected: torch.Tensor, mistakes: Mapping[str, torch.Tensor], what: str,
                  atol: float = 1e-5) -> None:
        """Raise ``_Wrong`` unless ``got`` matches ``expected``, naming a recognised mistake if it matches one."""
        if not isinstance(got, torch.Tensor):
            raise _Wrong(f"{what}: expected a tensor, got {type(got).__name__}")
        if got.shape != expected.shape:
            raise _Wrong(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
        if _close(got, expected, atol=atol):
            return
        for explanation, wrong in mistakes.items():
            if _close(got, wrong, atol=atol):
                raise _Wrong(f"{what} is off by up to {_max_diff(got, expected):.3g}: {explanation}")
        raise _Wrong(f"{what} is off by up to {_max_diff(got, expected):.3g} (largest absolute difference "
                     "from the correct values)")


class _Forbidden:
    """A context manager that replaces library functions by tripwires while a learner's function runs.

    ``with _Forbidden({"torch.nn.functional.batch_norm": F, ...}) as guard:`` ... then ``guard.used`` names the
    functions that were called (the learner's code may have caught the exception the tripwire raised).
    """

    def __init__(self, targets: Mapping[str, tuple[Any, str]]) -> None:
        self.targets = dict(targets)            # shown name -> (owner object, attribute name)
        self.used: list[str] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> "_Forbidden":
        for shown, (owner, attr) in self.targets.items():
            # the raw entry of the owner's own namespace (a classmethod stays a classmethod), or None if inherited
            self._saved.append((owner, attr, vars(owner).get(attr, None)))

            def tripwire(*args: Any, _shown: str = shown, **kwargs: Any) -> Any:
                self.used.append(_shown)
                raise RuntimeError(f"{_shown} is not allowed in this exercise")

            setattr(owner, attr, tripwire)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, original in reversed(self._saved):
            if original is None:
                delattr(owner, attr)                 # it was inherited: uncover the parent's again
            else:
                setattr(owner, attr, original)
        self._saved.clear()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def summary(exercises: Sequence[Exercise]) -> str:
    """One line per exercise in ``exercises`` with the status of its last check (``not checked yet`` if none)."""
    if not all(isinstance(e, Exercise) for e in exercises):
        raise TypeError("exercises must be a sequence of bncourse.exercises.Exercise objects")
    lines = []
    for e in exercises:
        r = e.last_result
        status = r.status if r is not None else "not checked yet"
        mark = "✔" if r is not None and r.passed else ("–" if r is not None and r.skipped else "·")
        lines.append(f"{mark} {e.name}: {status}" + (f" ({r.message})" if r is not None and r.skipped else ""))
    return "\n".join(lines)


def all_passed(exercises: Sequence[Exercise]) -> bool:
    """Whether the last check of every exercise in ``exercises`` passed, skipped ones apart (the Gluon exercise where
    mxnet cannot be imported: its check says so)."""
    if not all(isinstance(e, Exercise) for e in exercises):
        raise TypeError("exercises must be a sequence of bncourse.exercises.Exercise objects")
    return all(e.last_result is not None and (e.last_result.passed or e.last_result.skipped) for e in exercises)
