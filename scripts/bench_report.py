#!/usr/bin/env python3
"""Tables for scripts/bench.sh: medians over the rounds (plain text and Markdown) and the raw
per-round numbers. Standard library only.

    bench_report.py --raw RAW.tsv --meta META.tsv [--markdown FILE]

RAW.tsv: one row per redis-benchmark run (header: round, workload, target, requests, rps,
avg_ms, p50_ms, p95_ms, p99_ms, max_ms, cpu_ticks, cpu_us_per_req, rss_kb, status, detail,
cpu_user_us_per_req, cpu_sys_us_per_req; the last two may be missing in files of older runs).
META.tsv: `key<TAB>value` lines, plus `workload<TAB>name<TAB>title` and
`peer<TAB>name<TAB>description` lines, in run order.
"""

import argparse
import csv
import statistics
import sys


def load_meta(path):
    meta, workloads, peers = {}, [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "workload" and len(parts) >= 3:
                workloads.append((parts[1], parts[2]))
            elif parts[0] == "peer" and len(parts) >= 3:
                peers.append((parts[1], parts[2]))
            elif len(parts) >= 2:
                meta[parts[0]] = parts[1]
    return meta, workloads, peers


def load_raw(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_int(v):
    return "-" if v is None else f"{v:,.0f}"


def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_mib(kb):
    return "-" if kb is None else f"{kb / 1024:.1f}"


class Summary:
    """Medians of one (workload, target) over the successful rounds."""

    def __init__(self, rows, direct_by_round):
        ok = [r for r in rows if r["status"] == "ok"]
        self.total = len(rows)
        self.ok = len(ok)
        self.rps = median(num(r["rps"]) for r in ok)
        self.p50 = median(num(r["p50_ms"]) for r in ok)
        self.p99 = median(num(r["p99_ms"]) for r in ok)
        self.cpu = median(num(r["cpu_us_per_req"]) for r in ok)
        self.cpu_split = median_run_split(ok, self.cpu)
        self.rss = median(num(r["rss_kb"]) for r in ok)
        # Ratio: the median of the per-round ratios against the same round's reference run
        # (rounds are interleaved, so a slow phase of the machine hits both sides).
        ratios = []
        for r in ok:
            ref = direct_by_round.get(r["round"])
            rps = num(r["rps"])
            if ref and rps is not None:
                ratios.append(rps / ref)
        self.ratio = median(ratios)


def median_run_split(ok, median_cpu):
    """(user, system) µs/request of the run whose total is the median total, so that the two
    add up to the CPU figure shown (medians taken separately would not), or None."""
    runs = [
        (num(r["cpu_us_per_req"]), num(r.get("cpu_user_us_per_req")), num(r.get("cpu_sys_us_per_req")))
        for r in ok
    ]
    runs = [run for run in runs if None not in run]
    if median_cpu is None or not runs:
        return None
    _, user, system = min(runs, key=lambda run: abs(run[0] - median_cpu))
    return user, system


def split_text(split):
    return "-" if split is None else f"{split[0]:.2f} / {split[1]:.2f}"


def summarise(rows, workload, targets, reference):
    by_target = {t: [r for r in rows if r["workload"] == workload and r["target"] == t] for t in targets}
    direct_by_round = {
        r["round"]: num(r["rps"])
        for r in by_target.get(reference, [])
        if r["status"] == "ok" and num(r["rps"])
    }
    return {t: Summary(by_target[t], direct_by_round) for t in targets}


def metric_rows(summaries, targets, reference, ratio_label):
    def cell(s, text):
        if s.total == 0:
            return "-"
        if s.ok == 0:
            return "FAILED"
        return text if s.ok == s.total else f"{text} ({s.ok}/{s.total} ok)"

    rows = [
        ["requests/s"] + [cell(summaries[t], fmt_int(summaries[t].rps)) for t in targets],
        ["p50 latency (ms)"] + [cell(summaries[t], fmt(summaries[t].p50, 3)) for t in targets],
        ["p99 latency (ms)"] + [cell(summaries[t], fmt(summaries[t].p99, 3)) for t in targets],
        [ratio_label]
        + [cell(summaries[t], "1.00" if t == reference else fmt(summaries[t].ratio, 2)) for t in targets],
        ["proxy CPU (µs/request)"]
        + ["-" if t == "direct" else cell(summaries[t], fmt(summaries[t].cpu, 2)) for t in targets],
        ["proxy CPU user / system (µs/request)"]
        + ["-" if t == "direct" else cell(summaries[t], split_text(summaries[t].cpu_split)) for t in targets],
        ["proxy RSS (MiB)"]
        + ["-" if t == "direct" else cell(summaries[t], fmt_mib(summaries[t].rss)) for t in targets],
    ]
    return rows


def text_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = []
    line = "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out.append(line)
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append(
            "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    return "\n".join(out)


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--markdown")
    args = ap.parse_args()

    meta, workloads, peers = load_meta(args.meta)
    rows = load_raw(args.raw)
    peer_names = [name for name, _ in peers]
    rounds = meta.get("rounds", "?")

    text_parts, md_parts = [], []
    setup = (
        f"redis-benchmark {meta.get('benchmark_version', '?')} against Redis "
        f"{meta.get('redis_version', '?')}, a local 3-primary + 3-replica cluster; "
        f"slotproxy with 1 worker pinned to CPU {meta.get('proxy_cpu', '0')}, every redis-server "
        f"and redis-benchmark pinned to CPU {meta.get('redis_cpu', '1')}; direct = "
        f"redis-benchmark against the primary owning the key. "
        f"Median of {rounds} interleaved rounds{' (--quick: request counts / 10)' if meta.get('quick') == '1' else ''}; "
        f"ratio = median of per-round requests/s ratios (proxy / direct); proxy CPU = "
        f"(utime + stime) / requests; RSS after the run."
    )
    machine = (
        f"{meta.get('cpu_model', '?')} ({meta.get('ncpu', '?')} CPUs), Linux {meta.get('kernel', '?')}, "
        f"{meta.get('date', '?')}, slotproxy {meta.get('commit', '?')}"
    )
    if peers:
        machine += "; peers: " + ", ".join(f"{n} = {d}" for n, d in peers) + " (pinned like slotproxy)"

    md_parts.append(f"Benchmark (`scripts/bench.sh`): {setup}\n\n{machine}.")
    text_parts.append(f"{setup}\n{machine}.")

    summary_rows = []
    for wl, title in workloads:
        if wl == "scaling":
            targets, reference, label = ["slotproxy", "slotproxy-2w"], "slotproxy", "ratio (vs --workers 1)"
            header = ["", "--workers 1 (pinned)", "--workers 2 (not pinned)"]
        else:
            targets, reference, label = ["direct", "slotproxy"] + peer_names, "direct", "ratio (proxy/direct)"
            header = [""] + targets
        summaries = summarise(rows, wl, targets, reference)
        table = metric_rows(summaries, targets, reference, label)
        text_parts.append(f"== {wl}: {title}\n" + text_table(header, table))
        md = f"#### {title}\n\n" + md_table(header, table)
        if wl == "scaling":
            factor = summaries["slotproxy-2w"].ratio
            md += f"\n\nScaling factor --workers 2 / --workers 1: **{fmt(factor, 2)}**"
            text_parts[-1] += f"\nscaling factor (--workers 2 / --workers 1, requests/s): {fmt(factor, 2)}"
        else:
            # A target with no successful round says so here too; "-" is a target that is not
            # part of this workload (the near-cache proxy runs only the GET workloads).
            def ratio_cell(s):
                if s.total == 0:
                    return "-"
                return "FAILED" if s.ok == 0 else fmt(s.ratio, 2)

            summary_rows.append([wl] + [ratio_cell(summaries[t]) for t in targets[1:]])
        md_parts.append(md)

    if summary_rows:
        header = ["workload"] + [f"{t} / direct" for t in ["slotproxy"] + peer_names]
        text_parts.insert(1, "== requests/s ratio to direct (median)\n" + text_table(header, summary_rows))
        md_parts.insert(1, "#### Requests/s relative to direct (median)\n\n" + md_table(header, summary_rows))

    # Raw per-round numbers.
    raw_header = ["round", "workload", "target", "requests", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "RSS MiB", "status"]
    raw_rows = []
    for r in rows:
        raw_rows.append(
            [
                r["round"],
                r["workload"],
                r["target"],
                r["requests"],
                fmt_int(num(r["rps"])),
                fmt(num(r["p50_ms"]), 3),
                fmt(num(r["p99_ms"]), 3),
                fmt(num(r["cpu_us_per_req"]), 2),
                fmt_mib(num(r["rss_kb"])),
                r["status"],
            ]
        )
    failures = [r for r in rows if r["status"] != "ok"]

    out = sys.stdout
    out.write("\n\n".join(text_parts) + "\n\n")
    out.write("=" * 30 + " Markdown " + "=" * 30 + "\n\n")
    markdown = "\n\n".join(md_parts) + "\n"
    out.write(markdown + "\n")
    out.write("=" * 30 + " raw per-round numbers " + "=" * 30 + "\n")
    out.write(text_table(raw_header, raw_rows) + "\n")
    if failures:
        out.write(f"\n{len(failures)} failed run(s):\n")
        for r in failures:
            out.write(f"  round {r['round']} {r['workload']} {r['target']}: {r['detail']}\n")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown)


if __name__ == "__main__":
    main()
