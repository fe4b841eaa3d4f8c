import json
import os
import subprocess

from fastapi.testclient import TestClient

from orzbob.runtime import Runtime
from tests.orz_runner import run_orz


def orz(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return run_orz([*args], env=env)


def test_org_create_prints_id_and_token_that_works(
    client: TestClient, runtime: Runtime, db_url: str
) -> None:
    proc = orz(
        "admin",
        "org",
        "create",
        "--name",
        "Acme",
        "--email",
        "ops@acme.test",
        "--json",
        db_url=db_url,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"org_id", "token"}
    r = client.get("/v1/orgs/me", headers={"Authorization": f"Bearer {out['token']}"})
    assert r.status_code == 200 and r.json()["id"] == out["org_id"]

    proc = orz(
        "admin",
        "token",
        "create",
        "--org",
        out["org_id"],
        "--role",
        "member",
        "--json",
        db_url=db_url,
    )
    member = json.loads(proc.stdout)["token"]
    assert (
        client.get("/v1/orgs/me", headers={"Authorization": f"Bearer {member}"}).json()["name"]
        == "Acme"
    )

    proc = orz("admin", "staff-token", "create", "--role", "support_l2", "--json", db_url=db_url)
    staff = json.loads(proc.stdout)["token"]
    r = client.get(f"/v1/admin/orgs/{out['org_id']}", headers={"Authorization": f"Bearer {staff}"})
    assert r.status_code == 200


def test_cli_bad_input_is_one_clear_line(runtime: Runtime, db_url: str) -> None:
    proc = orz(
        "admin",
        "org",
        "create",
        "--name",
        "A",
        "--email",
        "ops@a.test",
        "--plan",
        "gold",
        db_url=db_url,
    )
    assert proc.returncode == 1 and "Unknown plan 'gold'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = orz("admin", "staff-token", "create", "--role", "admin", db_url=db_url)
    assert proc.returncode == 1 and "support_l1" in proc.stderr
    proc = orz("admin", "token", "create", "--org", "nope", db_url=db_url)
    assert proc.returncode == 1 and "not a valid organization id" in proc.stderr
    proc = orz("admin", "org", "create", "--name", "A", "--email", "bad", db_url=db_url)
    assert proc.returncode == 1 and "e-mail" in proc.stderr
