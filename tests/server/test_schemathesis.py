"""Property-based tests from the server's own OpenAPI document (schemathesis, through its Python
API and Hypothesis): valid and invalid requests to every operation never get a 5xx, and the
answers match the documented responses."""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.slow

# Not "positive data acceptance": a schema-valid request may still be a 400 (prompt + max_tokens
# beyond the context, token ids outside the vocabulary), which the schema cannot express.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15  # per operation and mode: 8 operations × 2 modes × 15 ≈ 240 requests


@pytest.fixture(scope="module")
def operations(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors(operations, server, mode):
    headers = {"Authorization": f"Bearer {server.api_key}"}
    labels = sorted(op.label for op in operations)
    assert "POST /v1/completions" in labels and "POST /v1/chat/completions" in labels

    tested = []
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers=headers, timeout=60, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # nothing to get wrong (GET /health has no parameters)
            assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET"
            continue
        tested.append(operation.label)
    assert {"POST /v1/completions", "POST /v1/chat/completions", "POST /tokenize"} <= set(tested)
    assert httpx.get(server.url + "/health").status_code == 200
