"""Named queries (`sql/<name>.sql`) and their parameters, bound as validated SQL literals.

Both engines get the same SQL text. Neither Athena's `?` nor DuckDB's `$name` parameters cover
everything the queries need (an IN list of lines, a VALUES table built from the use case's
taxonomy), so placeholders `:name` are replaced here by literals rendered from validated values:
line ids and metric names against strict patterns, numbers as int, dates parsed, strings quoted
with '' escaping. Nothing unvalidated reaches the SQL.

A query file declares its parameters in header comments, `-- :<name> <type>[(<choices>)] [notes]`.
Types: line_id, line_ids (list or comma-separated), metric, time_ms, date, choice(a,b), use_case,
role. Placeholders derived from them:
- `:<p>_date` and `:<p>_month` for every time_ms parameter (UTC 'YYYY-MM-DD' / 'YYYY-MM', for
  partition pruning);
- `:taxonomy` for a use_case parameter: the rows (line, metric, role, unit, scale, offset) of
  `UseCaseConfig.roles_for_line` for every line of `:lines`, as a VALUES list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from edgeloop.schemas import UseCaseConfig, load_use_case
from edgeloop.schemas.common import IDENTIFIER

SQL_DIR = Path(__file__).resolve().parent / "sql"

_ROLE = IDENTIFIER
_METRIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_QUERY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DECLARATION = re.compile(r"^--\s*:(?P<name>[a-z][a-z0-9_]*)\s+(?P<type>[a-z_]+)(?:\((?P<args>[^)]*)\))?")
# A placeholder outside string literals, quoted identifiers and comments (those alternatives
# match first and are left alone).
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|(?<![:\w]):(?P<name>[a-z][a-z0-9_]*)")
_MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class QueryParameterError(ValueError):
    """A parameter is missing, unknown or has a bad value; the message names it and the value."""


class UnknownQueryError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    parameters: tuple[Parameter, ...]
    template: str

    def render(self, **params: Any) -> str:
        """The SQL with every placeholder replaced by a validated literal."""
        values = self._bind(params)
        return _TOKENS.sub(lambda m: values[m.group("name")] if m.group("name") else m.group(0), self.template)

    def _bind(self, params: dict[str, Any]) -> dict[str, str]:
        declared = {p.name: p for p in self.parameters}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise QueryParameterError(
                f"query {self.name!r}: unknown parameter(s) {unknown} (value(s) {[params[k] for k in unknown]!r}); "
                f"it takes {list(declared)}"
            )
        missing = [name for name in declared if params.get(name) is None]
        if missing:
            raise QueryParameterError(f"query {self.name!r}: missing parameter(s) {missing}")
        parsed = {p.name: _PARSERS[p.type](p, params[p.name]) for p in self.parameters}
        _check_ranges(parsed)
        literals = {}
        for parameter in self.parameters:
            literals.update(_literals(parameter, parsed[parameter.name], parsed))
        return literals

    @property
    def placeholders(self) -> set[str]:
        return {m.group("name") for m in _TOKENS.finditer(self.template) if m.group("name")}


# --- literals -------------------------------------------------------------------------------------


def string_literal(value: str) -> str:
    """A SQL string literal valid on Trino/Athena and DuckDB (quotes doubled, no control chars)."""
    if not isinstance(value, str):
        raise TypeError(f"value={value!r} is a {type(value).__name__}, not a str")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"value={value!r} holds a control character")
    return "'" + value.replace("'", "''") + "'"


def double_literal(value: float) -> str:
    # repr round-trips a float exactly; the CAST keeps Trino from typing 0.5 as DECIMAL.
    return f"CAST({float(value)!r} AS DOUBLE)"


# --- parsing values -------------------------------------------------------------------------------


def _fail(parameter: Parameter, value: Any, why: str) -> QueryParameterError:
    return QueryParameterError(f"parameter {parameter.name}={value!r}: {why}")


def _pattern(regex: re.Pattern, what: str) -> Callable[[Parameter, Any], str]:
    def parse(parameter: Parameter, value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise _fail(parameter, value, f"is not a {what} (must match {regex.pattern})")
        return value

    return parse


def _line_ids(parameter: Parameter, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
        raise _fail(parameter, value, "must be a list of line ids or a comma-separated string")
    items = [item.strip() if isinstance(item, str) else item for item in items]
    for item in items:
        if not isinstance(item, str) or not IDENTIFIER.match(item):
            raise _fail(parameter, value, f"holds {item!r}, which is not a line id (must match {IDENTIFIER.pattern})")
    if not items:
        raise _fail(parameter, value, "names no line")
    return tuple(dict.fromkeys(items))


def _time_ms(parameter: Parameter, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\d{1,15}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(parameter, value, "must be a whole number of ms since the Unix epoch")
    if not 0 <= value <= _MAX_TIME_MS:
        raise _fail(parameter, value, f"is outside 0..{_MAX_TIME_MS} ms")
    return value


def _date(parameter: Parameter, value: Any) -> str:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if not isinstance(value, str) or not _DATE.match(value):
        raise _fail(parameter, value, "is not a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise _fail(parameter, value, f"is not a date: {exc}") from exc


def _choice(parameter: Parameter, value: Any) -> str:
    if value not in parameter.choices:
        raise _fail(parameter, value, f"is not one of {list(parameter.choices)}")
    return value


def _use_case(parameter: Parameter, value: Any) -> UseCaseConfig:
    if isinstance(value, UseCaseConfig):
        return value
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise _fail(parameter, value, f"is not a use case name (must match {IDENTIFIER.pattern})")
    try:
        return load_use_case(value)
    except FileNotFoundError as exc:
        raise _fail(parameter, value, str(exc)) from exc


_PARSERS: dict[str, Callable[[Parameter, Any], Any]] = {
    "line_id": _pattern(IDENTIFIER, "line id"),
    "line_ids": _line_ids,
    "metric": _pattern(_METRIC, "metric name"),
    "role": _pattern(_ROLE, "role name"),
    "time_ms": _time_ms,
    "date": _date,
    "choice": _choice,
    "use_case": _use_case,
}


def _check_ranges(parsed: dict[str, Any]) -> None:
    for start, end in (("start_ms", "end_ms"), ("from_date", "to_date")):
        if start in parsed and end in parsed and parsed[start] > parsed[end]:
            raise QueryParameterError(
                f"parameter {start}={parsed[start]!r} is after {end}={parsed[end]!r}; the range would be empty"
            )


# --- literals per type ----------------------------------------------------------------------------


def _literals(parameter: Parameter, value: Any, parsed: dict[str, Any]) -> dict[str, str]:
    name = parameter.name
    if parameter.type == "time_ms":
        moment = datetime.fromtimestamp(value / 1000, tz=UTC)
        return {
            name: str(value),
            f"{name}_date": string_literal(moment.strftime("%Y-%m-%d")),
            f"{name}_month": string_literal(moment.strftime("%Y-%m")),
        }
    if parameter.type == "line_ids":
        return {name: ", ".join(string_literal(line) for line in value)}
    if parameter.type == "use_case":
        return {"taxonomy": taxonomy_values(value, parsed.get("lines", ()), parsed.get("role"))}
    return {name: string_literal(value)}


def taxonomy_values(use_case: UseCaseConfig, lines: Iterable[str], role: str | None = None) -> str:
    """Rows (line, metric, role, unit, scale, offset) for a VALUES list: each line's taxonomy."""
    lines = list(lines)
    rows = [
        (line, key, metric_role.role, metric_role.unit, metric_role.scale, metric_role.offset)
        for line in lines
        for key, metric_role in sorted(use_case.roles_for_line(line).items())
    ]
    if role is not None and not any(row[2] == role for row in rows):
        known = sorted({row[2] for row in rows})
        raise QueryParameterError(
            f"parameter role={role!r} is not a role of use case {use_case.use_case!r} on lines {lines}; roles: {known}"
        )
    if not rows:
        raise QueryParameterError(f"parameter use_case={use_case.use_case!r} has no taxonomy for lines {lines}")
    return ",\n    ".join(
        "("
        + ", ".join([*(string_literal(text) for text in row[:4]), double_literal(row[4]), double_literal(row[5])])
        + ")"
        for row in rows
    )


