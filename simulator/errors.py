"""One error type for bad input: it always names the file, the field and what was expected."""
from __future__ import annotations


class ScenarioError(Exception):
    """Invalid user input. The CLI prints ``str(err)`` on one line and exits with code 2."""

    def __init__(self, where: str | None, field: str, expected: str):
        self.where = where or "<scenario>"
        self.field = field or "<root>"
        self.expected = expected
        super().__init__(f"{self.where}: {self.field}: {expected}")

    def located(self, where: str) -> "ScenarioError":
        return ScenarioError(where, self.field, self.expected)
