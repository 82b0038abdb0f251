"""Property-based fuzzing of a real API process against its own OpenAPI document.

Schemathesis generates valid and invalid requests for every operation; a response must
never be a server error and must match the document (status code, content type,
schema), and invalid input must be refused. Sized to run in about a minute.

The document is built in-process (``create_app`` connects to nothing until started)
so schemathesis can parametrize at collection time;
``test_served_document_is_the_one_fuzzed`` checks the running server serves exactly it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks

from services.api import openapi
from services.api.app import create_app
from services.api.typedefs import openapi_key
from shared.settings import Settings
from tests.harness.redis_server import RedisServer
from tests.harness.services import Topology
from tests.harness.wait import wait_until

EXAMPLES = 150
CHECKS = [not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.negative_data_rejection]
_APP = create_app(Settings.from_env({}))
DOCUMENT = openapi.for_app(_APP[openapi_key], _APP)
#: GET /events is an endless SSE stream: not something a request/response fuzzer can end.
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/events")


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """A real ``python -m services.api`` on a private Redis, default settings."""
    with RedisServer() as redis:
        topology = Topology(redis.url)
        try:
            topology.start("api")
            wait_until(lambda: _healthy(topology.api_url), timeout=15, what="API to answer")
            yield topology.api_url
        finally:
            topology.stop()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_served_document_is_the_one_fuzzed(api_url: str) -> None:
    assert requests.get(f"{api_url}/openapi.json", timeout=5).json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_document(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, checks=CHECKS)
