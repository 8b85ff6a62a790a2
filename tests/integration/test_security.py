"""AUTH, ACL users and TLS against servers the tests start: real workers decide over them, the CLI runs under
its own user, and refusals are clear and never show a secret."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.exceptions import NoPermissionError
from typer.testing import CliRunner, Result

from tacticalctl.app import app
from tests.events import many_events
from tests.integration.streams import decided_ids, wait_for, wait_settled
from worker import stream_entries
from worker.connection import RedisAuthError, connect
from worker.embedded_redis import EmbeddedRedis, ServerTls
from worker.lag import read_consumer_lag
from worker.names import (
    ALERTS_STREAM,
    CONSUMER_GROUP,
    DEAD_LETTER_STREAM,
    INPUT_STREAM,
    breaker_state_key,
    heartbeat_key,
)
from worker.process import WorkerProcess
from worker.producer import publish_events
from worker.redis_text import as_text
from worker.security import RedisSecurity

ACL_FILE = Path(__file__).resolve().parents[2] / "runbook" / "acl" / "users.acl"
NO_SECURITY_ENV = {"TACTICAL_REDIS_PASSWORD_FILE": "", "TACTICAL_REDIS_TLS_CA": "", "TACTICAL_REDIS_TLS_CERT": "",
                   "TACTICAL_REDIS_TLS_KEY": ""}


def tacticalctl(redis_url: str, *args: str, **env: str) -> Result:
    return CliRunner().invoke(app, ["--redis-url", redis_url, *args],
                              env={"COLUMNS": "200", "NO_COLOR": "1", **NO_SECURITY_ENV, **env},
                              catch_exceptions=False)


def events(n: int, prefix: str = "evt"):
    return many_events(n, prefix=prefix, seed=7, directions=(-1, 1))


# ---- certificates, made here -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA the server's certificate does not chain to


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate | None) -> Path:
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
                 | None, extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(subject: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)
    return key, _certificate(subject, key, None, [(x509.BasicConstraints(ca=True, path_length=None), True),
                                                  (usage, True)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("tactical test CA")
    _, rogue_cert = _ca("someone else's CA")
    issuer = (ca_cert.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("redis", server_key, issuer, [
        (x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("tactical-worker", client_key, issuer,
                          [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    return Pki(ca=_write(where / "ca.pem", None, ca_cert), server_cert=_write(where / "server.pem", None, server),
               server_key=_write(where / "server.key", server_key, None),
               client_cert=_write(where / "client.pem", None, client),
               client_key=_write(where / "client.key", client_key, None),
               rogue_ca=_write(where / "rogue-ca.pem", None, rogue_cert))


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki):
    tls = ServerTls(pki.server_cert, pki.server_key, pki.ca, pki.client_cert, pki.client_key,
                    require_client_certs=True)
    with EmbeddedRedis(data_dir=tmp_path / "tls-redis", appendonly=False, tls=tls) as server:
        yield server


# ---- TLS -------------------------------------------------------------------------------------------------------

def test_a_worker_decides_over_mutual_tls(tls_server: EmbeddedRedis, pki: Pki, start_worker) -> None:
    url = tls_server.url()
    assert url.startswith("rediss://")
    client = connect(url, security=RedisSecurity(pki.ca, pki.client_cert, pki.client_key))
    publish_events(client, events(100))
    worker = start_worker(url, redis_tls_ca=pki.ca, redis_tls_cert=pki.client_cert, redis_tls_key=pki.client_key)
    wait_settled(client, 100)
    assert decided_ids(client) == {f"evt-{i}".encode(): 1 for i in range(100)}

    # The health monitor has its own connection: it reaches Redis over TLS too.
    def redis_check() -> str:
        with urllib.request.urlopen(f"{worker.http_url}/health/state", timeout=5) as response:
            checks = json.load(response)["health_checks"]
        return next(c["status"] for c in checks if c["name"] == "redis")

    wait_for(lambda: redis_check() == "ok", timeout_s=10, what="the monitor's Redis check over TLS")

    listed = tacticalctl(url, "keys", "list", "--kind", "completed", "--json", TACTICAL_REDIS_TLS_CA=str(pki.ca),
                         TACTICAL_REDIS_TLS_CERT=str(pki.client_cert), TACTICAL_REDIS_TLS_KEY=str(pki.client_key))
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["completed"] == 100


def test_tls_verifies_the_server_and_needs_the_client_certificate(tls_server: EmbeddedRedis, pki: Pki) -> None:
    url = tls_server.url()
    assert connect(url, security=RedisSecurity(pki.ca, pki.client_cert, pki.client_key)).ping()
    localhost = url.replace("127.0.0.1", "localhost")
    assert connect(localhost, security=RedisSecurity(pki.ca, pki.client_cert, pki.client_key)).ping()

    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(url, security=RedisSecurity(pki.rogue_ca, pki.client_cert, pki.client_key)).ping()
    with pytest.raises(redis.ConnectionError):
        connect(url, security=RedisSecurity(pki.ca)).ping()  # no client certificate: the server hangs up
    with pytest.raises(redis.ConnectionError):
        connect(url.replace("rediss://", "redis://"), security=RedisSecurity()).ping()  # no plaintext port

    untrusted = tacticalctl(url, "keys", "list", TACTICAL_REDIS_TLS_CA=str(pki.rogue_ca),
                            TACTICAL_REDIS_TLS_CERT=str(pki.client_cert), TACTICAL_REDIS_TLS_KEY=str(pki.client_key))
    assert untrusted.exit_code == 2
    assert untrusted.stderr.startswith("tacticalctl: Redis unreachable at ") and "CERTIFICATE_VERIFY_FAILED" in \
        untrusted.stderr and untrusted.stderr.count("\n") == 1


# ---- ACL users ---------------------------------------------------------------------------------------------------

def _enable(admin: redis.Redis, user: str, password: str) -> None:
    """What the runbook's procedure runs: enable the user with the SHA-256 of its password (no secret in the file)."""
    admin.execute_command("ACL", "SETUSER", user, "on", "#" + hashlib.sha256(password.encode()).hexdigest())


