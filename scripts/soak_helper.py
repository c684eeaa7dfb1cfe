#!/usr/bin/env python3
"""Helpers for scripts/soak.sh (standard library only; plain sockets speaking RESP2).

    soak_helper.py topo     --port P
    soak_helper.py settle   --ports P1,P2,... [--timeout S] [--admin HOST:PORT]
    soak_helper.py checker  --port P --stop-file F --result F.json [--rate N] [--progress F]
    soak_helper.py sampler  --pid PID --admin HOST:PORT --ports P1,... --csv F --stop-file F
                            [--interval S] [--events F] [--checker-progress F]
    soak_helper.py summary  --dir OUTDIR [--warmup S] [--window S] [...]

topo     prints the cluster as one node a line, from one node's CLUSTER NODES:
         `<id> <port> primary <nslots> -` or `<id> <port> replica 0 <primary id>`.
settle   waits until the cluster is quiet: on every node cluster_state:ok, 16384 slots
         assigned and ok, no slot migrating or importing, every node's CLUSTER NODES agreeing on
         who serves which slots and who replicates whom, every replica's link up and (with
         --admin) the proxy's /readyz 200. Exit 0 when settled, 1 on timeout (the last reason is
         printed).
checker  the correctness workload: each tick it pipelines RPUSH soak:list:<j> <seq>,
         SET soak:key:<seq> <value>, INCR soak:ctr:<c> (and every 10th tick a GET of an earlier
         acknowledged key) through the proxy, counting what was acknowledged, error replies and
         connection failures. When the stop file appears it reads everything back and writes
         the result (JSON): acknowledged writes missing, duplicated or out of order list
         elements, counters outside [acknowledged, sent], wrong values.
sampler  every --interval seconds one CSV row: the proxy's RSS, open fds, threads, the
         /metrics gauges and counters, the proxy's TCP connections to the nodes (from /proc),
         the nodes' view of them (CLIENT LIST entries whose source port is one of the proxy's
         sockets) and the nodes' connected_clients.
summary  reads the run directory (samples.csv, events.tsv, checker.json, workload.tsv,
         proxy.log) and prints the summary and the verdict; exit 1 when writes were lost or
         duplicated or a series grew beyond the rule (see soak.sh --help).
"""

import argparse
import csv
import json
import os
import random
import re
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request


# --------------------------------------------------------------------------------------------
# A minimal RESP2 client
# --------------------------------------------------------------------------------------------
class RespError(Exception):
    """An error reply (`-ERR ...`)."""


class Conn:
    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        """One reply; an error reply is returned as a RespError instance (not raised)."""
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by the server")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise ConnectionError("protocol error: unexpected reply type %r" % line[:40])

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(self.encode(c) for c in cmds))
        return [self.read() for _ in cmds]

    def call(self, *args):
        reply = self.pipeline([args])[0]
        if isinstance(reply, RespError):
            raise reply
        return reply


