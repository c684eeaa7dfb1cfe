// The client-compatibility scenario, driven by ioredis (Node.js) through slotproxy.
//
// A plain (non-cluster) ioredis client, with its default handshake (a ready check that sends
// INFO and waits for `loading:0`), must be able to do what an application does: SET/GET, a
// pipeline, MULTI/EXEC, pub/sub, BLPOP and EVAL. Run by tests/client_compat.rs against a real
// cluster: `node scenario.js PORT PREFIX`.
"use strict";

const assert = require("assert");
const Redis = require("ioredis");

async function main() {
  const port = Number(process.argv[2]);
  const prefix = process.argv[3];
  const options = { host: "127.0.0.1", port, connectTimeout: 10000, maxRetriesPerRequest: 1 };
  const r = new Redis(options);
  const publisher = new Redis(options);
  const sub = new Redis(options);
  try {
    assert.strictEqual(await r.ping(), "PONG");

    const key = `${prefix}:k`;
    assert.strictEqual(await r.set(key, "v"), "OK");
    assert.strictEqual(await r.get(key), "v");

    // A plain pipeline over many slots: replies in order.
    const pipe = r.pipeline();
    for (let i = 0; i < 200; i++) {
      pipe.set(`${prefix}:p:${i}`, String(i));
      pipe.get(`${prefix}:p:${i}`);
    }
    const replies = await pipe.exec();
    for (let i = 0; i < 200; i++) {
      assert.deepStrictEqual(replies[2 * i], [null, "OK"]);
      assert.deepStrictEqual(replies[2 * i + 1], [null, String(i)]);
    }

    // MULTI/EXEC on one slot.
    const tag = `{${prefix}}`;
    const tx = await r
      .multi()
      .set(`${tag}:a`, "1")
      .incr(`${tag}:a`)
      .mget(`${tag}:a`, `${tag}:b`)
      .exec();
    assert.deepStrictEqual(tx, [
      [null, "OK"],
      [null, 2],
      [null, ["2", null]],
    ]);

    // Pub/sub: subscribe on one connection, publish from another, receive.
    const channel = `${prefix}:chan`;
    const received = new Promise((resolve) => {
      sub.on("message", (ch, message) => {
        if (ch === channel) resolve(message);
      });
    });
    assert.strictEqual(await sub.subscribe(channel), 1);
    let message = null;
    received.then((m) => {
      message = m;
    });
    const deadline = Date.now() + 10000;
    while (message === null && Date.now() < deadline) {
      await publisher.publish(channel, "hello");
      await new Promise((done) => setTimeout(done, 100));
    }
    assert.strictEqual(message, "hello");

    // BLPOP: blocks until another client pushes.
    const queue = `${prefix}:queue`;
    setTimeout(() => publisher.rpush(queue, "job"), 300);
    assert.deepStrictEqual(await r.blpop(queue, 10), [queue, "job"]);

    // EVAL with a key.
    assert.strictEqual(await r.eval("return redis.call('GET', KEYS[1])", 1, key), "v");

    console.log(`scenario ok: ioredis ${require("ioredis/package.json").version}`);
  } finally {
    r.disconnect();
    publisher.disconnect();
    sub.disconnect();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
