#!/usr/bin/env python3
"""Helpers for bench/store.sh (standard library only); bench/kpsbench.py does free-port and wait-http.

Subcommands:
  wrk KIND FILE [key=value ...]      the RESULT line of a wrk output file (bench/lua/common.lua) as one JSON
                                     object, with KIND and the extra key=value fields (numbers when they parse)
  sled FILE [key=value ...]          the key=value output of examples/sled_batch as one JSON object
  check-page BASE TOKEN MARKER FIRST LIMIT
                                     one list request: fails unless 200 with LIMIT items, the first named FIRST
  report RESULTS.jsonl               results tables, the two targets, PASS/FAIL (markdown); exit 1 on a FAIL
"""

import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

LIST_TARGET = 1.2  # big-store p50 ÷ small-store p50, at most
IMPORT_TARGET = 0.50  # kps import req/s ÷ sled batched records/s, at least
POSITIONS = ["first", "start", "middle", "end", "random"]


def number(text):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def extras(pairs):
    return {k: number(v) for k, v in (p.split("=", 1) for p in pairs)}


def wrk(kind, path, *pairs):
    text = open(path).read()
    line = next((l for l in text.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(f"no RESULT line in {path}:\n{text}", file=sys.stderr)
        return 1
    f = {k: number(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:])}
    errors = sum(f[k] for k in ("connect_err", "read_err", "write_err", "timeout_err", "non2xx"))
    out = {"kind": kind, **extras(pairs), "requests": f["requests"], "duration_s": f["duration_s"],
           "rps": f["rps"], "p50_ms": f["p50_us"] / 1000, "p90_ms": f["p90_us"] / 1000,
           "p99_ms": f["p99_us"] / 1000, "max_ms": f["max_us"] / 1000, "errors": errors, "raw": path}
    print(json.dumps(out))
    return 0


def sled(path, *pairs):
    fields = {}
    for line in open(path):
        for kv in line.split():
            if "=" in kv:
                k, v = kv.split("=", 1)
                fields[k] = number(v)
    if "records_per_s" not in fields:
        print(f"no records_per_s in {path}", file=sys.stderr)
        return 1
    print(json.dumps({"kind": "sled", **extras(pairs), **fields, "raw": path}))
    return 0


def check_page(base, token, marker, first, limit):
    u = urllib.parse.urlsplit(base)
    path = f"/v2.1/os-keypairs?limit={limit}" + (f"&marker={marker}" if marker else "")
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", path, headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.35"})
    r = c.getresponse()
    body = r.read()
    items = json.loads(body).get("keypairs", []) if r.status == 200 else []
    names = [i["keypair"]["name"] for i in items]
    ok = r.status == 200 and len(names) == int(limit) and names[0] == first
    print(f"{path}: status {r.status}, {len(names)} items, first {names[0] if names else '-'}, "
          f"{len(body)} bytes: {'ok' if ok else 'UNEXPECTED'}")
    return 0 if ok else 1


def walk(base, token, expected):
    """Pages through every key pair of the caller once (limit=1000, markers from the next links), so that
    every page of the store has been read since start, as in a long-running server; prints the time."""
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.35"}
    started, seen, marker = time.monotonic(), 0, None
    while True:
        path = "/v2.1/os-keypairs?limit=1000" + (f"&marker={marker}" if marker else "")
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        body = json.loads(r.read())
        if r.status != 200:
            print(f"walk: {path} answered {r.status}", file=sys.stderr)
            return 1
        names = [k["keypair"]["name"] for k in body["keypairs"]]
        seen += len(names)
        if not body.get("keypairs_links") or not names:
            break
        marker = names[-1]
    print(f"walked {seen} key pairs in {time.monotonic() - started:.1f} s")
    return 0 if seen == int(expected) else 1


def perf_counts(path):
    """Counter values of a `perf stat -o FILE` output (task-clock in ms)."""
    counts = {}
    if not os.path.exists(path):
        return counts
    for line in open(path):
        parts = line.split()
        if len(parts) >= 2 and parts[0][0].isdigit():
            try:
                counts[parts[1] if parts[1] != "msec" else parts[2]] = float(parts[0].replace(",", ""))
            except ValueError:
                pass
    return {k: (int(v) if k != "task-clock" else v) for k, v in counts.items()}


def warm(row):
    return row.get("warmup") in (True, "true")


def fmt(x, digits=3):
    return "-" if x is None else f"{x:,.{digits}f}"