def node_call(port, *args, timeout=5.0):
    c = Conn(port, timeout=timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def parse_info(raw):
    out = {}
    for line in text(raw).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------
def parse_nodes(raw):
    """CLUSTER NODES -> list of dicts (id, port, flags, primary, slots (count), open, myself)."""
    nodes = []
    for line in text(raw).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split("@")[0]
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr and addr.rsplit(":", 1)[1] else 0
        flags = parts[2].split(",")
        nslots, ranges, opened = 0, [], []
        for s in parts[8:]:
            if s.startswith("["):
                opened.append(s)
                continue
            if "-" in s:
                lo, hi = s.split("-")
                nslots += int(hi) - int(lo) + 1
            else:
                nslots += 1
            ranges.append(s)
        nodes.append(
            {
                "id": parts[0],
                "port": port,
                "flags": flags,
                "primary": "master" in flags,
                "replica": "slave" in flags,
                "master_id": parts[3],
                "nslots": nslots,
                "ranges": ranges,
                "open": opened,
                "myself": "myself" in flags,
                "failing": "fail" in flags or "fail?" in flags,
                "link": parts[7],
            }
        )
    return nodes


def cmd_topo(args):
    nodes = parse_nodes(node_call(args.port, "CLUSTER", "NODES"))
    for n in sorted(nodes, key=lambda n: n["port"]):
        if n["primary"]:
            print(n["id"], n["port"], "primary", n["nslots"], "-")
        else:
            print(n["id"], n["port"], "replica", 0, n["master_id"])
    return 0


def settle_reason(ports, admin):
    """None when settled, else why not."""
    views = {}
    for p in ports:
        try:
            info = parse_info(node_call(p, "CLUSTER", "INFO"))
        except (OSError, RespError, ConnectionError) as e:
            return "node %d: %s" % (p, e)
        if info.get("cluster_state") != "ok":
            return "node %d: cluster_state:%s" % (p, info.get("cluster_state"))
        if info.get("cluster_slots_assigned") != "16384" or info.get("cluster_slots_ok") != "16384":
            return "node %d: slots assigned %s ok %s" % (
                p, info.get("cluster_slots_assigned"), info.get("cluster_slots_ok"))
        try:
            nodes = parse_nodes(node_call(p, "CLUSTER", "NODES"))
        except (OSError, RespError, ConnectionError) as e:
            return "node %d: %s" % (p, e)
        for n in nodes:
            if n["open"]:
                return "node %d: slot open on %d: %s" % (p, n["port"], " ".join(n["open"]))
            if n["failing"]:
                return "node %d: sees %d as failing" % (p, n["port"])
            if n["link"] != "connected":
                return "node %d: link to %d %s" % (p, n["port"], n["link"])
        views[p] = tuple(sorted(
            (n["id"], "P" if n["primary"] else "R:" + n["master_id"], tuple(n["ranges"]))
            for n in nodes))
        me = [n for n in nodes if n["myself"]]
        if me and me[0]["replica"]:
            try:
                rep = parse_info(node_call(p, "INFO", "replication"))
            except (OSError, RespError, ConnectionError) as e:
                return "node %d: %s" % (p, e)
            if rep.get("master_link_status") != "up":
                return "replica %d: master_link_status:%s" % (p, rep.get("master_link_status"))
    first = views[ports[0]]
    for p in ports[1:]:
        if views[p] != first:
            return "nodes %d and %d disagree about the slots or roles" % (ports[0], p)
    primaries = [v for v in first if v[1] == "P" and v[2]]
    if len(primaries) != 3:
        return "%d primaries serve slots (want 3)" % len(primaries)
    if admin:
        try:
            with urllib.request.urlopen("http://%s/readyz" % admin, timeout=5) as r:
                if r.status != 200:
                    return "proxy /readyz %d" % r.status
        except urllib.error.HTTPError as e:
            return "proxy /readyz %d: %s" % (e.code, e.read()[:200].decode(errors="replace"))
        except OSError as e:
            return "proxy /readyz: %s" % e
    return None


def cmd_settle(args):
    ports = [int(p) for p in args.ports.split(",")]
    deadline = time.monotonic() + args.timeout
    reason = None
    while time.monotonic() < deadline:
        reason = settle_reason(ports, args.admin)
        if reason is None:
            return 0
        time.sleep(0.5)
    print("not settled after %ss: %s" % (args.timeout, reason))
    return 1


# --------------------------------------------------------------------------------------------
# Correctness checker
# --------------------------------------------------------------------------------------------
N_LISTS = 16
N_COUNTERS = 8


def value_of(seq):
    return "v%d:%d" % (seq, (seq * 7919) % 1000003)


def cmd_checker(args):
    acked_keys = []  # seqs whose SET was acknowledged
    list_acked = [[] for _ in range(N_LISTS)]  # seqs whose RPUSH was acknowledged
    ctr_acked = [0] * N_COUNTERS
    ctr_sent = [0] * N_COUNTERS
    errors = {}  # error reply text (first word + a bit) -> count
    examples = []
    conn_errors = 0
    reconnects = 0
    bad_reads = 0
    ticks = 0
    acked_total = 0
    unknown_total = 0
    seq = 0
    conn = None
    period = 1.0 / args.rate
    next_tick = time.monotonic()
    last_progress = 0.0

    def note_error(msg):
        key = msg.split(" ")[0] + " " + " ".join(msg.split(" ")[1:4])
        errors[key] = errors.get(key, 0) + 1
        if len(examples) < 20:
            examples.append("%s %s" % (time.strftime("%H:%M:%S"), msg[:200]))

    def write_progress():
        if args.progress:
            tmp = args.progress + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"seq": seq, "acked": acked_total,
                           "errors": sum(errors.values()) + conn_errors}, f)
            os.replace(tmp, args.progress)

    while not os.path.exists(args.stop_file):
        now = time.monotonic()
        if now < next_tick:
            time.sleep(next_tick - now)
        next_tick = max(next_tick + period, time.monotonic() - 1.0)
        if conn is None:
            try:
                conn = Conn(args.port, timeout=args.timeout)
            except OSError as e:
                conn_errors += 1
                note_error("connect: %s" % e)
                time.sleep(0.2)
                continue
        seq += 1
        ticks += 1
        j, c = seq % N_LISTS, seq % N_COUNTERS
        cmds = [
            ("RPUSH", "soak:list:%d" % j, seq),
            ("SET", "soak:key:%d" % seq, value_of(seq)),
            ("INCR", "soak:ctr:%d" % c),
        ]
        probe = None
        if ticks % 10 == 0 and acked_keys:
            probe = random.choice(acked_keys)
            cmds.append(("GET", "soak:key:%d" % probe))
        ctr_sent[c] += 1
        try:
            replies = conn.pipeline(cmds)
        except (OSError, ConnectionError) as e:
            conn_errors += 1
            note_error("connection: %s" % e)
            unknown_total += 3
            conn.close()
            conn = None
            reconnects += 1
            continue
        r_push, r_set, r_incr = replies[0], replies[1], replies[2]
        for r in (r_push, r_set, r_incr):
            if isinstance(r, RespError):
                note_error(str(r))
                unknown_total += 1
        if isinstance(r_push, int):
            list_acked[j].append(seq)
            acked_total += 1
        elif not isinstance(r_push, RespError):
            note_error("RPUSH unexpected reply %r" % (r_push,))
        if r_set == "OK":
            acked_keys.append(seq)
            acked_total += 1
        elif not isinstance(r_set, RespError):
            note_error("SET unexpected reply %r" % (r_set,))
        if isinstance(r_incr, int):
            ctr_acked[c] += 1
            acked_total += 1
        elif not isinstance(r_incr, RespError):
            note_error("INCR unexpected reply %r" % (r_incr,))
        if probe is not None:
            r_get = replies[3]
            if isinstance(r_get, RespError):
                note_error(str(r_get))
            elif r_get != value_of(probe).encode():
                bad_reads += 1
                note_error("GET soak:key:%d returned %r" % (probe, r_get))
        if now - last_progress >= 5:
            last_progress = now
            write_progress()
    write_progress()
    if conn is not None:
        conn.close()

    # ---- read everything back through the proxy ----
    result = {
        "writes_sent": seq * 3,
        "writes_acked": acked_total,
        "writes_unknown": unknown_total,
        "error_replies": sum(errors.values()) - conn_errors,
        "connection_errors": conn_errors,
        "errors_by_kind": errors,
        "error_examples": examples,
        "bad_reads_during_run": bad_reads,
    }
    lost = dup = disorder = wrong = 0
    lost_examples = []
    verify_errors = []
    conn = None
    for attempt in range(5):
        try:
            conn = Conn(args.port, timeout=60)
            break
        except OSError as e:
            verify_errors.append(str(e))
            time.sleep(1)
    if conn is None:
        result["verify_failed"] = "cannot connect: %s" % verify_errors
        write_result(args.result, result)
        return 1
    try:
        # Lists: every acknowledged seq present exactly once, in increasing order.
        for j in range(N_LISTS):
            got = conn.call("LRANGE", "soak:list:%d" % j, 0, -1)
            items = [int(x) for x in got]
            seen = {}
            for x in items:
                seen[x] = seen.get(x, 0) + 1
            dup += sum(n - 1 for n in seen.values() if n > 1)
            disorder += sum(1 for a, b in zip(items, items[1:]) if b <= a)
            for s in list_acked[j]:
                if s not in seen:
                    lost += 1
                    if len(lost_examples) < 10:
                        lost_examples.append("RPUSH soak:list:%d %d" % (j, s))
        # Keys: every acknowledged SET readable with its value (MGET in batches: split by the proxy).
        for i in range(0, len(acked_keys), 100):
            batch = acked_keys[i:i + 100]
            got = conn.call("MGET", *["soak:key:%d" % s for s in batch])
            for s, v in zip(batch, got):
                if v is None:
                    lost += 1
                    if len(lost_examples) < 10:
                        lost_examples.append("SET soak:key:%d" % s)
                elif v != value_of(s).encode():
                    wrong += 1
        # Counters: acknowledged <= value <= sent.
        ctr_low = ctr_high = 0
        for c in range(N_COUNTERS):
            v = conn.call("GET", "soak:ctr:%d" % c)
            v = int(v) if v is not None else 0
            if v < ctr_acked[c]:
                ctr_low += ctr_acked[c] - v
                lost += ctr_acked[c] - v
                if len(lost_examples) < 10:
                    lost_examples.append("INCR soak:ctr:%d: %d < %d acknowledged" % (c, v, ctr_acked[c]))
            if v > ctr_sent[c]:
                ctr_high += v - ctr_sent[c]
                dup += v - ctr_sent[c]
        result["counter_below_acked"] = ctr_low
        result["counter_above_sent"] = ctr_high
    except (OSError, ConnectionError, RespError) as e:
        result["verify_failed"] = str(e)
    finally:
        conn.close()
    result.update({"lost_acked_writes": lost, "duplicated_writes": dup,
                   "list_out_of_order": disorder, "wrong_values": wrong,
                   "lost_examples": lost_examples})
    write_result(args.result, result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}))
    return 0


