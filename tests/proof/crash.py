"""The crash proof: `orz server`, `orz worker` and `orz polar serve-local` as real
processes, instances driven through random lifecycles on the test clock, an API process or a
worker killed with SIGKILL at random points (mid-request, mid-flush) and restarted, the
database connections cut with pg_terminate_backend, and optionally the Polar link failing on
~30 % of requests (429, 5xx, latency, dropped connections). At the end the minutes implied by
the lifecycle, the ledger and what Polar stored must be equal per org and in total, every
external_id stored once, no record pending or dead, and every budget alert the final usage
calls for received exactly once (a copy is allowed only of a message a kill -9 interrupted
mid-send, and is counted in its own column).

    python -m tests.proof.crash --instances 200 --seed 7   # crash, chaos and 2 + 2 runs
    python -m tests.proof.crash --chaos 0.3 --apis 2 --workers 2   # one run

The seed is printed first so a failure can be replayed."""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from orzbob.accounts.service import account_service
from orzbob.alerts.local_sink import SinkServer
from orzbob.config import Settings
from orzbob.kit.migrate import upgrade
from orzbob.runtime import Runtime
from tests.proof.ledger import Totals, totals
from tests.proof.processes import (
    Proc,
    free_port,
    scratch_database,
    sends_in_flight,
    terminate_backends,
)

POLAR_TOKEN = "polar_oat_" + "t" * 40
SPEND_LIMIT = "0.03"  # dollars: reached in about 22 small-minutes on the usage-only plan
STEP = 60  # test-clock seconds per round
HEARTBEAT_TIMEOUT = 180
OK = {200, 201, 409}  # 409: a cap, a late heartbeat after the timeout, a stopped instance


@dataclass
class Size:
    instances: int = 200
    orgs: int = 20
    kills: int = 12
    cuts: int = 6
    chaos: float = 0.0
    apis: int = 1  # `orz server` processes (ORZBOB_RUN_JOBS=false)
    workers: int = 1  # `orz worker` processes


@dataclass
class Outcome:
    seed: int
    size: Size
    killed: list[str] = field(default_factory=list)  # which process, in order
    cuts: int = 0
    faults: int = 0
    resent: int = 0
    lost_requests: int = 0
    totals: Totals | None = None
    problems: list[str] = field(default_factory=list)