@pytest.fixture
def acl_server(tmp_path: Path):
    acl = tmp_path / "users.acl"
    shutil.copy(ACL_FILE, acl)
    with EmbeddedRedis(data_dir=tmp_path / "acl-redis", appendonly=False, extra_args=("--aclfile", str(acl))) as srv:
        yield srv


def _acl_denials(admin: redis.Redis) -> list[str]:
    # redis-py parses each entry into a dict (str keys and values) where it knows the command; a flat list otherwise.
    fields = [e if isinstance(e, dict) else dict(zip(e[::2], e[1::2], strict=True))
              for e in admin.execute_command("ACL", "LOG")]
    return [f"{as_text(f.get('username', f.get(b'username')))}: {as_text(f.get('object', f.get(b'object')))}"
            for f in fields]


def test_worker_and_operator_work_under_their_acl_users_and_nothing_more(
    tmp_path: Path, acl_server: EmbeddedRedis, start_worker
) -> None:
    admin = redis.Redis.from_url(acl_server.url())
    worker_password, operator_password = "w-S3CRET-pass", "o-S3CRET-pass"
    _enable(admin, "tactical-worker", worker_password)
    _enable(admin, "tacticalctl", operator_password)
    worker_secret = tmp_path / "worker.password"
    worker_secret.write_text(worker_password + "\n")
    operator_secret = tmp_path / "operator.password"
    operator_secret.write_text(operator_password + "\n")
    worker_url = f"redis://tactical-worker@127.0.0.1:{acl_server.port}/2"
    operator_url = f"redis://tacticalctl@127.0.0.1:{acl_server.port}/2"

    publish_events(admin, events(60))
    admin.xadd(INPUT_STREAM, {"event_type": "SYNERGY_DETECTED", "correlation_id": "broken-1", "matrix": b"x"})
    # The first entry is held by a consumer that vanished: the worker must reclaim it (XAUTOCLAIM) under its user.
    admin.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    admin.xreadgroup(CONSUMER_GROUP, "vanished", {INPUT_STREAM: ">"}, count=1)

    worker = start_worker(worker_url, redis_password_file=worker_secret, heartbeat_interval_s=0.5)
    wait_settled(admin, 60, dead=1)
    assert stream_entries.entries(admin, DEAD_LETTER_STREAM)[0][1][b"correlation_id"] == b"broken-1"
    assert decided_ids(admin) == {f"evt-{i}".encode(): 1 for i in range(60)}
    assert admin.exists(heartbeat_key(worker.consumer))
    wait_for(lambda: admin.exists(breaker_state_key(worker.consumer)), what="the breaker state published")

    operator_env = {"TACTICAL_REDIS_PASSWORD_FILE": str(operator_secret)}
    reset = tacticalctl(operator_url, "breaker", "reset", "--yes", "--json", **operator_env)
    assert reset.exit_code == 0, reset.output
    assert worker.consumer in json.loads(reset.stdout)["honoured_by"], "the worker honoured it under its own user"
    listed = tacticalctl(operator_url, "keys", "list", "--json", **operator_env)
    assert listed.exit_code == 0 and json.loads(listed.stdout)["completed"] == 60
    replayed = tacticalctl(operator_url, "dead-letter", "replay", "--all", "--yes", "--include-invalid", **operator_env)
    assert replayed.exit_code == 0, replayed.output  # its script moves the entry: XADD, then XDEL of the letter
    archive = tmp_path / "backup.tar.gz"
    backed_up = tacticalctl(operator_url, "backup", str(archive), "--no-models", **operator_env)
    assert backed_up.exit_code == 0, backed_up.output
    # A latency spike, so triage's Redis probe reads LATENCY LATEST and then the event's HISTORY.
    admin.eval("local t = redis.call('TIME') repeat local n = redis.call('TIME') "
               "until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) >= 60000 return 1", 0)
    triaged = tacticalctl(operator_url, "triage", "p99-latency", "--json", **operator_env)
    assert "latency monitor: command" in triaged.stdout, triaged.output
    assert worker.stop() == 0  # a clean exit also forgets its consumer: XPENDING and XGROUP DELCONSUMER
    assert _acl_denials(admin) == [], "neither user was refused anything it needed"

    worker_client = connect(worker_url, security=RedisSecurity(password_file=worker_secret))
    operator_client = connect(operator_url, security=RedisSecurity(password_file=operator_secret))
    assert worker_client.ping() and operator_client.ping()
    for refused in (
        lambda: worker_client.flushdb(),
        lambda: worker_client.set("someone-else:key", "x"),  # outside its key patterns
        lambda: worker_client.xrange(ALERTS_STREAM),  # it appends alerts, it does not read the audit trail
        lambda: worker_client.config_get("*"),
        lambda: worker_client.keys("*"),
        lambda: operator_client.flushall(),
        lambda: operator_client.config_set("appendonly", "no"),
        lambda: operator_client.keys("*"),
        lambda: operator_client.set("someone-else:key", "x"),
        lambda: operator_client.execute_command("ACL", "SETUSER", "tacticalctl", "+@all"),
        lambda: operator_client.client_list(),
    ):
        with pytest.raises(NoPermissionError):
            refused()
    assert worker_password not in worker.log_text()
    # The worker's lag reading counts what was delivered with XINFO STREAM (its monitor ran it above, no denial); a
    # server holding the older ACL refuses it inside the script, and the lag is still read, without that count.
    assert read_consumer_lag(worker_client).delivered == 62  # 60 events, the broken one and its replay
    admin.execute_command("ACL", "SETUSER", "tactical-worker", "-xinfo|stream")
    older = read_consumer_lag(worker_client)
    assert (older.count, older.entries_added, older.delivered) == (0, None, None)


