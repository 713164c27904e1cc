"""Property-based tests of the whole API from its own OpenAPI description (schemathesis).

The daemon runs as a real child process (`lezerprintd serve --printer sim`), so the
generated requests travel over a real socket; the caller is an ADMIN signed in with an API key.
For every operation, valid and invalid data: no answer is a 5xx, every answer is in the
envelope, its status is documented and its body matches the documented schema, and invalid
data is refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

from tests.conftest import clean_environment, free_port

PASSWORD = "schema-test-password"
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


@dataclass
class Daemon:
    url: str
    key: str
    process: subprocess.Popen[bytes]


def call(url: str, body: object = None, headers: dict[str, str] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer: dict[str, object] = json.load(reply)
        return answer


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    scratch = tmp_path_factory.mktemp("schema")
    config = scratch / "config.toml"
    config.write_text("[sim]\nspeedup = 100\n")
    command = [sys.executable, "-m", "lezerprintd"]
    env = clean_environment()
    subprocess.run(
        [
            *command,
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
            "--data-dir",
            str(scratch / "data"),
            "--config",
            str(config),
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        env=env,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            *command,
            "serve",
            "--mdns",
            "off",
            # The camera's stream never ends, which a schema fuzzer would wait on for ever;
            # test_camera.py covers the camera, and here its routes answer 404.
            "--camera",
            "off",
            "--printer",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(scratch / "data"),
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                state = call(f"{url}/api/status")["data"]["printer"]["state"]  # type: ignore[index]
                if state == "operational":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)
        signed_in = call(f"{url}/api/auth/login", {"username": "admin", "password": PASSWORD})
        token = signed_in["data"]["tokens"]["accessToken"]  # type: ignore[index]
        created = call(
            f"{url}/api/auth/api-keys",
            {"name": "schemathesis"},
            {"Authorization": f"Bearer {token}"},
        )
        yield Daemon(url, created["data"]["key"], process)  # type: ignore[index]
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert b"Traceback" not in errors, errors.decode(errors="replace")[-3000:]


def test_no_5xx_and_every_answer_documented_and_in_the_envelope(daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(f"{daemon.url}/api/openapi.json")
    checks = CHECKS.get_by_names(list(CHECK_NAMES))
    headers = {"X-Api-Key": daemon.key}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:
        has_inputs = bool(list(operation.iter_parameters())) or bool(list(operation.body))
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_inputs else [])
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy, _=st.just(None))
            def exercise(case: schemathesis.Case, _: None) -> None:
                response = case.call(base_url=daemon.url, headers=headers, timeout=30)
                case.validate_response(response, checks=checks, headers=headers)
                if response.headers.get("Content-Type") == "application/octet-stream":
                    return  # a download: the file's own bytes, documented as such
                answer = response.json()
                assert isinstance(answer.get("success"), bool)
                assert ("data" in answer) is answer["success"]
                assert ("error" in answer) is not answer["success"]

            exercise()
    assert daemon.process.poll() is None, "the daemon died"