# --- loading --------------------------------------------------------------------------------------


def _derived(parameter: Parameter) -> set[str]:
    if parameter.type == "time_ms":
        return {parameter.name, f"{parameter.name}_date", f"{parameter.name}_month"}
    if parameter.type == "use_case":
        return {"taxonomy"}
    return {parameter.name}


def parse_query(name: str, text: str) -> NamedQuery:
    """A NamedQuery from a file's text; refuses undeclared placeholders and unused parameters."""
    description, parameters = [], []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        declaration = _DECLARATION.match(line)
        if declaration is None:
            description.append(line.removeprefix("--").strip())
            continue
        kind = declaration["type"]
        if kind not in _PARSERS:
            raise ValueError(f"query {name!r}: parameter :{declaration['name']} has unknown type {kind!r}")
        choices = tuple(c.strip() for c in (declaration["args"] or "").split(",") if c.strip())
        parameters.append(Parameter(declaration["name"], kind, choices))
    query = NamedQuery(name, " ".join(description).strip(), tuple(parameters), text)
    provided = set().union(*(_derived(p) for p in parameters)) if parameters else set()
    undeclared = sorted(query.placeholders - provided)
    if undeclared:
        raise ValueError(f"query {name!r}: placeholders {undeclared} are not declared")
    unused = sorted(p.name for p in parameters if not (_derived(p) & query.placeholders))
    if unused:
        raise ValueError(f"query {name!r}: parameters {unused} are declared but not used")
    return query


@cache
def queries() -> dict[str, NamedQuery]:
    """Every named query under sql/, by file stem."""
    return {path.stem: parse_query(path.stem, path.read_text()) for path in sorted(SQL_DIR.glob("*.sql"))}


def get_query(name: str) -> NamedQuery:
    if not isinstance(name, str) or not _QUERY_NAME.match(name) or name not in queries():
        raise UnknownQueryError(f"query name={name!r} is not one of {sorted(queries())}")
    return queries()[name]


def render(name: str, **params: Any) -> str:
    """The SQL of a named query with its parameters bound."""
    return get_query(name).render(**params)
