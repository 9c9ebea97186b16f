"""The AWS calls written in the source, found by reading it (AST), and checked against botocore.

A call `<receiver>.<method>(...)` counts when its receiver is known to be a client of a service:
- `client("iot")`, `aws_client("iot")`, `boto3.client("iot")`, `session.client("iot")` themselves;
- a name or `self.<attribute>` assigned one of those, or a paginator (`x.get_paginator("op")`);
- a name or attribute named after a service (`iot`, `self.iot`, `self.greengrass`: SERVICE_NAMES);
- `self.<f>` / `<f>()` where a function `f` of the scanned code returns a client (`_client`).
Each such call must name a method the client has (an operation, or a generic client method), a
paginator must exist for `get_paginator("op")`, and every literal keyword must be a member of
the operation's input. Calls built dynamically (`getattr(client, name)(...)`) are left to the
run-time check (botocore_contract.recording).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import botocore.session
from botocore.exceptions import DataNotFoundError
from botocore_contract import method_names, operation_model, service_model

# identifier -> service, for clients passed in as parameters
SERVICE_NAMES = {
    "iot": "iot",
    "greengrass": "greengrassv2",
    "greengrassv2": "greengrassv2",
    "sagemaker": "sagemaker",
    "s3": "s3",
    "dynamodb": "dynamodb",
    "ssm": "ssm",
    "iam": "iam",
    "sts": "sts",
    "cloudformation": "cloudformation",
    "sns": "sns",
    "sqs": "sqs",
    "eventbridge": "events",
}
CLIENT_FACTORIES = {"client", "aws_client"}
GENERIC_METHODS = {"get_paginator", "get_waiter", "can_paginate", "close", "generate_presigned_url"}
BOTO3_INJECTED = {  # methods boto3 adds to some clients (boto3/s3/inject.py)
    "s3": {"upload_file", "download_file", "upload_fileobj", "download_fileobj", "copy", "generate_presigned_post"},
}
PAGINATE_EXTRA = {"PaginationConfig"}


@dataclass(frozen=True)
class StaticCall:
    where: str  # "path:line"
    service: str
    method: str  # the python method: "create_thing_group", or the operation of a paginator
    keywords: tuple[str, ...]  # literal keyword names (a **mapping is not listed)
    paginated: bool = False

    @property
    def operation(self) -> str | None:
        return method_names(self.service).get(self.method)


def _service_of_factory(node: ast.AST) -> str | None:
    """The service of client("iot"), aws_client("iot"), boto3.client("iot"), x.client("iot"): "iot"."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name in CLIENT_FACTORIES and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _key(node: ast.AST) -> str | None:
    """The lookup key of `iot` ("iot") or `self.iot` ("self.iot"); None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


class _Scanner:
    def __init__(self, returns_client: dict[str, str]) -> None:
        self.returns_client = returns_client  # function name -> [(module, service)]
        self.bindings: dict[tuple, tuple[str, str | None]] = {}  # scoped key -> (service, paginated operation)
        self.calls: list[StaticCall] = []
        self.scope: tuple[str, str, str] = ("", "", "")  # path, class, function
        self.imported: set[str] = set()  # names the current module imports

    def _scoped(self, key: str, function: str | None = None) -> tuple:
        path, cls, current = self.scope
        if key.startswith("self."):
            return (path, cls, key)
        return (path, cls, current if function is None else function, key)

    def _lookup(self, key: str) -> tuple[str, str | None] | None:
        if key.startswith("self."):
            return self.bindings.get(self._scoped(key))
        function = self.scope[2]
        while True:  # this function, then the ones it is nested in
            found = self.bindings.get(self._scoped(key, function))
            if found or not function:
                return found
            function = function.rsplit(".", 1)[0]

    def receiver(self, node: ast.AST) -> tuple[str, str | None] | None:
        service = _service_of_factory(node)
        if service:
            return service, None
        if isinstance(node, ast.IfExp):  # `given if given is not None else client("iot")`
            return self.receiver(node.body) or self.receiver(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_paginator":
            owner = self.receiver(node.func.value)
            operation = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            return (owner[0], operation) if owner and operation else None
        if isinstance(node, ast.Call):  # self._client() / _client()
            node = node.func
        key = _key(node)
        if key is None:
            return None
        if self._lookup(key):
            return self._lookup(key)
        name = key.rsplit(".", 1)[-1]
        for path, service in self.returns_client.get(name, []):
            # a function of this module, or of a module it imports (a base class's property)
            if path == Path(self.scope[0]) or path.stem in self.imported:
                return service, None
        if key in self.imported:  # a module named like a service (`from edgeloop.cloud import s3`)
            return None
        service = SERVICE_NAMES.get(name.lstrip("_"))
        return (service, None) if service else None

    def bind(self, node: ast.Assign | ast.AnnAssign) -> None:
        value = node.value
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        bound = self.receiver(value) if value is not None else None
        for target in targets:
            key = _key(target)
            if key and bound:
                self.bindings[self._scoped(key)] = bound

    def visit_call(self, node: ast.Call, where: str) -> None:
        if not isinstance(node.func, ast.Attribute):
            return
        receiver = self.receiver(node.func.value)
        if receiver is None:
            return
        keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
        service, paginated = receiver
        if paginated is not None:
            if node.func.attr == "paginate":
                self.calls.append(StaticCall(where, service, paginated, keywords, paginated=True))
            return
        method = node.func.attr
        if method == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
            self.calls.append(StaticCall(where, service, node.args[0].value, (), paginated=True))
        self.calls.append(StaticCall(where, service, method, keywords))


def _functions_returning_clients(trees: dict[Path, ast.AST]) -> dict[str, list[tuple[Path, str]]]:
    """function name -> [(module, service)] of the functions that return a client."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for statement in ast.walk(node):
                    if isinstance(statement, ast.Return) and _service_of_factory(statement.value):
                        found.setdefault(node.name, []).append((path, _service_of_factory(statement.value)))
    return found


