#!/usr/bin/env python3
"""Writes the hand-written seed inputs under fuzz/seeds/<target>/ (plain RESP, one file each).

The seeds are committed; run this again only to change them: `python3 fuzz/make_seeds.py`.
They cover RESP2 and RESP3 requests and replies, valid and broken, plus control-path replies
(CLUSTER SHARDS/SLOTS, the start of a real COMMAND reply) for value_parse.
"""
import os, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

def bulk(s):
    if isinstance(s, str): s = s.encode()
    return b"$%d\r\n%s\r\n" % (len(s), s)
def mb(*args):
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)

req = {
 "ping_inline": b"PING\r\n",
 "ping_inline_lf": b"PING\n",
 "set_inline_quotes": b"SET \"a b\" 'c\\'d' \"\\x41\\n\\t\"\r\n",
 "inline_unbalanced": b"SET \"abc\r\n",
 "inline_blank_lines": b"\r\n\n   \r\nGET k\r\n",
 "inline_nul": b"GET a\x00b\r\n",
 "inline_long": b"SET k " + b"v" * 60 + b"\r\n",
 "get": mb("GET", "key"),
 "set_ex": mb("SET", "user:{42}:name", "alice", "EX", "60"),
 "mget": mb("MGET", "a", "b", "{a}c"),
 "mset": mb("MSET", "k1", "v1", "k2", "v2"),
 "empty_arg": mb("SET", "k", ""),
 "binary_arg": mb("SET", "k", b"\r\n\x00\xff*$"),
 "hello3": mb("HELLO", "3", "AUTH", "default", "secret"),
 "eval": mb("EVAL", "return redis.call('GET', KEYS[1])", "1", "k"),
 "xadd": mb("XADD", "s", "*", "f", "v"),
 "subscribe": mb("SUBSCRIBE", "ch1", "ch2"),
 "multi_exec": mb("MULTI") + mb("INCR", "c") + mb("EXEC"),
 "pipeline_mixed": mb("GET", "a") + b"*0\r\n*-1\r\n\r\nPING\r\n" + mb("DEL", "a"),
 "null_and_empty": b"*-1\r\n*0\r\n",
 "array_too_long": b"*11\r\n" + b"".join(bulk("x") for _ in range(11)),
 "bulk_too_long": b"*2\r\n$3\r\nSET\r\n$101\r\n" + b"x" * 101 + b"\r\n",
 "query_buffer": mb("SET", "k" * 90, "v" * 100, "w" * 100),
 "bad_bulk_marker": b"*2\r\n$3\r\nGET\r\n+key\r\n",
 "bulk_not_terminated": b"*1\r\n$4\r\nPINGxx",
 "bad_count": b"*abc\r\n",
 "count_leading_zero": b"*01\r\n$4\r\nPING\r\n",
 "negative_bulk": b"*1\r\n$-1\r\n",
 "long_header": b"*" + b"1" * 50 + b"\r\n",
 "header_cr_only": b"*1\r$4\r\nPING\r\n",
 "max_i64": b"*9223372036854775807\r\n",
 "min_i64": b"*-9223372036854775808\r\n",
 "partial": mb("GET", "a")[:-3],
}

