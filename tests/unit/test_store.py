"""Schema migrations and the usage writer's insert path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from chatgate.store import SCHEMA_HEAD, Store, UsageRow


def test_schema_head_constant_matches_the_migrations() -> None:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(__file__).parents[2] / "src/chatgate/store/migrations")
    )
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_upgrade_from_the_first_schema_keeps_data(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(__file__).parents[2] / "src/chatgate/store/migrations")
    )
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute(
        "INSERT INTO api_keys (id, name, key_hash, key_prefix, created) "
        "VALUES ('key_old', 'old', 'h', 'sk-cg-xx', 1.0)"
    )
    con.commit()
    con.close()
    store.migrate()
    assert store.schema_version() == SCHEMA_HEAD
    rec = store.keys.get("key_old")
    assert rec is not None and rec.enabled and rec.budget_period == "total"
    store.migrate()  # idempotent, and without importing Alembic when up to date


def test_insert_usage_round_trip(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'u.db'}")
    store.migrate()
    row = UsageRow(
        request_id="r1",
        created=1.0,
        key_id="k",
        model="m",
        provider="p",
        upstream_model="u",
        stream=True,
        status=200,
        error_type=None,
        prompt_tokens=1,
        completion_tokens=2,
        total_tokens=3,
        cached_tokens=0,
        reasoning_tokens=None,
        latency_ms=1.5,
        ttft_ms=None,
        upstream_request_id=None,
        owner="o",
        cost_micros=7,
    )
    assert store.insert_usage([row]) == 1
    assert store.spent_since("k", 0) == 7 and store.count_usage() == 1
