"""`ragline mcp serve` over stdio, driven by the official MCP SDK client (a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path


QUESTION = "How often should the impeller seal be replaced?"


def test_mcp_stdio_search_and_answer(mini_registry: Path, mini_flow: Path, tmp_path: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    (tmp_path / "params.yaml").write_text(
        "serve:\n  request_log: {path: logs/requests.sqlite}\n", encoding="utf-8")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ragline.pipelines.cli", "mcp", "serve", str(mini_flow), "--index-root", str(mini_registry)],
        env={**os.environ}, cwd=str(tmp_path))

    async def drive() -> tuple:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                hits = await session.call_tool("search", {"query": "water the plants in spring", "k": 3,
                                                          "mode": "hybrid", "filters": {"source": "garden/*"}})
                dense = await session.call_tool("search", {"query": "pump", "k": 2, "mode": "dense"})
                ans = await session.call_tool("answer", {"question": QUESTION})
                bad = await session.call_tool("search", {"query": "bees", "filters": {"colour": "red"}})
                return tools, hits, dense, ans, bad

    tools, hits, dense, ans, bad = asyncio.run(asyncio.wait_for(drive(), 120))
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == {"search", "answer"}
    assert set(by_name["search"].input_schema["properties"]) == {"query", "k", "mode", "filters"}
    assert by_name["search"].input_schema["required"] == ["query"]
    rows = hits.structured_content["result"]
    assert not hits.is_error and len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    assert all(r["source"].startswith("garden/") for r in rows) and rows[0]["source"] == "garden/roses.md"
    assert rows[0]["text"].startswith("Feed roses with compost in spring. Water them deeply")
    assert {"chunk_id", "doc_id", "page", "char_start", "char_end", "text", "score"} <= set(rows[0])
    assert len(dense.structured_content["result"]) == 2
    a = ans.structured_content
    assert not ans.is_error
    assert a["answer"] == "Replace the impeller seal every two years or after 500 hours of running. [1]"
    assert a["citations"][0]["source"] == "manuals/pump.pdf" and a["citations"][0]["page"] == 2
    assert a["indexes"] == [{"node": "retrieve", "ref": "mini@latest", "name": "mini", "version": "v0001"}]
    assert a["tokens"]["prompt_tokens"] > 0 and a["tokens"]["models"] == ["extractive"]
    assert bad.is_error and "unknown filter key(s) 'colour'; allowed: source" in bad.content[0].text
    # the answer was written to the request log like a /score request
    import sqlite3

    conn = sqlite3.connect(tmp_path / "logs" / "requests.sqlite")
    rows = conn.execute("SELECT request_id, route, question FROM requests").fetchall()
    conn.close()
    assert rows == [(a["request_id"], "mcp:answer", QUESTION)]
    assert json.loads(ans.content[0].text)["request_id"] == a["request_id"]


def test_mcp_streamable_http_needs_the_key(mini_registry: Path, mini_flow: Path) -> None:
    import httpx
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from ragline.runner.engine import FlowRunner
    from ragline.runner.mcp_server import build_mcp_server, http_app
    from ragline.runner.spec import load_flow
    from tests.runner.helpers import serving

    runner = FlowRunner(load_flow(mini_flow), mini_registry)
    server = build_mcp_server(runner)

    async def drive(url: str) -> object:
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer mcp-key"}, timeout=30) as http:
            async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await session.call_tool("search", {"query": "impeller seal", "k": 1})

    with serving(http_app(server, "mcp-key"), lifespan="on") as url:
        r = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401 and r.json() == {"detail": "missing or wrong API key"}
        result = asyncio.run(asyncio.wait_for(drive(url), 60))
    rows = result.structured_content["result"]
    assert [r["source"] for r in rows] == ["manuals/pump.pdf"] and "impeller seal" in rows[0]["text"]