def simple(s): return b"+" + s.encode() + b"\r\n"
rep = {
 "ok": b"+OK\r\n",
 "err": b"-ERR unknown command 'FOO'\r\n",
 "moved": b"-MOVED 3999 127.0.0.1:6381\r\n",
 "ask": b"-ASK 3999 [::1]:6381\r\n",
 "tryagain": b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
 "clusterdown": b"-CLUSTERDOWN The cluster is down\r\n",
 "loading": b"-LOADING Redis is loading the dataset in memory\r\n",
 "int": b":1000\r\n:-1\r\n:0\r\n",
 "int_bad": b":12a\r\n",
 "bulk": b"$5\r\nhello\r\n",
 "bulk_empty": b"$0\r\n\r\n",
 "bulk_null": b"$-1\r\n",
 "bulk_binary": b"$4\r\n\r\n\r\n\r\n",
 "array": b"*3\r\n$3\r\nfoo\r\n:42\r\n$-1\r\n",
 "array_null": b"*-1\r\n",
 "array_empty": b"*0\r\n",
 "nested": b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*1\r\n+deep\r\n",
 "deep": b"*1\r\n" * 40 + b":1\r\n",
 "null3": b"_\r\n",
 "double": b",3.14\r\n,inf\r\n,-inf\r\n,nan\r\n,1e10\r\n",
 "double_bad": b",abc\r\n",
 "bool": b"#t\r\n#f\r\n",
 "bool_bad": b"#x\r\n",
 "bignum": b"(3492890328409238509324850943850943825024385\r\n",
 "blob_error": b"!21\r\nSYNTAX invalid syntax\r\n",
 "verbatim": b"=15\r\ntxt:Some string\r\n",
 "verbatim_short": b"=2\r\nab\r\n",
 "map": b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
 "map_nested": b"%1\r\n$4\r\nkeys\r\n%1\r\n+a\r\n*2\r\n:1\r\n#t\r\n",
 "set": b"~3\r\n+a\r\n+b\r\n+c\r\n",
 "push": b">3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n",
 "attribute": b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
 "attribute_in_array": b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n",
 "attribute_chain": b"|0\r\n" * 35 + b"+x\r\n",
 "hello3_reply": b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$7\r\ncluster\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
 "pipeline": b"+OK\r\n:1\r\n$3\r\nbar\r\n-MOVED 1 h:1\r\n*1\r\n_\r\n",
 "bad_type": b"@oops\r\n",
 "no_lf": b"+OK\rX",
 "bulk_bad_term": b"$3\r\nfooXY",
 "huge_count": b"*9223372036854775807\r\n*9223372036854775807\r\n*9223372036854775807\r\n",
 "map_huge": b"%9223372036854775807\r\n",
 "neg_len": b"$-2\r\n",
}

shards = (b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n"
 b"*12\r\n$2\r\nid\r\n$3\r\nabc\r\n$4\r\nport\r\n:7000\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
 b"*12\r\n$2\r\nid\r\n$3\r\ndef\r\n$4\r\nport\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$6\r\nhealth\r\n$6\r\nonline\r\n")
shards_resp3 = (b"*1\r\n%2\r\n$5\r\nslots\r\n*4\r\n:0\r\n:100\r\n:200\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n"
 b"%7\r\n$2\r\nid\r\n$1\r\np\r\n$4\r\nport\r\n:6379\r\n$8\r\ntls-port\r\n:6380\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$8\r\nhostname\r\n$6\r\nnode-a\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:100\r\n")
slots = (b"*2\r\n*4\r\n:0\r\n:8000\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nabc\r\n*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$3\r\nxyz\r\n"
 b"*3\r\n:8001\r\n:16383\r\n*3\r\n$-1\r\n:7001\r\n$3\r\ndef\r\n")
command_src = open(os.path.join(root, "..", "src/command/redis7_commands.resp"), "rb").read()
# The first few entries of the real COMMAND reply, re-headed as a 3-element array.
def take_entries(data, n):
    # Cut with slotproxy's own framing rules: find where n whole entries end.
    pos = data.index(b"\r\n") + 2
    def skip(p):
        cr = data.index(b"\r\n", p); m = data[p:p+1]; line = data[p+1:cr]; p2 = cr + 2
        if m in b"$!=":
            l = int(line); return p2 if l < 0 else p2 + l + 2
        if m in b"*~>":
            for _ in range(max(int(line), 0)): p2 = skip(p2)
            return p2
        if m == b"%":
            for _ in range(2*max(int(line), 0)): p2 = skip(p2)
            return p2
        return p2
    for _ in range(n): pos = skip(pos)
    return data[data.index(b"\r\n") + 2:pos]
command = b"*3\r\n" + take_entries(command_src, 3)
val = dict(rep)
val.update({"cluster_shards": shards, "cluster_shards_resp3": shards_resp3,
            "cluster_slots": slots, "command": command})
scan = dict(rep)
scan.update({"cluster_shards": shards, "cluster_slots": slots})

for target, seeds in [("request_decoder", req), ("reply_scanner", scan), ("value_parse", val)]:
    d = os.path.join(root, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(target, len(seeds))
