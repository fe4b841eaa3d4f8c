"""Schemathesis over every operation of the published document, as an org admin, a member,
staff and nobody: zero 5xx, zero responses outside their schema, zero undocumented status
codes. `ORZBOB_FUZZ_EXAMPLES` sets the examples per operation and mode (CI: a small number;
`make proof`: many more)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orzbob.accounts.models import Role
from orzbob.api.app import create_app
from orzbob.runtime import Runtime
from tests.conftest import OrgHandle
from tests.metering.polar_support import local_polar
from tests.polar.support import sync_catalog, use_billing


@schemathesis.check
def no_server_fault(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: object
) -> None:
    """No 500 ever. 502/503 are the payment provider's answers (documented per operation, which
    `status_code_conformance` checks); any other 5xx is a fault of ours."""
    if response.status_code >= 500 and response.status_code not in (502, 503):
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")


CHECKS = [
    no_server_fault,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def examples() -> int:
    return int(os.environ.get("ORZBOB_FUZZ_EXAMPLES", "15"))


@pytest.fixture
def billing_app(runtime: Runtime, tmp_path: Path) -> Iterator[FastAPI]:
    """The API with billing on, a webhook secret and a real local Polar server behind it."""
    with local_polar(tmp_path) as url:
        use_billing(runtime, url)
        sync_catalog(runtime)
        yield create_app(runtime)


@pytest.mark.parametrize("who", ["admin", "member", "staff", "nobody"])
def test_every_operation_keeps_its_documented_promises(
    billing_app: FastAPI,
    make_org: Callable[..., OrgHandle],
    staff_headers: Callable[[str], dict[str, str]],
    who: str,
) -> None:
    admin = make_org()
    headers = {
        "admin": admin.headers,
        "member": make_org(name="Acme", email="m@acme.test", role=Role.MEMBER).headers,
        "staff": staff_headers("engineering"),
        "nobody": {},
    }[who]
    schema = schemathesis.openapi.from_asgi("/openapi.json", billing_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples(),
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                # Nothing to negate (no parameters, no body): the positive run covers it.
                assert mode is GenerationMode.NEGATIVE, operation.label