class Driver:
    def __init__(
        self,
        rng: random.Random,
        apis: list[tuple[Proc, str]],
        workers: list[Proc],
        staff: dict[str, str],
    ) -> None:
        self.rng, self.apis, self.workers, self.staff = rng, apis, workers, staff
        self.clients = [httpx.Client(base_url=url, timeout=60) for _, url in apis]
        self.live: dict[str, dict[str, Any]] = {}  # instance id -> {headers, silent_until}
        self.lost = 0  # requests whose answer a kill or a cut swallowed
        self.faulty = False  # inside a kill or cut window, a lost answer is expected

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        try:
            r = self.rng.choice(self.clients).request(method, path, headers=headers, **kw)
        except httpx.TransportError:
            if not self.faulty:
                raise
            self.lost += 1
            return None
        if r.status_code >= 500 and self.faulty:
            self.lost += 1  # a connection cut under a request: refused, nothing written
            return None
        assert r.status_code in OK, (method, path, r.status_code, r.text)
        return r

    def advance(self) -> None:
        self.call("POST", "/v1/test-clock/advance", self.staff, json={"seconds": STEP})

    def churn(self, orgs: list[dict[str, str]], new: int, step: int) -> None:
        for _ in range(new):
            headers = self.rng.choice(orgs)
            r = self.call("POST", "/v1/instances", headers, json={"tier": "small"})
            if r is not None and r.status_code == 201:
                self.live[r.json()["id"]] = {"headers": headers, "silent_until": -1}
        for iid, inst in list(self.live.items()):
            headers, roll = inst["headers"], self.rng.random()
            if inst["silent_until"] >= step:
                continue  # the agent went quiet: the heartbeat timeout must stop it
            if roll < 0.03:
                inst["silent_until"] = step + HEARTBEAT_TIMEOUT // STEP + 2
            elif roll < 0.09:
                self.call("POST", f"/v1/instances/{iid}/pause", headers)
            elif roll < 0.17:
                self.call("POST", f"/v1/instances/{iid}/resume", headers)
            elif roll < 0.21:
                self.call("DELETE", f"/v1/instances/{iid}", headers)
                del self.live[iid]
                continue
            r = self.call("POST", f"/v1/instances/{iid}/heartbeat", headers, json={"active": True})
            if r is not None and r.status_code == 409:
                del self.live[iid]  # stopped by the timeout or a cap

    def settle(self, headers: dict[str, str]) -> None:
        """Without pool pre-ping, the first statement on a connection the database dropped
        fails (500, nothing written) and the pool renews the rest: let each API process meet
        its dead connections before the churn goes on."""
        self.faulty = True
        for client in self.clients:
            good = 0
            for _ in range(20):
                try:
                    ok = client.get("/v1/instances", headers=headers).status_code == 200
                except httpx.TransportError:
                    ok = False
                self.lost += 0 if ok else 1
                good = good + 1 if ok else 0
                if good == 3:
                    break
        self.faulty = False

    def resync(self, orgs: list[dict[str, str]]) -> None:
        """After a fault the outcome of a lost request is unknown: ask the service."""
        self.settle(orgs[0])
        live: dict[str, dict[str, Any]] = {}
        for headers in orgs:
            for inst in self.clients[0].get("/v1/instances", headers=headers).json():
                if inst["state"] != "stopped":
                    old = self.live.get(inst["id"], {"silent_until": -1})
                    live[inst["id"]] = {"headers": headers, "silent_until": old["silent_until"]}
        self.live = live

    def kill_and_restart(self) -> str:
        """SIGKILL an API process or a worker at a random moment of an advance (the worker
        then runs the jobs: flush, sweeps, alerts), then start it again."""
        self.faulty = True
        victims: list[tuple[Proc, str | None]] = [*self.apis, *((w, None) for w in self.workers)]
        proc, url = self.rng.choice(victims)
        worker = threading.Thread(target=self.advance)
        worker.start()
        time.sleep(self.rng.uniform(0.0, 0.5))
        proc.kill9()
        worker.join()
        proc.start()
        if url is not None:
            proc.wait_healthy(url)
        self.faulty = False
        return proc.name

    def cut(self, db_url: str) -> None:
        self.faulty = True
        worker = threading.Thread(target=self.advance)
        worker.start()
        time.sleep(self.rng.uniform(0.0, 0.2))
        terminate_backends(db_url)
        worker.join()
        self.faulty = False


def seed_accounts(db_url: str, orgs: int) -> tuple[list[dict[str, str]], dict[str, str]]:
    settings = Settings(_env_file=None, database_url=db_url, env="test")  # type: ignore[call-arg]
    runtime = Runtime.create(settings)
    upgrade(runtime.engine)
    now = runtime.clock.now()
    headers = []
    with runtime.session() as s:
        for n in range(orgs):
            # Every other org pays per minute from the first one, under a small spend limit
            # (set through the API): budget alerts go out and the spend-limit cap pauses.
            plan = "usage-only" if n % 2 else "base-plus-usage"
            org = account_service.create_org(
                s, name=f"Proof {n}", billing_emails=[f"ops@proof{n}.test"],
                plan_id=plan, catalog=runtime.catalog, now=now,
            )  # fmt: skip
            _, raw = account_service.create_token(s, org_id=org.id, role="admin", name="p", now=now)
            headers.append({"Authorization": f"Bearer {raw}"})
        _, raw = account_service.create_token(s, org_id=None, role="engineering", name="s", now=now)
    runtime.engine.dispose()
    return headers, {"Authorization": f"Bearer {raw}"}


