"""Credentials and TLS settings, checked before any connection: no Redis needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.connection import connect
from worker.security import (
    PasswordFileCredentials,
    RedisSecurity,
    RedisSecurityError,
    effective_settings,
    is_secret_name,
    non_secret_environment,
)
from worker.settings import SettingsError, WorkerSettings, redact_url


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_from_env_reads_the_four_variables_and_ignores_empty_ones(tmp_path: Path) -> None:
    security = RedisSecurity.from_env({"TACTICAL_REDIS_TLS_CA": "/etc/ca.pem", "TACTICAL_REDIS_TLS_CERT": "",
                                       "TACTICAL_REDIS_PASSWORD_FILE": "/run/secrets/redis"})
    assert security == RedisSecurity(tls_ca=Path("/etc/ca.pem"), password_file=Path("/run/secrets/redis"))


def test_tls_files_with_a_plaintext_url_are_refused_before_connecting(pem: Path) -> None:
    with pytest.raises(RedisSecurityError, match=r"TACTICAL_REDIS_TLS_CA.*redis://:\*\*\*@h:6379/2 is redis://"):
        connect("redis://:pw@h:6379/2", security=RedisSecurity(tls_ca=pem))
    assert issubclass(RedisSecurityError, SettingsError) and issubclass(RedisSecurityError, ValueError)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (RedisSecurity(tls_ca=Path("/nonexistent/ca.pem")), "TACTICAL_REDIS_TLS_CA=/nonexistent/ca.pem: no such file"),
        (RedisSecurity(tls_key=Path("/k.pem")), "TACTICAL_REDIS_TLS_KEY is set without TACTICAL_REDIS_TLS_CERT"),
        (RedisSecurity(password_file=Path("/nonexistent/pw")), "TACTICAL_REDIS_PASSWORD_FILE=/nonexistent/pw: cannot"),
    ],
)
def test_each_misconfiguration_names_its_variable(security: RedisSecurity, message: str) -> None:
    with pytest.raises(RedisSecurityError, match=message.replace(".", r"\.")):
        security.check("rediss://h:6380/2")


def test_a_password_in_two_places_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    for url in ("redis://user:other@h/2", "unix:///tmp/redis.sock?db=2&password=other"):
        with pytest.raises(RedisSecurityError, match="keep the password in one place") as caught:
            RedisSecurity(password_file=secret).check(url)
        assert "other" not in str(caught.value)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n")
    with pytest.raises(RedisSecurityError, match="the file is empty"):
        RedisSecurity(password_file=secret).check("redis://h/2")


def test_with_a_password_file_the_username_moves_to_the_credentials(tmp_path: Path, pem: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    url, options = RedisSecurity(tls_ca=pem, password_file=secret).client_options("rediss://tactical-worker@h:6380/2")
    assert url == "rediss://h:6380/2"
    assert options["ssl_ca_certs"] == str(pem)
    # Said, whatever redis-py's defaults (5.x checked no host name): the certificate and the host name, always.
    assert (options["ssl_cert_reqs"], options["ssl_check_hostname"]) == ("required", True)
    provider = options["credential_provider"]
    assert provider.get_credentials() == ("tactical-worker", "s3cret")
    assert "s3cret" not in repr(provider)

    url, options = RedisSecurity(password_file=secret).client_options("unix:///tmp/r.sock?db=2&username=ops")
    assert "username" not in url and "db=2" in url
    assert options["credential_provider"].get_credentials() == ("ops", "s3cret")


def test_the_password_file_is_read_at_every_call(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("one\r\n")
    provider = PasswordFileCredentials(secret)
    assert provider.get_credentials() == ("one",)
    secret.write_text("two")
    assert provider.get_credentials() == ("two",)


def test_without_security_settings_the_url_is_handed_on_as_it_is() -> None:
    assert RedisSecurity().client_options("redis://u:p@h/2") == ("redis://u:p@h/2", {})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:p@h:1/2", "redis://u:***@h:1/2"),
        ("redis://:p@[::1]:6379/2", "redis://:***@[::1]:6379/2"),
        ("unix:///tmp/s.sock?db=2&password=abc", "unix:///tmp/s.sock?db=2&password=***"),
        ("rediss://u@h/2?password=x&db=2", "rediss://u@h/2?password=***&db=2"),
        ("redis://h/2", "redis://h/2"),
        # Unescaped / # ? @ in a password: the URL does not even parse, and must not leak in the error that says so.
        ("redis://:Ab/S3CRET+x=@127.0.0.1:7831/2", "redis://:***@127.0.0.1:7831/2"),
        ("redis://u:a#b?c@h:1/2", "redis://u:***@h:1/2"),
        ("redis://u:p@ss@h/2?password=z", "redis://u:***@h/2?password=***"),
        # An @ in a query value is no user info: its last @ is not where the password ends.
        ("redis://h:6379/2?password=p@ss", "redis://h:6379/2?password=***"),
        ("redis://u:pw@h:6379/2?username=svc@corp", "redis://u:***@h:6379/2?username=svc@corp"),
        ("redis://:hunter2@topsecret/pw@127.0.0.1:25417/2", "redis://:***@127.0.0.1:25417/2"),
    ],
)
def test_redact_url_masks_every_place_a_password_can_be(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("url", "complaint"), [
    ("redis://:Ab/S3CRET+x=@127.0.0.1:7831/2", "cannot be parsed: a password containing / # ? or @ must be "
                                              "percent-encoded"),
    ("redis://:Ab@127.0.0.1:99999/2", "has a port out of range: ports are 1-65535"),
    ("redis://:Ab@127.0.0.1:-1/2", "has a port out of range: ports are 1-65535"),
    ("redis://:Ab@127.0.0.1:0/2", "has a port out of range: ports are 1-65535"),
    ("redis://:Ab/-5@127.0.0.1:7831/2", "cannot be parsed: a password containing / # ? or @ must be "),
    ("redis://:123#Ab@127.0.0.1:7831/2", "cannot be parsed: a password containing / # ? or @ must be "),
    # An @ and a / in one password: what follows its first @ read as a host, asked of DNS.
    ("redis://:Ab@S3CRET/x@127.0.0.1:7831/2", "cannot be parsed: a password containing / # ? or @ must be "),
    ("redis://:Ab?S3CRET@127.0.0.1:7831/2", "cannot be parsed: a password containing / # ? or @ must be "),
    ("redis://127.0.0.1:notaport/2", "has a port that is not a number"),
    ("redis://127.0.0.1:6379/abc", "names database 'abc': a database is a number"),
    ("redis://127.0.0.1:6379/²", "names database '²': a database is a number"),
    ("rediss://h:6380/2?ssl_cert_reqs=none", "sets ssl_cert_reqs: TLS is configured only by"),
    ("rediss://h:6380/2?ssl_check_hostname=false", "sets ssl_check_hostname"),
    ("http://h:6379/2", "has scheme 'http'"),
])
def test_a_url_redis_py_would_misread_is_refused_without_its_secret(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(complaint)) as refused:
        RedisSecurity().check(url)
    assert "S3CRET" not in str(refused.value) and "Ab" not in str(refused.value)


def test_a_percent_encoded_password_is_a_valid_url() -> None:
    RedisSecurity().check("redis://u:p%2Fq%23r@h:6379/2")
    for url in ("redis://h:6379", "redis://h:6379/", "redis://h:6379/2/", "redis://[::1]:6379/2",
                "redis://h:6379/2?username=svc@corp", "redis://h:6379/2?password=p@ss", "rediss://h:6380/2"):
        RedisSecurity().check(url)  # valid, as redis-py reads them
    RedisSecurity().check("unix:///run/redis/a@b.sock?db=2")  # a socket path may hold an @


def test_the_shareable_environment_has_no_secret() -> None:
    environ = {
        "TACTICAL_BATCH_SIZE": "50",
        "TACTICAL_REDIS_URL": "rediss://w:hunter2@redis:6380/2",
        "TACTICAL_REDIS_PASSWORD_FILE": "/run/secrets/redis",
        "TACTICAL_REDIS_TLS_KEY": "/etc/tls/client.key",
        "TACTICAL_API_TOKEN": "abc",
        "TACTICAL_SIGNING_SECRET": "def",
        "TACTICAL_API_KEY": "k-123",
        "TACTICAL_EXCHANGE_KEY": "k-456",
        "TACTICAL_SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/xyz",
        "TACTICAL_BASIC_AUTH": "user:pw",
        "TACTICAL_REDIS_PASS": "pw",
        "TACTICAL_BEARER": "b",
        "TACTICAL_SESSION_COOKIE": "c",
        "TACTICAL_MODEL_SIGNING_KEY_FILE": "/run/secrets/signing",
        "HOME": "/root",
    }
    assert non_secret_environment(environ) == {
        "TACTICAL_BATCH_SIZE": "50",
        "TACTICAL_MODEL_SIGNING_KEY_FILE": "/run/secrets/signing",
        "TACTICAL_REDIS_PASSWORD_FILE": "/run/secrets/redis",
        "TACTICAL_REDIS_TLS_KEY": "/etc/tls/client.key",
        "TACTICAL_REDIS_URL": "rediss://w:***@redis:6380/2",
    }
    assert is_secret_name("TACTICAL_REDIS_PASSWORD") and not is_secret_name("TACTICAL_REDIS_PASSWORD_FILE")


def test_effective_settings_mask_the_redis_password(tmp_path: Path) -> None:
    settings = WorkerSettings(redis_url="redis://:pw@h/2", models_dir=tmp_path, consumer="c")
    values = effective_settings(settings)
    assert values["redis_url"] == "redis://:***@h/2"
    assert values["models_dir"] == str(tmp_path)
    assert values["batch_size"] == settings.batch_size
