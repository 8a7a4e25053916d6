"""The deployment examples in deploy/ (not run here: no Docker engine or cluster on this machine)
at least parse, pass the gateway's own config loader, and agree with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatgate.config import Config, from_dict, load

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# what the examples read from the environment, with placeholder values
ENV = {
    "CHATGATE_MASTER_KEY": "mk-placeholder",
    "POSTGRES_PASSWORD": "pw-placeholder",
    "OPENAI_API_KEY": "sk-placeholder",
}


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            out[(doc["kind"], doc.get("metadata", {}).get("name", ""))] = doc
    return out


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path), f"{path} holds no document"


def _check_cluster_config(cfg: Config) -> None:
    assert cfg.listen.host == "0.0.0.0" and cfg.listen.port == 8080
    assert cfg.database_url.startswith("postgresql://")
    assert "pw-placeholder" in cfg.database_url  # the password comes from the environment
    assert cfg.redis_url is not None and cfg.redis_url.startswith("redis://")
    assert cfg.redis_on_failure in ("open", "closed")
    assert cfg.master_key == "mk-placeholder"
    assert cfg.auto_migrate is True
    assert cfg.usage.spool_dir == "/var/lib/chatgate/spool"


def test_compose_config_example_passes_the_config_loader() -> None:
    _check_cluster_config(load(DEPLOY / "chatgate.cluster.yaml", ENV))


def test_kubernetes_configmap_passes_the_config_loader(tmp_path: Path) -> None:
    text = _k8s()[("ConfigMap", "chatgate-config")]["data"]["chatgate.yaml"]
    path = tmp_path / "chatgate.yaml"
    path.write_text(text)
    cfg = load(path, ENV)
    _check_cluster_config(cfg)
    assert cfg.sandbox is False  # production: no emulated answers


def test_configs_refuse_to_start_without_their_secrets() -> None:
    """An unset password must be an error, never a silent fallback to a local SQLite file."""
    from chatgate.config import ConfigError

    env = {k: v for k, v in ENV.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(ConfigError, match="POSTGRES_PASSWORD"):
        load(DEPLOY / "chatgate.cluster.yaml", env)


def test_kubernetes_deployment_probes_and_grace_periods() -> None:
    k8s = _k8s()
    text = k8s[("ConfigMap", "chatgate-config")]["data"]["chatgate.yaml"]
    cfg = from_dict(yaml.safe_load(text), ENV)
    dep = k8s[("Deployment", "chatgate")]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == cfg.listen.port
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + cfg.shutdown_grace_seconds
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert Path(env["CHATGATE_CONFIG"]).parent == Path(mounts["config"])
    assert mounts["spool"] == cfg.usage.spool_dir
    secret = k8s[("Secret", "chatgate-secrets")]
    assert container["envFrom"][0]["secretRef"]["name"] == "chatgate-secrets"
    # the Secret holds the variables the config reads, as placeholders only
    for name in re.findall(r"\$\{(\w+)", text):
        assert name in secret["stringData"], name
    assert all(v == "" or v.startswith("REPLACE") for v in secret["stringData"].values())
    service = k8s[("Service", "chatgate")]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_compose_runs_three_replicas_behind_the_load_balancer() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    gateways = [name for name in services if name.startswith("gateway")]
    assert len(gateways) == 3
    nginx = (DEPLOY / "nginx.conf").read_text()
    cfg = load(DEPLOY / "chatgate.cluster.yaml", ENV)
    for name in gateways:
        svc = services[name]
        assert f"server {name}:{cfg.listen.port}" in nginx
        assert "./chatgate.cluster.yaml:/etc/chatgate/chatgate.yaml:ro" in svc["volumes"]
        assert svc["environment"]["CHATGATE_CONFIG"] == "/etc/chatgate/chatgate.yaml"
        assert int(svc["stop_grace_period"].rstrip("s")) > cfg.shutdown_grace_seconds
        assert set(svc["depends_on"]) == {"postgres", "redis"}
    assert "proxy_buffering off" in nginx  # streams pass chunk by chunk
    assert {"postgres", "redis"} <= set(services)


def test_dockerfile_runs_the_gateway_as_a_non_root_user_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and not user.group(1).startswith(("root", "0"))
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/ready", text, re.M)
    assert '"chatgate", "serve"' in text


def test_readme_says_the_examples_are_not_exercised_here() -> None:
    assert "not exercise" in (DEPLOY / "README.md").read_text()