def add_chaos(polar: str, rate: float, seed: int) -> None:
    """About `rate` of the service's Polar calls fail: 429, 500, 502, 503, a dropped
    connection, or arrive late."""
    kinds: list[dict[str, Any]] = [
        {"kind": "status", "status": 429, "retry_after": 1},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 502},
        {"kind": "status", "status": 503},
        {"kind": "drop"},
        {"kind": "latency", "latency_ms": 300},
    ]
    each = 1 - (1 - rate) ** (1 / len(kinds))  # independent rules, `rate` in all
    for n, spec in enumerate(kinds):
        body = {**spec, "rate": round(each, 4), "seed": seed + n, "path_prefix": "/v1/"}
        httpx.post(f"{polar}/_control/faults", json=body, timeout=10).raise_for_status()


def run(size: Size, *, seed: int, admin_url: str, workdir: Path) -> Outcome:
    print(f"crash proof: seed {seed} ({size})", flush=True)
    rng = random.Random(seed)
    outcome = Outcome(seed=seed, size=size)
    with ExitStack() as stack:
        db_url = stack.enter_context(scratch_database(admin_url))
        mail = stack.enter_context(SinkServer())
        orgs, staff = seed_accounts(db_url, size.orgs)
        polar_port = free_port()
        polar_url = f"http://127.0.0.1:{polar_port}"
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "ORZBOB_ENV": "test",
            "ORZBOB_TEST_CLOCK": "true",
            "BILLING_ENABLED": "true",
            "POLAR_API_URL": polar_url,
            "POLAR_API_KEY": POLAR_TOKEN,
            "POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
            "POLAR_TIMEOUT_SECONDS": "3",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mail.port),
            "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
            "FLUSH_BATCH_SIZE": "10",  # small batches: many Polar calls to fail
            # A killed flusher's claim expires after this lease (real seconds).
            "FLUSH_LEASE_SECONDS": "15",
        }
        polar = Proc(
            "polar",
            ["polar", "serve-local", "--port", str(polar_port), "--db", str(workdir / "polar.db"),
             "--accept-future-timestamps"],
            env, workdir,
        )  # fmt: skip
        stack.callback(polar.stop)
        polar.start()
        polar.wait_healthy(polar_url, "/_control/health")
        apis: list[tuple[Proc, str]] = []
        for n in range(size.apis):
            port = free_port()
            api = Proc(
                f"api{n}",
                ["server", "--no-migrate", "--port", str(port)],
                {**env, "ORZBOB_RUN_JOBS": "false"},
                workdir,
            )
            stack.callback(api.stop)
            api.start()
            apis.append((api, f"http://127.0.0.1:{port}"))
        workers = []
        for n in range(size.workers):
            worker = Proc(f"worker{n}", ["worker"], {**env, "ORZBOB_WORKER_ID": f"w{n}"}, workdir)
            stack.callback(worker.stop)
            worker.start()
            workers.append(worker)
        for api, url in apis:
            api.wait_healthy(url)
        if size.chaos:
            add_chaos(polar_url, size.chaos, seed)
        driver = Driver(rng, apis, workers, staff)
        for headers in orgs[1::2]:
            driver.call("PUT", "/v1/billing/spend-limit", headers, json={"amount": SPEND_LIMIT})
        steps = max(10, size.instances // 5)
        per_step = [
            size.instances // steps + (1 if i < size.instances % steps else 0) for i in range(steps)
        ]
        kill_at = set(rng.sample(range(1, steps), min(size.kills, steps - 1)))
        cut_at = set(rng.sample(range(1, steps), min(size.cuts, steps - 1)))
        for step in range(steps):
            driver.churn(orgs, per_step[step], step)
            if step in cut_at:
                driver.cut(db_url)  # advances the clock while the connections go
                outcome.cuts += 1
            if step in kill_at:
                outcome.killed.append(driver.kill_and_restart())  # advances too
            if step in cut_at | kill_at:
                driver.resync(orgs)
            else:
                driver.advance()
        driver.resync(orgs)
        for iid, inst in driver.live.items():
            driver.call("DELETE", f"/v1/instances/{iid}", inst["headers"])
        killed = [log for p in [*(a for a, _ in apis), *workers] for log in p.killed]
        outcome.totals = drain(driver, db_url, polar_url, mail, killed)
        outcome.lost_requests = driver.lost
        with httpx.Client(base_url=polar_url + "/_control", timeout=30) as c:
            outcome.faults = sum(rule["fired"] for rule in c.get("/faults").json()["items"])
            outcome.resent = c.get("/stats").json()["duplicates"]
        outcome.problems = outcome.totals.problems()
        for proc in [polar, *(a for a, _ in apis), *workers]:
            if "deadlock detected" in proc.all_logs():
                outcome.problems.append(f"{proc.name}: a deadlock was reported")
    return outcome


def drain(
    driver: Driver,
    db_url: str,
    polar_url: str,
    mail: SinkServer,
    killed: list[Path],
    patience: float = 420.0,
) -> Totals:
    """Advance the clock until every record has reached Polar, or give up and report. A
    batch claimed by a killed process waits for its lease to run out (real time: the lease
    guards against a live process, which the test clock cannot speak for)."""
    deadline = time.monotonic() + patience

    def now() -> Totals:
        ids = [str(m.message["Message-ID"]) for m in mail.handler.received()]
        return totals(db_url, polar_url, ids, sends_in_flight(killed))

    result = now()
    while not result.settled() and time.monotonic() < deadline:
        driver.advance()
        time.sleep(1.0)
        result = now()
    return result


def table(outcomes: list[Outcome]) -> str:
    head = (
        "| run | seed | instances | kills (API/worker) | DB cuts | Polar faults "
        "| resent (deduplicated) | lifecycle min | ledger min | Polar min | alerts expected "
        "| alerts delivered | duplicates: killed mid-send | duplicates: other | differences |"
    )
    lines = [head, "|" + "---|" * 15]
    for o in outcomes:
        t = o.totals
        assert t is not None
        name = f"chaos {o.size.chaos:.0%}" if o.size.chaos else "crash"
        name += f", {o.size.apis} API + {o.size.workers} worker processes"
        apis = sum(1 for k in o.killed if k.startswith("api"))
        kills = f"{apis}/{len(o.killed) - apis}"
        lines.append(
            f"| {name} | {o.seed} | {t.instances} | {kills} | {o.cuts} | {o.faults} "
            f"| {o.resent} | {t.lifecycle} | {t.ledger} | {t.polar} | {t.alerts_expected} "
            f"| {t.alerts_delivered} | {t.resent_in_flight} | {t.resent_other} "
            f"| {len(o.problems)} |"
        )
    return "\n".join(lines)


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{stamp}, {os.cpu_count()} CPUs (nproc), {memory:.1f} GiB memory"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--cuts", type=int, default=6)
    parser.add_argument("--chaos", type=float, default=None, help="One run at this fault rate.")
    parser.add_argument("--apis", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    base = Size(args.instances, args.orgs, args.kills, args.cuts, 0.0, args.apis, args.workers)
    # Without --chaos: the crash run, the same with 30 % of Polar calls failing, and two API
    # processes with two workers on the one database.
    sizes = (
        [base, replace(base, chaos=0.3), replace(base, apis=2, workers=2)]
        if args.chaos is None
        else [replace(base, chaos=args.chaos)]
    )
    outcomes = []
    started = time.monotonic()
    for size in sizes:
        with TemporaryDirectory(prefix="orzbob-proof-") as tmp:
            outcomes.append(run(size, seed=seed, admin_url=args.admin_url, workdir=Path(tmp)))
    print()
    print(f"Proof run of {machine()}; {time.monotonic() - started:.0f} s wall time")
    print(table(outcomes))
    problems = [f"seed {o.seed}: {p}" for o in outcomes for p in o.problems]
    for problem in problems:
        print("PROBLEM:", problem)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
