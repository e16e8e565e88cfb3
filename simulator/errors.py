"""One error type for bad input: it always names the file, the field and what was expected."""
from __future__ import annotations


def describe(value, limit: int = 60) -> str:
    """A short, user-facing rendering of a bad input value for ``got ...`` (YAML spelling of constants)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null (no value)"
    if isinstance(value, dict):
        text = "a mapping {" + ", ".join(str(k) for k in list(value)[:5]) + (", ..." if len(value) > 5 else "") + "}"
    elif isinstance(value, (list, tuple)):
        text = f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    if len(text) > limit:  # never echo a huge input back (a 100k-character name, a 5000-digit number)
        text = text[:limit - 3] + "..."
    return text


class ScenarioError(Exception):
    """Invalid user input. The CLI prints ``str(err)`` on one line and exits with code 2.

    ``expected`` is what the field should hold, phrased to follow the word "expected" (and usually ending
    in ", got ..."); the message reads ``FILE: FIELD: expected ...``. ``where`` is the file holding the
    fault; an error raised deep inside (where=None) is located by whoever knows the file.
    """

    def __init__(self, where: str | None, field: str, expected: str):
        self.where = where or "<scenario>"
        self.has_where = where is not None
        self.field = field or "<root>"
        self.expected = expected
        text = expected if expected.startswith("expected ") else f"expected {expected}"
        super().__init__(" ".join(f"{self.where}: {self.field}: {text}".split()))

    def located(self, where: str) -> "ScenarioError":
        """The same error, naming ``where`` as its file unless it already names one (a calibration file or a
        config.json read on the scenario's behalf keeps its own name)."""
        if self.has_where:
            return self
        return ScenarioError(where, self.field, self.expected)
