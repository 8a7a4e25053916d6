"""The same contract through the official `openai` npm package, when Node.js is present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import Server

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("Node.js/npm not installed: the Node SDK check needs them")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            pytest.fail(f"npm install openai failed:\n{r.stderr[-2000:]}")
    return NODE_DIR


@pytest.mark.node
def test_node_openai_sdk(node_sdk: Path, server: Server, api_key: str) -> None:
    env = dict(os.environ, CG_KEY=api_key, CG_BASE_URL=server.url + "/chat")
    r = subprocess.run(
        ["node", "check.mjs"], cwd=node_sdk, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["text"]["model"] == "gpt-5.1" and out["text"]["content"]
    assert out["text"]["id"].startswith("chatcmpl-")
    assert out["text"]["finish"] == "stop" and out["text"]["usage"]["total_tokens"] > 0
    assert out["stream"]["ids"] == 1 and out["stream"]["text"]
    assert out["stream"]["finish"] == "stop" and out["stream"]["usage"]["total_tokens"] > 0
    assert out["tool"]["finish"] == "tool_calls" and out["tool"]["name"] == "get_weather"
    assert "city" in json.loads(out["tool"]["args"])
    assert out["error"]["status"] == 400 and out["error"]["param"] == "messages"
    assert out["error"]["cls"] == "BadRequestError"
    assert out["models"] == 18
