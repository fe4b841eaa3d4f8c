"""The Kubernetes manifests, the container definition and the set-up scripts under deploy/
and hack/, parsed and checked against what the code expects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from orzbob.config import Settings
from orzbob.jobs import FINAL_FLUSH_MAX_BATCHES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
Doc = dict[str, Any]


def documents() -> list[Doc]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def find(kind: str, name: str) -> Doc:
    [doc] = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(deployment: Doc) -> Doc:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def test_every_manifest_is_in_the_namespace_and_the_kustomization() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(files)
    for doc in documents():
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"]["namespace"] == "orzbob-system", doc["metadata"]["name"]


def test_api_replicas_run_no_jobs_and_are_probed() -> None:
    api = find("Deployment", "orzbob-api")
    c = container(api)
    assert api["spec"]["replicas"] >= 2
    assert env_of(c)["ORZBOB_RUN_JOBS"]["value"] == "false"
    assert c["command"][:2] == ["orz", "server"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = c["readinessProbe"]["httpGet"]["port"]
    assert port in {p["name"] for p in c["ports"]}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])


def test_workers_run_orz_worker_with_time_for_the_final_flush() -> None:
    worker = find("Deployment", "orzbob-worker")
    c = container(worker)
    assert c["command"] == ["orz", "worker"]
    assert "ORZBOB_RUN_JOBS" not in env_of(c)  # jobs on, the default
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    config = find("ConfigMap", "orzbob-config")["data"]
    worst = FINAL_FLUSH_MAX_BATCHES * float(config["POLAR_TIMEOUT_SECONDS"])
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > worst


def test_a_worker_stuck_in_a_job_is_restarted_by_its_liveness_probe() -> None:
    """`orz worker` answers /healthz on its metrics port (ORZBOB_METRICS_PORT), 503 once a job
    has run longer than ORZBOB_JOB_STUCK_SECONDS; the probe must reach it there, and give
    up only after the limit has passed for a while, never during a long but healthy job."""
    c = container(find("Deployment", "orzbob-worker"))
    probe = c["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert int(env_of(c)["ORZBOB_METRICS_PORT"]["value"]) == ports[probe["httpGet"]["port"]]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


@pytest.mark.parametrize("name", ["orzbob-api", "orzbob-worker"])
def test_pods_migrate_first_and_run_as_non_root(name: str) -> None:
    spec = find("Deployment", name)["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    assert init["command"] == ["orz", "db", "upgrade"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for c in [init, *spec["containers"]]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name", ["orzbob-api", "orzbob-worker"])
def test_secrets_come_from_the_templates_by_secret_key_ref(name: str) -> None:
    secrets = {
        d["metadata"]["name"]: set(d["stringData"]) for d in documents() if d["kind"] == "Secret"
    }
    assert secrets["polar-credentials"] == {
        "POLAR_API_KEY",
        "POLAR_WEBHOOK_SECRET",
        "POLAR_ORGANIZATION_ID",
    }
    config = find("ConfigMap", "orzbob-config")["data"]
    spec = find("Deployment", name)["spec"]["template"]["spec"]
    for c in [*spec["initContainers"], *spec["containers"]]:
        env = env_of(c)
        for var in ("POLAR_API_KEY", "POLAR_WEBHOOK_SECRET", "POLAR_ORGANIZATION_ID"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("polar-credentials", var)
        for e in env.values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]
        assert not {"POLAR_API_KEY", "POLAR_WEBHOOK_SECRET", "SMTP_PASSWORD"} & set(config)


def test_the_config_map_is_settings_the_service_accepts() -> None:
    data = find("ConfigMap", "orzbob-config")["data"]
    settings = Settings(_env_file=None, **{k: v for k, v in data.items()})  # type: ignore[call-arg, arg-type]
    assert settings.env == "production" and settings.billing_enabled
    assert settings.polar_api_url.startswith("https://")


def test_the_service_selects_the_api_pods() -> None:
    svc = find("Service", "orzbob-api")
    labels = find("Deployment", "orzbob-api")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_the_image_is_multi_stage_non_root_without_test_tools_or_local_polar() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, re.M)
    assert len(stages) >= 2
    final = text.split(f"AS {stages[-1]}", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "[test]" not in text and "pytest" not in text
    assert '! /opt/orzbob/bin/python -c "import polar_local"' in text
    assert 'include = ["orzbob*"]' in (ROOT / "pyproject.toml").read_text()
    assert "COPY --from=build /opt/orzbob /opt/orzbob" in final
    assert not re.search(r"^COPY\s+(tests|src)\b", final, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' in final
    assert "orz db upgrade" in (DEPLOY / "docker-entrypoint.sh").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", ".venv", ".git"} <= set(ignored)


def test_the_service_runs_without_the_local_polar_server() -> None:
    """What the image removes is never imported by the API, the jobs or `orz --help`."""
    code = (
        "import sys; sys.modules['polar_local'] = None\n"
        "import orzbob.api.app, orzbob.jobs, orzbob.cli.main\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(orzbob.cli.main.app, ['polar', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _create_secrets(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "create-secrets.sh")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_create_secrets_fills_the_templates_from_the_environment() -> None:
    org = str(uuid.uuid4())
    env = {
        "POLAR_API_KEY": "polar_oat_" + "a1" * 20,
        "POLAR_WEBHOOK_SECRET": 'whsec_"quoted"\\slash',
        "POLAR_PROJECT_ID": org,
        "DATABASE_URL": "postgresql+psycopg://u:p@db:5432/orzbob",
    }
    result = _create_secrets(env)
    assert result.returncode == 0, result.stderr
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout)}
    polar = secrets["polar-credentials"]
    assert polar["metadata"]["namespace"] == "orzbob-system"
    assert polar["stringData"] == {
        "POLAR_API_KEY": env["POLAR_API_KEY"],
        "POLAR_WEBHOOK_SECRET": env["POLAR_WEBHOOK_SECRET"],
        "POLAR_ORGANIZATION_ID": org,
    }
    assert secrets["orzbob-app"]["stringData"]["DATABASE_URL"] == env["DATABASE_URL"]


def test_create_secrets_refuses_missing_and_placeholder_values() -> None:
    result = _create_secrets({"POLAR_API_KEY": "REPLACE_WITH_polar_oat_TOKEN"})
    assert result.returncode == 1 and result.stdout == ""
    assert "POLAR_API_KEY still holds a placeholder" in result.stderr
    assert "POLAR_WEBHOOK_SECRET is not set" in result.stderr


def test_setup_polar_dry_runs_then_syncs(tmp_path: Path) -> None:
    from tests.metering.polar_support import TOKEN, local_polar

    with local_polar(tmp_path) as url:
        env = {
            "PATH": os.environ["PATH"],
            "ORZ": str(Path(sys.executable).parent / "orz"),
            "POLAR_API_URL": url,
            "POLAR_API_KEY": TOKEN,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'orzbob.db'}",
        }
        script = str(ROOT / "hack" / "setup-polar.sh")
        declined = subprocess.run(
            ["bash", script], env=env, input="n\n", capture_output=True, text=True, timeout=120
        )
        assert declined.returncode == 0, declined.stderr
        assert "would create" in declined.stdout and "nothing changed" in declined.stdout
        done = subprocess.run(
            ["bash", script, "--yes"], env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    first, _, second = done.stdout.partition("a second dry run shows no changes")
    assert "would create" in first and "\ncreate" in first
    assert "no changes" in second
