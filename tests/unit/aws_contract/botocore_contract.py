"""Calls to AWS, held against botocore's service models: recorded at run time, or read from fakes.

`recording()` patches botocore.client.BaseClient._make_api_call, the one door every client call
(paginators and stubbed clients included) goes through, and keeps (service, operation,
parameters) as the caller passed them. `call_problems` then checks each against the service
model: the operation exists and ParamValidator finds the parameters valid (names, types,
required members). That also catches calls a client made with `parameter_validation=False`, or
that a Stubber or an event handler answered.

`fake_client_problems` covers test doubles that are not botocore clients: a class with at least
FAKE_MIN_OPERATIONS methods named like the operations of one service is taken for a fake of
that service, and each such method's parameters must be members of the operation's input.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.session
from botocore.client import BaseClient
from botocore.model import OperationModel, ServiceModel
from botocore.validate import ParamValidator

REPOSITORY = Path(__file__).resolve().parents[3]
NOT_PROJECT_CODE = {".venv", "tests", "node_modules"}
FAKE_MIN_OPERATIONS = 2
# The services whose fakes are looked for: those the orchestrator, provisioning and delivery use.
FAKED_SERVICES = ("greengrassv2", "iot", "sagemaker", "s3", "dynamodb")
FAKE_WORDS = ("fake", "stub")
FAKE_NAME_HINTS = (  # class-name part -> service, most specific first
    ("iotdata", "iot-data"),
    ("greengrass", "greengrassv2"),
    ("sagemaker", "sagemaker"),
    ("dynamodb", "dynamodb"),
    ("s3", "s3"),
    ("iot", "iot"),
)
CLIENT_METHODS = {"get_paginator", "get_waiter", "can_paginate", "close"}


@dataclass(frozen=True)
class Call:
    service: str  # botocore's name: "greengrassv2", "iot", ...
    operation: str  # API name: "CreateDeployment"
    params: dict[str, Any]
    site: str = ""  # "cloud/fleet/delivery.py:98": the project line that made the call
    paginated: bool = False  # made by a paginator (its site is where the pages are read)

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}({', '.join(sorted(self.params))})"


@contextlib.contextmanager
def recording() -> Iterator[list[Call]]:
    """Every AWS call made by any botocore client inside the block, in order."""
    calls: list[Call] = []
    original = BaseClient._make_api_call

    def record(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        calls.append(Call(service, operation_name, _copy(api_params), *_project_site()))
        return original(client, operation_name, api_params)

    with mock.patch.object(BaseClient, "_make_api_call", record):
        yield calls


def _copy(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as passed, safe from later changes (a file-like Body is kept as is)."""
    try:
        return copy.deepcopy(params)
    except TypeError:
        return dict(params)


def _project_site() -> tuple[str, bool]:
    """path:line of the innermost caller in the project's own code (not a library, not a test),
    and whether a botocore paginator stands between it and the call."""
    frame, paginated = sys._getframe(2), False
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        paginated = paginated or path.match("botocore/paginate.py")
        if path.is_relative_to(REPOSITORY) and path.relative_to(REPOSITORY).parts[0] not in NOT_PROJECT_CODE:
            return f"{path.relative_to(REPOSITORY)}:{frame.f_lineno}", paginated
        frame = frame.f_back
    return "", paginated


@cache
def service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


@cache
def method_names(service: str) -> dict[str, str]:
    """{python method name: API operation name} of the service's client, as botocore builds it."""
    from botocore import xform_name

    model = service_model(service)
    return {xform_name(operation): operation for operation in model.operation_names}


def operation_model(service: str, operation: str) -> OperationModel | None:
    model = service_model(service)
    return model.operation_model(operation) if operation in model.operation_names else None


def call_problems(calls: Iterable[Call]) -> list[str]:
    """What botocore's model says is wrong with each call: unknown operation, invalid parameters."""
    problems = []
    for call in calls:
        operation = operation_model(call.service, call.operation)
        if operation is None:
            problems.append(f"{call}: {call.service} has no operation {call.operation}")
            continue
        report = ParamValidator().validate(call.params, operation.input_shape)
        if report.has_errors():
            problems.append(f"{call}: {report.generate_report()}")
    return problems


# --- fakes that are not botocore clients ----------------------------------------------------------
@dataclass(frozen=True)
class FakeMethod:
    where: str  # "path:line Class.method"
    service: str
    method: str
    parameters: tuple[str, ...]  # named parameters, without self, *args and **kwargs


def fake_clients(paths: Iterable[Path], root: Path) -> list[FakeMethod]:
    """The methods of every class in `paths` that looks like a fake client of a FAKED_SERVICES
    service: named so (Fake/Stub + the service, e.g. FakeGreengrass: then every public method
    counts), or with FAKE_MIN_OPERATIONS or more methods named like that service's operations."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found += _fake_methods(node, f"{path.relative_to(root)}")
    return found


def _service_named_in(class_name: str) -> str | None:
    name = class_name.lower()
    if not any(word in name for word in FAKE_WORDS):
        return None
    return next((service for hint, service in FAKE_NAME_HINTS if hint in name), None)


def _fake_methods(node: ast.ClassDef, where: str) -> list[FakeMethod]:
    methods = [f for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    best = _service_named_in(node.name)
    matched = [m for m in methods if not m.name.startswith("_")] if best else []
    for service in () if best else FAKED_SERVICES:
        operations = [m for m in methods if m.name in method_names(service)]
        if len(operations) >= FAKE_MIN_OPERATIONS and len(operations) > len(matched):
            best, matched = service, operations
    return [
        FakeMethod(
            f"{where}:{m.lineno} {node.name}.{m.name}",
            best,
            m.name,
            tuple(
                a.arg for a in [*m.args.posonlyargs, *m.args.args, *m.args.kwonlyargs] if a.arg not in {"self", "cls"}
            ),
        )
        for m in matched
    ]


def fake_client_problems(methods: Iterable[FakeMethod]) -> list[str]:
    problems = []
    for method in methods:
        if method.method not in method_names(method.service):
            if method.method not in CLIENT_METHODS:
                problems.append(f"{method.where}: a {method.service} client has no method {method.method!r}")
            continue
        operation = operation_model(method.service, method_names(method.service)[method.method])
        members = set(operation.input_shape.members) if operation.input_shape else set()
        unknown = [p for p in method.parameters if p not in members]
        if unknown:
            problems.append(f"{method.where}: {method.service}.{operation.name} has no parameters {unknown}")
    return problems
