"""The chatgate command, as an operator uses it (click's runner, a temporary database)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from chatgate.cli import main
from chatgate.store import Store, UsageRow


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"database_url: sqlite:///{tmp_path / 'c.db'}\n")
    return cfg


def test_keys_lifecycle(tmp_path: Path) -> None:
    cfg = str(_config(tmp_path))
    run = CliRunner().invoke
    r = run(
        main,
        [
            "keys",
            "create",
            "--name",
            "ci",
            "--models",
            "gpt-5*,claude-4.5",
            "--budget-usd",
            "2.5",
            "--budget-period",
            "daily",
            "--rpm",
            "60",
            "--owner",
            "platform",
            "--config",
            cfg,
        ],
    )
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("sk-cg-")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    (rec,) = asyncio.run(store.keys.list())
    assert rec.models == ("gpt-5*", "claude-4.5") and rec.budget_micros == 2_500_000
    assert rec.rpm == 60 and rec.owner == "platform" and rec.budget_period == "daily"
    listing = run(main, ["keys", "list", "--config", cfg]).output
    assert rec.id in listing and key not in listing and "platform" in listing
    r = run(main, ["keys", "update", rec.id, "--tpm", "1000", "--disable", "--config", cfg])
    changed = asyncio.run(store.keys.get(rec.id))
    assert r.exit_code == 0 and changed is not None and changed.tpm == 1000
    assert changed.enabled is False
    r = run(main, ["keys", "rotate", rec.id, "--config", cfg])
    assert r.exit_code == 0 and r.stdout.strip() != key
    assert run(main, ["keys", "revoke", rec.id, "--config", cfg]).exit_code == 0
    assert run(main, ["keys", "revoke", rec.id, "--config", cfg]).exit_code == 1


def test_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main,
        ["keys", "create", "--name", "x", "--models", "gpt-9", "--config", str(_config(tmp_path))],
    )
    assert r.exit_code == 2 and "unknown model(s): gpt-9" in r.output


def test_usage_report_formats(tmp_path: Path) -> None:
    cfg = str(_config(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    asyncio.run(store.migrate())
    base = dict(
        created=1_764_547_200.0,
        provider="openai",
        upstream_model="gpt-5.1",
        stream=False,
        error_type=None,
        cached_tokens=0,
        reasoning_tokens=0,
        latency_ms=10.0,
        ttft_ms=None,
        upstream_request_id=None,
    )
    insert = store.insert_usage(
        [
            UsageRow(
                request_id=f"r{i}",
                key_id="key_a",
                model="gpt-5.1",
                status=200,
                prompt_tokens=10,
                completion_tokens=5,
                total_tokens=15,
                owner="t",
                cost_micros=1234,
                **base,
            )  # type: ignore[arg-type]
            for i in range(3)
        ]
    )
    asyncio.run(insert)
    run = CliRunner().invoke
    table = run(main, ["usage", "--by", "model,day", "--config", cfg]).output
    assert "gpt-5.1" in table and "2025-12-01" in table and "0.003702" in table
    rows = json.loads(
        run(main, ["usage", "--by", "key", "--format", "json", "--config", cfg]).output
    )
    assert rows == [rows[0]] and rows[0]["key"] == "key_a" and rows[0]["requests"] == 3
    csv = run(main, ["usage", "--format", "csv", "--config", cfg]).output
    assert csv.splitlines()[0].startswith("model,requests,errors")
    bad = run(main, ["usage", "--by", "colour", "--config", cfg])
    assert bad.exit_code == 2


def test_config_errors_are_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {port: nope}\n")
    r = CliRunner().invoke(main, ["check-config", "--config", str(bad)])
    assert r.exit_code == 2
    assert "config error" in r.output and "listen.port" in r.output
    assert "Traceback" not in r.output


def test_help_lists_every_command() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for cmd in ("serve", "keys", "usage", "models", "sandbox", "check-config"):
        assert cmd in out
    keys_help = CliRunner().invoke(main, ["keys", "--help"]).output
    for cmd in ("create", "list", "update", "rotate", "revoke"):
        assert cmd in keys_help