def _scoped_nodes(tree: ast.AST) -> list[tuple[ast.AST, str, str]]:
    """(node, enclosing class, enclosing function) of every assignment and call."""
    found = []

    def visit(node: ast.AST, cls: str, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child.name, "")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, cls, f"{function}.{getattr(child, 'name', 'lambda')}")
            else:
                if isinstance(child, ast.Assign | ast.AnnAssign | ast.Call):
                    found.append((child, cls, function))
                visit(child, cls, function)

    visit(tree, "", "")
    return found


def _imported_names(tree: ast.AST) -> set[str]:
    """The names a module imports, and the last part of each module it imports from."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.rsplit(".", 1)[-1])
    return names


def static_calls(paths: Iterable[Path], root: Path) -> list[StaticCall]:
    """Every client call found in `paths`. A name bound in a function is known in that function
    (and those nested in it); `self.<x>` bound in any method is known in the whole class."""
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in paths}
    scanner = _Scanner(_functions_returning_clients(trees))
    for path, tree in trees.items():
        nodes = sorted(
            _scoped_nodes(tree), key=lambda item: (isinstance(item[0], ast.Call), item[0].lineno)
        )  # bindings first: a method may use an attribute another method assigns
        scanner.imported = _imported_names(tree)
        for node, cls, function in nodes:
            scanner.scope = (str(path), cls, function)
            if isinstance(node, ast.Call):
                scanner.visit_call(node, f"{path.relative_to(root)}:{node.lineno}")
            else:
                scanner.bind(node)
    return sorted(set(scanner.calls), key=_source_order)


def _source_order(call: StaticCall) -> tuple:
    path, _, line = call.where.rpartition(":")
    return path, int(line), call.method, call.keywords


def static_problems(calls: Iterable[StaticCall]) -> list[str]:
    problems = []
    for call in calls:
        if call.service not in botocore_services():
            problems.append(f"{call.where}: no AWS service {call.service!r}")
            continue
        if call.paginated:
            if call.operation is None or not service_model(call.service).operation_model(call.operation):
                problems.append(f"{call.where}: {call.service} has no operation to paginate {call.method!r}")
                continue
            if not _client_can_paginate(call.service, call.method):
                problems.append(f"{call.where}: {call.service}.{call.method} has no paginator")
        elif call.method in GENERIC_METHODS | BOTO3_INJECTED.get(call.service, set()):
            continue
        elif call.operation is None:
            problems.append(f"{call.where}: a {call.service} client has no method {call.method!r}")
            continue
        members = set(operation_model(call.service, call.operation).input_shape.members)
        unknown = [k for k in call.keywords if k not in members | (PAGINATE_EXTRA if call.paginated else set())]
        if unknown:
            problems.append(f"{call.where}: {call.service}.{call.method} has no parameters {unknown}")
    return list(dict.fromkeys(problems))  # a paginator's get_paginator and paginate share a line


@cache
def botocore_services() -> frozenset[str]:
    return frozenset(botocore.session.get_session().get_available_services())


@cache
def _paginated_operations(service: str) -> frozenset[str]:
    loader = botocore.session.get_session().get_component("data_loader")
    try:
        return frozenset(loader.load_service_model(service, "paginators-1")["pagination"])
    except DataNotFoundError:  # a service without paginators
        return frozenset()


def _client_can_paginate(service: str, method: str) -> bool:
    return method_names(service).get(method) in _paginated_operations(service)