def test_the_operator_restores_into_a_server_with_the_same_acl(tmp_path: Path, acl_server: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(acl_server.url())
    _enable(admin, "tacticalctl", "o-pass")
    secret = tmp_path / "operator.password"
    secret.write_text("o-pass")
    publish_events(admin, events(10))
    admin.xgroup_create(INPUT_STREAM, CONSUMER_GROUP, id="0")
    admin.xreadgroup(CONSUMER_GROUP, "w1", {INPUT_STREAM: ">"}, count=3)  # pending entries, a consumer: rebuilt too
    admin.xgroup_createconsumer(INPUT_STREAM, CONSUMER_GROUP, "w2")
    operator_url = f"redis://tacticalctl@127.0.0.1:{acl_server.port}/2"
    archive = tmp_path / "b.tar.gz"
    env = {"TACTICAL_REDIS_PASSWORD_FILE": str(secret)}
    backed_up = tacticalctl(operator_url, "backup", str(archive), "--no-models", "--json", **env)
    assert backed_up.exit_code == 0, backed_up.output
    assert json.loads(backed_up.stdout)["redis"]["method"].startswith("streams: COPY")
    admin.flushdb()
    restored = tacticalctl(operator_url, "restore", str(archive), "--no-models", "--json", **env)
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["verified"] is True
    assert admin.xlen(INPUT_STREAM) == 10 and admin.xinfo_groups(INPUT_STREAM)[0]["consumers"] == 2
    assert _acl_denials(admin) == []

    # An ACL from before backups copied the streams: the backup is still taken, the old way, and says how to fix it.
    admin.execute_command("ACL", "SETUSER", "tacticalctl", "-copy")
    old_acl = tacticalctl(operator_url, "backup", str(tmp_path / "old-acl.tar.gz"), "--no-models", **env)
    assert old_acl.exit_code == 0, old_acl.output
    assert "DUMP in one MULTI/EXEC" in old_acl.stdout and "may not COPY" in old_acl.stdout, old_acl.stdout

    # Restoring under an ACL from before restores rebuilt streams is refused before anything is written (it used to
    # stop part way, the target half restored), naming what the user lacks; the dry run says so too.
    admin.execute_command("ACL", "SETUSER", "tacticalctl", "-xsetid", "-xgroup|createconsumer")
    admin.flushdb()
    for dry_run in (("--dry-run",), ()):
        refused = tacticalctl(operator_url, "restore", str(archive), "--no-models", *dry_run, **env)
        assert refused.exit_code == 2, refused.output
        assert "may not run XSETID, XGROUP CREATECONSUMER" in refused.output, refused.output
        assert "runbook/acl/users.acl" in refused.output, refused.output
        assert admin.dbsize() == 0, admin.keys("*")  # nothing restored, the probe's scratch stream deleted
    admin.execute_command("ACL", "SETUSER", "tacticalctl", "+xsetid", "+xgroup|createconsumer")
    restored = tacticalctl(operator_url, "restore", str(archive), "--no-models", **env)
    assert restored.exit_code == 0, restored.output


# ---- wrong credentials -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["url", "file"])
def test_a_refused_password_stops_the_worker_with_exit_2_and_no_secret(tmp_path: Path, where: str) -> None:
    right, wrong = "right-S3CRET-1", "wrong-S3CRET-2"
    with EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=False, password=right) as server:
        settings: dict[str, str] = {}
        if where == "url":
            url = f"redis://:{wrong}@127.0.0.1:{server.port}/2"
        else:
            url = f"redis://127.0.0.1:{server.port}/2"
            (tmp_path / "password").write_text(wrong + "\n")
            settings["redis_password_file"] = str(tmp_path / "password")
        worker = WorkerProcess(redis_url=url, consumer="locked-out", log_path=tmp_path / "worker.log",
                               settings=settings)
        worker.start(wait_ready_s=0)
        assert worker.wait(60) == 2
        log = worker.log_text()
        assert "refused user 'default'" in log
        assert ("TACTICAL_REDIS_PASSWORD_FILE" if where == "file" else "the Redis URL") in log
        assert wrong not in log and right not in log
        assert "Traceback" not in log

        result = tacticalctl(url, "keys", "list", **{"TACTICAL_" + k.upper(): v for k, v in settings.items()})
        assert result.exit_code == 2
        assert result.stderr.startswith("tacticalctl: Redis at ") and "refused user 'default'" in result.stderr
        assert result.stderr.count("\n") == 1
        assert wrong not in result.output and right not in result.output


def test_the_password_file_is_read_again_for_each_new_connection(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(redis_server.url())
    admin.execute_command("ACL", "SETUSER", "rotating", "on", ">first", "~*", "+@all")
    try:
        secret = tmp_path / "password"
        secret.write_text("first\n")
        client = connect(f"redis://rotating@127.0.0.1:{redis_server.port}/2",
                         security=RedisSecurity(password_file=secret))
        assert client.ping()
        admin.execute_command("ACL", "SETUSER", "rotating", "resetpass", ">second")
        secret.write_text("second\n")
        client.connection_pool.disconnect()
        assert client.ping(), "a new connection reads the rotated secret without a restart"
        secret.write_text("third\n")
        client.connection_pool.disconnect()
        with pytest.raises(RedisAuthError, match="refused user 'rotating'"):
            client.ping()
    finally:
        admin.execute_command("ACL", "DELUSER", "rotating")
