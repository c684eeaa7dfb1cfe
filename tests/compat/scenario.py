"""The client-compatibility scenario, driven by redis-py through slotproxy.

A plain (non-cluster) redis-py client, with its default handshake, must be able to do what an
application does: SET/GET, a pipeline, MULTI/EXEC, pub/sub, BLPOP and EVAL. Run by
tests/client_compat.rs against a real cluster: `python3 scenario.py PORT PREFIX [PROTOCOL]`, with
PROTOCOL 2 (redis-py's default) or 3 (`HELLO 3` on connect, push messages for pub/sub).
"""

import sys
import threading
import time

import redis


def main() -> None:
    port, prefix = int(sys.argv[1]), sys.argv[2]
    protocol = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    # Default handshake of redis-py 5: CLIENT SETINFO lib-name / lib-ver on connect (and
    # HELLO 3 first with protocol=3).
    r = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True, protocol=protocol
    )
    assert r.ping() is True
    if protocol == 3:
        # HELLO without a version describes the connection: it did switch to RESP3.
        hello = r.execute_command("HELLO")
        assert hello["proto"] == 3, hello

    key = f"{prefix}:k"
    assert r.set(key, "v") is True
    assert r.get(key) == "v"

    # A plain pipeline over many slots: replies in order.
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"{prefix}:p:{i}", i)
        pipe.get(f"{prefix}:p:{i}")
    replies = pipe.execute()
    assert replies == [x for i in range(200) for x in (True, str(i))], replies[:6]

    # MULTI/EXEC (redis-py's default pipeline) on one slot.
    tag = "{" + prefix + "}"
    tx = r.pipeline(transaction=True)
    tx.set(f"{tag}:a", 1).incr(f"{tag}:a").mget(f"{tag}:a", f"{tag}:b")
    assert tx.execute() == [True, 2, ["2", None]]

    # Pub/sub: subscribe, publish from another connection, receive.
    channel = f"{prefix}:chan"
    p = r.pubsub()
    p.subscribe(channel)
    first = p.get_message(timeout=5)
    assert first and first["type"] == "subscribe", first
    publisher = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, protocol=protocol)
    deadline = time.time() + 10
    message = None
    while message is None and time.time() < deadline:
        publisher.publish(channel, "hello")
        message = p.get_message(timeout=0.5)
    assert message and message["data"] == "hello", message
    p.close()

    # BLPOP: blocks until another client pushes.
    queue = f"{prefix}:queue"
    pusher = threading.Timer(0.3, lambda: publisher.rpush(queue, "job"))
    pusher.start()
    assert tuple(r.blpop([queue], timeout=10)) == (queue, "job")
    pusher.join()

    # EVAL with a key.
    assert r.eval("return redis.call('GET', KEYS[1])", 1, key) == "v"

    # A RESP3 reply type RESP2 flattens: a hash is a map.
    h = f"{prefix}:h"
    r.hset(h, mapping={"f": "v"})
    assert r.hgetall(h) == {"f": "v"}

    print("scenario ok: redis-py", redis.__version__, "protocol", protocol)


if __name__ == "__main__":
    main()
