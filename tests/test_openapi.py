"""The OpenAPI description, checked against the live app by schemathesis."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from store.documents import Role
from tests.conftest import Api
from web.app import is_web_route

CONFIG = Path(__file__).parent / "schemathesis.toml"


async def test_the_description_lists_every_route_of_the_app(api: Api) -> None:
    spec = await (await api.get("/api/v1/openapi.json", None)).json()
    described = {
        (m.upper(), p) for p, item in spec["paths"].items() for m in item if m != "parameters"
    }
    routes = {
        (route.method, route.resource.canonical)
        for route in api.http.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not is_web_route(api.http.app, route)  # the web interface's pages: not the API
    }
    assert described == routes


@pytest.mark.slow
@pytest.mark.parametrize("role", list(Role))
async def test_schemathesis_finds_no_server_error_or_schema_violation(
    api: Api, role: Role, tmp_path: Path
) -> None:
    server = api.http.server
    base = f"http://127.0.0.1:{server.port}"
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a dev dependency (make install)"
    process = await asyncio.create_subprocess_exec(
        st, "--config-file", str(CONFIG), "run", f"{base}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {api.tokens[role]}",
        "--phases", "examples,coverage,fuzzing",
        "--workers", "1",  # CPython 3.11 ast.parse is not thread-safe (schemathesis workers)
        "--seed", "20261124", "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    out, _ = await process.communicate()
    report = out.decode()
    assert process.returncode == 0, report[-6000:]
    assert "generated" in report  # it really ran cases
