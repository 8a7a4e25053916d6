"""The cluster-mode keys of chatgate.yaml: defaults, and errors that name the key (and never
echo a password from the URL)."""

from __future__ import annotations

import pytest

from chatgate.cluster.link import where
from chatgate.config import ConfigError, from_dict


def test_defaults_keep_redis_off() -> None:
    cfg = from_dict({}, {})
    assert cfg.redis_url is None
    assert cfg.redis_prefix == "chatgate:"
    assert cfg.redis_on_failure == "open"
    assert cfg.redis_lease_seconds >= 900  # longer than the default retry deadline


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"redis_url": "http://user:s3cret@host:6379"},
            "config: redis_url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH, "
            "got http:...",
        ),
        ({"redis_on_failure": "maybe"}, "config: redis_on_failure: Invalid enum value 'maybe'"),
        ({"redis_prefix": ""}, "config: redis_prefix: must not be empty"),
        ({"redis_lease_seconds": 30}, "config: redis_lease_seconds: must be at least 60"),
    ],
)
def test_errors_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(raw, {})
    assert str(e.value).startswith(message)
    assert "s3cret" not in str(e.value)


def test_the_url_from_the_environment_and_where_it_points() -> None:
    cfg = from_dict(
        {"redis_url": "${REDIS_URL}", "redis_on_failure": "closed"},
        {"REDIS_URL": "redis://:pw@10.0.0.5:6380/2"},
    )
    assert cfg.redis_url == "redis://:pw@10.0.0.5:6380/2"
    assert where(cfg.redis_url) == "10.0.0.5:6380"  # what logs show: never the password
    assert where("unix:///run/redis.sock") == "/run/redis.sock"