def report(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    lines = []
    w = lines.append
    failures = []

    # --- 1. list page latency ---------------------------------------------------------------------------
    imports = [r for r in rows if r["kind"] == "import-cli"]
    if imports:
        w("### Seeding (kps backup import)\n")
        w("| store | key pairs | backup lines | backup MB | generate s | import s | lines/s | data dir MB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in imports:
            w(f"| {r['store']} | {r['keypairs']:,} | {r['lines']:,} | {r['bytes'] / 1e6:,.1f} | {r['gen_s']:.1f} | "
              f"{r['import_s']:.1f} | {r['lines'] / r['import_s']:,.0f} | {r['data_mb']:,} |")
        w("")
    lists = [r for r in rows if r["kind"] == "list" and not warm(r)]
    worst = None
    if lists:
        stores = sorted({r["store"] for r in lists}, key=lambda s: int(s))
        small, big = stores[0], stores[-1]
        w(f"### List page latency, 1 connection, limit=50 (median over rounds of each run's p50 / p99)\n")
        w(f"| page (marker) | rounds × requests | p50 ms {int(small):,} | p50 ms {int(big):,} | p50 ratio | "
          f"p99 ms {int(small):,} | p99 ms {int(big):,} | p99 ratio | errors |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for pos in POSITIONS:
            per = {s: [r for r in lists if r["position"] == pos and r["store"] == s] for s in (small, big)}
            if not per[small] or not per[big]:
                continue
            p50 = {s: statistics.median(r["p50_ms"] for r in per[s]) for s in per}
            p99 = {s: statistics.median(r["p99_ms"] for r in per[s]) for s in per}
            errors = sum(r["errors"] for s in per for r in per[s])
            short = min(r["requests"] for s in per for r in per[s])
            ratio50, ratio99 = p50[big] / p50[small], p99[big] / p99[small]
            marker = per[big][0].get("marker_big", "") if pos != "random" else "uniform"
            label = f"{pos} ({marker or 'none'})"
            w(f"| {label} | {len(per[big])} × {short:,} | {fmt(p50[small])} | {fmt(p50[big])} | {ratio50:.2f} | "
              f"{fmt(p99[small])} | {fmt(p99[big])} | {ratio99:.2f} | {errors} |")
            if worst is None or ratio50 > worst[1]:
                worst = (pos, ratio50)
            if errors:
                failures.append(f"list {pos}: {errors} errors")
        per_round = [r for r in lists]
        w("")
        w("Every run: " + "; ".join(f"{r['position']}/{int(r['store']):,}/r{r['round']}: p50 {r['p50_ms']:.3f} "
                                     f"p99 {r['p99_ms']:.3f}" for r in per_round))
        w("")
    cold = [r for r in rows if r["kind"] == "list" and warm(r)]
    if cold:
        w("Warm-up runs right after each server start (not in the target; the first touches of sled's page cache): "
          + "; ".join(f"{r['position']}/{int(r['store']):,}: p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms"
                      for r in cold))
        w("")

    # --- 2. durable import throughput ---------------------------------------------------------------------
    sleds = [r for r in rows if r["kind"] == "sled"]
    kps = [r for r in rows if r["kind"] == "import" and not warm(r)]
    baseline = [r for r in sleds if r["mode"] == "batch"]
    if sleds or kps:
        w("### Durable writes\n")
        w("| what | conns / batch | records | seconds | records/s | p50 ms | p99 ms | errors | detail |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sleds:
            detail = (f"record {r['record_bytes']} B + key {r['key_bytes']} B; apply {r['apply_s']:.2f} s, "
                      f"flush {r['flush_s']:.2f} s, fdatasync {r['fdatasync_s']:.2f} s over {r['rounds']:,} rounds")
            w(f"| sled_batch --mode {r['mode']} ({r['when']}) | {r['batch']} | {r['records']:,} | {r['seconds']:.1f} | "
              f"{r['records_per_s']:,.0f} | {r['round_p50_ms']:.2f} (round) | {r['round_p99_ms']:.2f} (round) | 0 | {detail} |")
        perf = perf_counts(os.path.join(os.path.dirname(path), "perf-stat-import-c64.txt"))
        for r in kps:
            note = ""
            if perf.get("syscalls:sys_enter_fdatasync"):
                syncs = perf["syscalls:sys_enter_fdatasync"]
                note = (f"perf stat on kps over the run: {syncs:,} fdatasync (≈ {r['requests'] / syncs:.1f} requests "
                        f"per group commit), {perf.get('syscalls:sys_enter_pwrite64', 0):,} pwrite64 and "
                        f"{perf.get('syscalls:sys_enter_sync_file_range', 0):,} sync_file_range "
                        f"(≈ {perf.get('syscalls:sys_enter_pwrite64', 0) / r['requests']:.2f} per request), "
                        f"{perf.get('context-switches', 0):,} context switches, "
                        f"{perf.get('task-clock', 0) / 1000:.1f} CPU s")
            w(f"| kps POST /v2.1/os-keypairs (import, wrk) | {r['conns']} | {r['requests']:,} | {r['duration_s']:.1f} | "
              f"{r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {note} |")
        w("")

    # --- targets ----------------------------------------------------------------------------------------------
    w("### Targets\n")
    w("| target | measured | goal | result |")
    w("|---|---:|---:|---|")
    if worst:
        ok = worst[1] <= LIST_TARGET and not any(f.startswith("list") for f in failures)
        w(f"| list page p50, {int(big):,} ÷ {int(small):,} key pairs, worst page ({worst[0]}) | {worst[1]:.2f}× | "
          f"≤ {LIST_TARGET}× | **{'PASS' if ok else 'FAIL'}** |")
        if not ok:
            failures.append("list latency")
    else:
        failures.append("list latency: not measured")
    if baseline and kps:
        base = statistics.mean(r["records_per_s"] for r in baseline)
        rps = kps[0]["rps"]
        ratio = rps / base
        ok = ratio >= IMPORT_TARGET and kps[0]["errors"] == 0
        w(f"| kps import req/s at {kps[0]['conns']} conns ÷ sled batched records/s (mean of {len(baseline)} runs, "
          f"{base:,.0f}/s) | {ratio:.1%} | ≥ {IMPORT_TARGET:.0%} | **{'PASS' if ok else 'FAIL'}** |")
        if not ok:
            failures.append("import throughput")
    else:
        failures.append("import throughput: not measured")
    w("")
    w(f"OVERALL: {'PASS' if not failures else 'FAIL (' + ', '.join(failures) + ')'}")
    print("\n".join(lines))
    return 0 if not failures else 1


def main(argv):
    commands = {"wrk": wrk, "sled": sled, "check-page": check_page, "walk": walk, "report": report}
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