def write_result(path, result):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------
SAMPLE_FIELDS = [
    "time", "elapsed_s", "rss_kb", "fds", "threads", "cpu_s", "client_conns", "backend_conns",
    "proxy_node_sockets", "node_side_proxy_conns", "nodes_connected_clients",
    "commands_total", "errors_total", "moved_total", "ask_total", "retries_total",
    "topology_refreshes", "slots_covered", "checker_acked", "checker_errors", "events_done",
]


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def proxy_node_sockets(pid, node_ports):
    """The proxy's ESTABLISHED TCP sockets whose remote port is a node's: their local ports."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    local_ports = []
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) < 10 or p[3] != "01" or p[9] not in inodes:
                        continue
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    if rport in node_ports:
                        local_ports.append(int(p[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return local_ports


def parse_metrics(body):
    vals = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        name, labels, v = m.group(1), m.group(2) or "", m.group(3)
        try:
            vals.setdefault(name, []).append((labels, float(v)))
        except ValueError:
            pass
    return vals


def msum(vals, name, label_filter=None):
    return sum(v for labels, v in vals.get(name, []) if label_filter is None or label_filter in labels)


def cmd_sampler(args):
    node_ports = [int(p) for p in args.ports.split(",")]
    node_set = set(node_ports)
    conns = {}
    start = args.start or time.time()
    new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
    out = open(args.csv, "a", newline="")
    w = csv.writer(out)
    if new:
        w.writerow(SAMPLE_FIELDS)
        out.flush()
    next_at = time.monotonic()
    while True:
        row = {k: "" for k in SAMPLE_FIELDS}
        now = time.time()
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        row["elapsed_s"] = "%.0f" % (now - start)
        try:
            st = proc_status(args.pid)
            row["rss_kb"] = st.get("VmRSS", "").split()[0]
            row["threads"] = st.get("Threads", "")
            row["fds"] = len(os.listdir("/proc/%d/fd" % args.pid))
            with open("/proc/%d/stat" % args.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            row["cpu_s"] = "%.1f" % ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except OSError:
            print("sampler: proxy pid %d is gone" % args.pid, file=sys.stderr)
            break
        local_ports = set(proxy_node_sockets(args.pid, node_set))
        row["proxy_node_sockets"] = len(local_ports)
        try:
            with urllib.request.urlopen("http://%s/metrics" % args.admin, timeout=5) as r:
                m = parse_metrics(r.read().decode())
            row["client_conns"] = "%.0f" % msum(m, "slotproxy_client_connections")
            row["backend_conns"] = "%.0f" % msum(m, "slotproxy_backend_connections")
            row["commands_total"] = "%.0f" % msum(m, "slotproxy_commands_total")
            row["errors_total"] = "%.0f" % msum(m, "slotproxy_errors_total")
            row["moved_total"] = "%.0f" % msum(m, "slotproxy_redirects_total", 'kind="moved"')
            row["ask_total"] = "%.0f" % msum(m, "slotproxy_redirects_total", 'kind="ask"')
            row["retries_total"] = "%.0f" % msum(m, "slotproxy_retries_total")
            row["topology_refreshes"] = "%.0f" % msum(m, "slotproxy_topology_refreshes_total")
            row["slots_covered"] = "%.0f" % msum(m, "slotproxy_slots_covered")
        except (OSError, ValueError) as e:
            print("sampler: /metrics: %s" % e, file=sys.stderr)
        node_side = 0
        connected = 0
        for p in node_ports:
            try:
                if p not in conns:
                    conns[p] = Conn(p, timeout=5)
                c = conns[p]
                info = parse_info(c.call("INFO", "clients"))
                connected += int(info.get("connected_clients", 0))
                for line in text(c.call("CLIENT", "LIST")).splitlines():
                    m2 = re.search(r"\baddr=[^ ]*:(\d+)\b", line)
                    if m2 and int(m2.group(1)) in local_ports:
                        node_side += 1
            except (OSError, ConnectionError, RespError, ValueError) as e:
                print("sampler: node %d: %s" % (p, e), file=sys.stderr)
                if p in conns:
                    conns.pop(p).close()
        row["node_side_proxy_conns"] = node_side
        row["nodes_connected_clients"] = connected
        if args.checker_progress and os.path.exists(args.checker_progress):
            try:
                with open(args.checker_progress) as f:
                    cp = json.load(f)
                row["checker_acked"] = cp.get("acked", "")
                row["checker_errors"] = cp.get("errors", "")
            except (OSError, ValueError):
                pass
        if args.events and os.path.exists(args.events):
            with open(args.events) as f:
                row["events_done"] = sum(1 for line in f if "\tdone\t" in line)
        w.writerow([row[k] for k in SAMPLE_FIELDS])
        out.flush()
        if os.path.exists(args.stop_file):
            break
        next_at += args.interval
        # Until the next sample; when the stop file appears, one last sample, then out.
        while time.monotonic() < next_at and not os.path.exists(args.stop_file):
            time.sleep(min(0.5, max(0.0, next_at - time.monotonic())))
    out.close()
    for c in conns.values():
        c.close()
    return 0


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
SERIES = [
    # column, label, unit, absolute tolerance
    ("rss_kb", "proxy RSS", "KiB", 8192),
    ("fds", "proxy open fds", "", 8),
    ("backend_conns", "backend conns (metric)", "", 4),
    ("proxy_node_sockets", "proxy->node sockets (/proc)", "", 4),
    ("node_side_proxy_conns", "nodes' proxy clients (CLIENT LIST)", "", 4),
]


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def cmd_summary(args):
    d = args.dir
    rows = []
    with open(os.path.join(d, "samples.csv"), newline="") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    failures = []
    if not rows:
        print("no samples")
        return 1
    duration = fnum(rows[-1]["elapsed_s"]) or 0
    warmup = args.warmup
    window = args.window
    # Short runs: the windows shrink so that they never overlap.
    if warmup + 2 * window > duration:
        window = max((duration - warmup) / 2, 0)
    first_lo, first_hi = warmup, warmup + window
    last_lo = duration - window

    def col(name, lo=None, hi=None):
        out = []
        for r in rows:
            t, v = fnum(r["elapsed_s"]), fnum(r.get(name))
            if v is None or t is None:
                continue
            if lo is not None and t < lo:
                continue
            if hi is not None and t >= hi:
                continue
            out.append(v)
        return out

    events = []
    ev_path = os.path.join(d, "events.tsv")
    if os.path.exists(ev_path):
        with open(ev_path) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) >= 4 and p[0] != "time":
                    events.append(p)
    kinds = {}
    for e in events:
        kinds.setdefault((e[1], e[2]), 0)
        kinds[(e[1], e[2])] += 1

    wl = {"runs": 0, "failed_runs": 0, "requests": 0, "error_lines": 0, "timeouts": 0}
    wl_path = os.path.join(d, "workload.tsv")
    wl_examples = []
    if os.path.exists(wl_path):
        with open(wl_path) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) < 6 or p[0] == "time":
                    continue
                wl["runs"] += 1
                rc, nreq, errs = int(p[2]), int(p[3]), int(p[4])
                if rc != 0:
                    wl["failed_runs"] += 1
                    if rc == 124:
                        wl["timeouts"] += 1
                    if len(wl_examples) < 5:
                        wl_examples.append("%s %s rc=%d %s" % (p[0], p[1], rc, p[5][:200]))
                else:
                    wl["requests"] += nreq
                wl["error_lines"] += errs
                if errs and rc == 0 and len(wl_examples) < 5:
                    wl_examples.append("%s %s %s" % (p[0], p[1], p[5][:200]))

    chk = {}
    chk_path = os.path.join(d, "checker.json")
    if os.path.exists(chk_path):
        with open(chk_path) as f:
            chk = json.load(f)
    else:
        failures.append("no checker result")

    log_counts = {"WARN": 0, "ERROR": 0}
    log_examples = []
    log_path = os.path.join(d, "proxy.log")
    if os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            for line in f:
                for lvl in ("WARN", "ERROR"):
                    if re.search(r"\b%s\b" % lvl, line[:60]):
                        log_counts[lvl] += 1
                        if len(log_examples) < 8:
                            log_examples.append(line.rstrip()[:300])

    out = []
    out.append("=" * 78)
    out.append("slotproxy soak summary  (%s)" % d)
    out.append("=" * 78)
    out.append("duration              %.1f min (%d samples, every ~%ss)" % (
        duration / 60, len(rows), args.interval))
    done = {k: v for k, v in kinds.items() if k[1] == "done"}
    failed = {k: v for k, v in kinds.items() if k[1] != "done"}
    out.append("events done           reshards %d, failovers %d, failbacks %d (total %d)" % (
        done.get(("reshard", "done"), 0), done.get(("failover", "done"), 0),
        done.get(("failback", "done"), 0), sum(done.values())))
    for kind in ("reshard", "failover", "failback"):
        secs = [int(e[3]) for e in events if e[1] == kind and e[2] == "done" and e[3].isdigit()]
        if secs:
            out.append("    %-9s took %d-%d s (mean %.1f s)" % (kind, min(secs), max(secs), statistics.mean(secs)))
    if failed:
        out.append("events not done       " + ", ".join("%s %s: %d" % (k[0], k[1], v) for k, v in sorted(failed.items())))
    first_cmd = fnum(rows[0].get("commands_total")) or 0
    last_cmd = fnum(rows[-1].get("commands_total")) or 0
    out.append("requests (proxy)      %d commands (%.0f/s average)" % (
        last_cmd - first_cmd, (last_cmd - first_cmd) / duration if duration else 0))
    cpu0, cpu1 = fnum(rows[0].get("cpu_s")), fnum(rows[-1].get("cpu_s"))
    if cpu0 is not None and cpu1 is not None and duration:
        out.append("proxy CPU             %.0f s in all (%.0f%% of one core on average)" % (
            cpu1 - cpu0, 100.0 * (cpu1 - cpu0) / duration))
    out.append("benchmark workload    %d redis-benchmark runs, %d requests done, %d runs failed (%d timed out), %d error lines" % (
        wl["runs"], wl["requests"], wl["failed_runs"], wl["timeouts"], wl["error_lines"]))
    for e in wl_examples:
        out.append("    " + e)
    out.append("checker               %s writes sent, %s acknowledged, %s of unknown outcome" % (
        chk.get("writes_sent", "?"), chk.get("writes_acked", "?"), chk.get("writes_unknown", "?")))
    out.append("client errors         %s error replies, %s connection errors (checker); %d failed benchmark runs" % (
        chk.get("error_replies", "?"), chk.get("connection_errors", "?"), wl["failed_runs"]))
    for k, v in sorted(chk.get("errors_by_kind", {}).items(), key=lambda kv: -kv[1])[:8]:
        out.append("    %6d  %s" % (v, k))
    out.append("lost acked writes     %s   (duplicated %s, list out of order %s, wrong values %s, bad reads during run %s)" % (
        chk.get("lost_acked_writes", "?"), chk.get("duplicated_writes", "?"),
        chk.get("list_out_of_order", "?"), chk.get("wrong_values", "?"),
        chk.get("bad_reads_during_run", "?")))
    for e in chk.get("lost_examples", []):
        out.append("    lost: " + e)
    if chk.get("verify_failed"):
        out.append("verification FAILED: %s" % chk["verify_failed"])
        failures.append("verification failed")
    if args.strict_errors:
        n_err = (chk.get("error_replies") or 0) + (chk.get("connection_errors") or 0)
        if n_err or wl["failed_runs"] or wl["error_lines"]:
            failures.append("clients saw errors (--strict-errors): checker %d, failed benchmark runs %d"
                            % (n_err, wl["failed_runs"]))
    if chk.get("lost_acked_writes", 0):
        failures.append("%d acknowledged writes lost" % chk["lost_acked_writes"])
    for key in ("duplicated_writes", "list_out_of_order", "wrong_values", "bad_reads_during_run"):
        if chk.get(key, 0):
            failures.append("%s: %d" % (key, chk[key]))
    mv = (fnum(rows[-1].get("moved_total")) or 0) - (fnum(rows[0].get("moved_total")) or 0)
    ask = (fnum(rows[-1].get("ask_total")) or 0) - (fnum(rows[0].get("ask_total")) or 0)
    pe = (fnum(rows[-1].get("errors_total")) or 0) - (fnum(rows[0].get("errors_total")) or 0)
    rt = (fnum(rows[-1].get("retries_total")) or 0) - (fnum(rows[0].get("retries_total")) or 0)
    out.append("proxy counters        MOVED %d, ASK %d, retries %d, slotproxy_errors_total +%d" % (mv, ask, rt, pe))
    out.append("proxy log             %d WARN, %d ERROR lines" % (log_counts["WARN"], log_counts["ERROR"]))
    for e in log_examples:
        out.append("    " + e)
    out.append("")
    out.append("Flat rule: mean of the last window <= mean of the first window (after warm-up)")
    out.append("+ max(%d%%, absolute tolerance). First window %.0f-%.0f s, last window %.0f-%.0f s." % (
        args.tolerance_pct, first_lo, first_hi, last_lo, duration))
    out.append("")
    out.append("%-36s %12s %12s %10s %10s %8s" % ("series", "first mean", "last mean", "max", "tolerance", "verdict"))
    for name, label, unit, abs_tol in SERIES:
        first = col(name, first_lo, first_hi)
        last = col(name, last_lo, None)
        allv = col(name)
        if not first or not last:
            out.append("%-36s %12s" % (label, "no data"))
            continue
        fm, lm, mx = statistics.mean(first), statistics.mean(last), max(allv)
        tol = max(fm * args.tolerance_pct / 100.0, abs_tol)
        flat = lm <= fm + tol
        if not flat:
            failures.append("%s grew: %.1f -> %.1f (tolerance %.1f)" % (label, fm, lm, tol))
        fmt = (lambda x: "%.0f %s" % (x, unit)) if unit else (lambda x: "%.1f" % x)
        out.append("%-36s %12s %12s %10s %10s %8s" % (
            label, fmt(fm), fmt(lm), fmt(mx), fmt(tol), "flat" if flat else "GREW"))
    out.append("")
    if failures:
        out.append("VERDICT: FAIL")
        for f_ in failures:
            out.append("  - " + f_)
    else:
        out.append("VERDICT: PASS (no acknowledged write lost, RSS, fds and backend connections flat)")
    print("\n".join(out))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("topo")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("settle")
    p.add_argument("--ports", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--admin")
    p = sub.add_parser("checker")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--rate", type=float, default=50, help="pipelines per second")
    p.add_argument("--timeout", type=float, default=15, help="socket timeout (s)")
    p.add_argument("--progress")
    p = sub.add_parser("sampler")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--start", type=float)
    p.add_argument("--events")
    p.add_argument("--checker-progress")
    p = sub.add_parser("summary")
    p.add_argument("--dir", required=True)
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--window", type=float, default=300)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--tolerance-pct", type=float, default=10)
    p.add_argument("--strict-errors", action="store_true")
    args = ap.parse_args()
    fn = {"topo": cmd_topo, "settle": cmd_settle, "checker": cmd_checker,
          "sampler": cmd_sampler, "summary": cmd_summary}[args.cmd]
    sys.exit(fn(args))


if __name__ == "__main__":
    main()
