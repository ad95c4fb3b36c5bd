"""Errors a user can act on.

Every error that reaches the CLI is one line that names the file, row, column
or config key at fault; the CLI prints it and exits with `exit_code`.
"""

from __future__ import annotations

from dataclasses import dataclass


def why(e: BaseException, limit: int = 160) -> str:
    """An exception in a few words for a one-line error: its type and its message's first line
    (an empty message, as a zero-byte file's reader may raise, leaves the type alone)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:limit]}" if text else type(e).__name__


class MorphoscaleError(Exception):
    """An error caused by the user's input, config or environment (exit code 2)."""

    exit_code = 2


class InputError(MorphoscaleError):
    """A file the user gave us is missing, unreadable or wrong."""


class ConfigError(MorphoscaleError):
    """A config key is unknown, missing or of the wrong type."""


class OutputExistsError(MorphoscaleError):
    """An output path exists and `--overwrite` was not given."""


class MorphoscaleWarning(UserWarning):
    """Something the user should know about a result that is still produced; the CLI prints one line."""


class AlignmentWarning(MorphoscaleWarning):
    """An aligner scales by control variance that the controls do not fully support."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what is wrong."""

    file: str
    message: str
    line: int | None = None  # 1-based line in the file (the header is line 1)
    column: str | None = None

    def __str__(self) -> str:
        if not self.file:
            return self.message
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.column is not None:
            where += f" column '{self.column}'"
        return f"{where}: {self.message}"


class ValidationError(InputError):
    """Every problem found in an input, reported together in one line."""

    max_shown = 8

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[: self.max_shown])
        more = len(self.problems) - self.max_shown
        if more > 0:
            shown += f"; ... and {more} more"
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the input: {shown}")


class Problems:
    """Collects problems so that validation reports all of them, not the first."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, file, message: str, line: int | None = None, column: str | None = None) -> None:
        self.items.append(Problem(str(file), message, line, column))

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)
