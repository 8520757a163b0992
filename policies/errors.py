"""Errors in a policy file, each naming the file, the line and the key."""

from __future__ import annotations

from collections.abc import Sequence


class PolicyError(ValueError):
    """One thing wrong with a policy file.

    `line` is 1-based. `key` is the dotted path of the offending entry as it
    is written in the file (`protected_tables.patients.columns.ssn.mask`), or
    "" for the document as a whole. `expected` says what would have been
    accepted; `got` shows what was found (already quoted, or None when there
    is nothing worth repeating, as for a secret); `hint` is a near miss that
    the author probably meant.
    """

    def __init__(
        self,
        source: str,
        line: int,
        key: str,
        expected: str,
        got: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.source}:{self.line}: "
        if self.key:
            where += f"{self.key}: "
        text = f"{where}expected {self.expected}"
        if self.got is not None:
            text += f" (got {self.got})"
        if self.hint is not None:
            text += f"; did you mean {self.hint!r}?"
        return text

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[type[PolicyError], tuple[object, ...]]:  # keeps the attributes through pickling
        return (PolicyError, (self.source, self.line, self.key, self.expected, self.got, self.hint))


class PolicyErrors(PolicyError):
    """Everything wrong with a policy file, in file order, one line each.

    A PolicyError itself, so `except PolicyError` catches it; its own
    attributes are those of the first error, and `errors` lists them all.
    """

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        if not errors:
            raise ValueError("PolicyErrors needs at least one error")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.source, first.line, first.key, first.expected, first.got, first.hint)

    def _message(self) -> str:
        return "\n".join(PolicyError._message(error) for error in self.errors)

    def __reduce__(self) -> tuple[type[PolicyError], tuple[object, ...]]:
        return (PolicyErrors, (self.errors,))
