#!/usr/bin/env python3
"""Summarises a soak run (bench/soak.sh): summary.md and summary.json.

    soak-report.py RESULT_DIR

Reads rss.csv (elapsed_s,process,pid,rss_kib), fanout.json (the load
generator's fan-out line: lost, duplicates), churn.jsonl (churn and recovery
runs), jsz.json (JetStream at the end) and, when the soak sampled it,
nats-heap.csv (nats-server's Go runtime.MemStats). Memory per process: the mean RSS
of the first quarter of the run after its warm-up against the mean of the
last quarter (the warm-up is the room log's retention, meta.json's
rooms_max_age_secs, while the log fills up to its steady size, at most half
the run; the first quarter of the whole run is reported too), and a
least-squares slope over the second half (MiB per hour), which says whether
memory still grows once warm, and one over the last 30 minutes. A process
is **flat** when its last-30-minute slope is at most FLAT_MIB_PER_H (2 MiB/h,
i.e. < 48 MiB a day) and it did not grow by more than 10 % and 8 MiB from
the first quarter to the last (for nats-server, a Go process, the window
rule reads its live heap from nats-heap.csv when its RSS breaks it).
Exit status 1 if anything was lost or
duplicated, a recovery failed, or a server process is not flat. With
streams.csv (the JetStream streams' message counts sampled during the run),
the counts at the start, the middle and the end of each stream.
"""

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

GROWTH_SHARE = 0.10
GROWTH_KIB = 8 * 1024
FLAT_MIB_PER_H = 2.0
LAST_SECS = 1800
# Windows whose lowest and highest RSS are compared: nats-server's Go
# garbage collector draws a sawtooth (tens of MiB, minutes apart), and a
# least-squares slope over 30 minutes that are not a whole number of its
# periods follows the phase, not a trend. Its floors and peaks per window
# do not.
WINDOW_SECS = 600


def slope_per_hour(points):
    """Least-squares slope of (seconds, KiB) points, in MiB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    num = sum((t - mx) * (v - my) for t, v in points)
    return num / den * 3600 / 1024


def window_extremes(pts, warm):
    """The lowest and the highest (seconds, value) of each whole
    WINDOW_SECS window after `warm` (the last window may be a few samples:
    left out)."""
    windows = defaultdict(list)
    for t, v in pts:
        if t >= warm:
            windows[int((t - warm) // WINDOW_SECS)].append((t, v))
    whole = [w for _, w in sorted(windows.items())
             if w[-1][0] - w[0][0] >= WINDOW_SECS * 0.8]
    floors = [min(w, key=lambda p: p[1]) for w in whole]
    peaks = [max(w, key=lambda p: p[1]) for w in whole]
    return floors, peaks


def go_heap(out, warm):
    """nats-server's Go heap over the run (nats-heap.csv, sampled from its
    runtime.MemStats): per window the lowest and highest HeapAlloc (live
    objects plus garbage not yet collected: its floors follow the live
    heap) and the memory the runtime holds without objects in it (HeapIdle
    not yet released to the OS), in MiB, with the floors' slope."""
    path = out / "nats-heap.csv"
    if not path.exists():
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("heap_alloc")]
    if not rows:
        return None
    kib = lambda r, k: int(r[k]) / 1024
    alloc = [(int(r["elapsed_s"]), kib(r, "heap_alloc")) for r in rows]
    held = [(int(r["elapsed_s"]), kib(r, "heap_idle") - kib(r, "heap_released")) for r in rows]
    floors, peaks = window_extremes(alloc, warm)
    held_floors, held_peaks = window_extremes(held, warm)
    mib = lambda xs: [round(v / 1024, 1) for _, v in xs]
    return {"heap_alloc_floors_mib": mib(floors), "heap_alloc_peaks_mib": mib(peaks),
            "heap_alloc_floor_slope_mib_per_h": round(slope_per_hour(floors), 2),
            "heap_alloc_peak_slope_mib_per_h": round(slope_per_hour(peaks), 2),
            "held_idle_floors_mib": mib(held_floors), "held_idle_peaks_mib": mib(held_peaks),
            "sys_end_mib": round(kib(rows[-1], "sys") / 1024, 1)}


def main():
    out = Path(sys.argv[1])
    series = defaultdict(list)
    with open(out / "rss.csv") as f:
        for row in csv.DictReader(f):
            rss = int(row["rss_kib"])
            if rss > 0:
                series[row["process"]].append((int(row["elapsed_s"]), rss))
    end = max((t for s in series.values() for t, _ in s), default=0)
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    warm = min(int(meta.get("rooms_max_age_secs", 0) or 0), end / 2)
    q = end / 4
    wq = warm + (end - warm) / 4

    memory = {}
    for name, pts in sorted(series.items()):
        first = [v for t, v in pts if warm <= t <= wq]
        run_first = [v for t, v in pts if t <= q]
        last = [v for t, v in pts if t >= end - q]
        second_half = [(t, v) for t, v in pts if t >= end / 2]
        last_30 = [(t, v) for t, v in pts if t >= end - LAST_SECS]
        start5 = [v for t, v in pts if t <= 300]
        end5 = [v for t, v in pts if t >= end - 300]
        floors, peaks = window_extremes(pts, warm)
        f_mean = sum(first) / len(first) if first else 0
        l_mean = sum(last) / len(last) if last else 0
        memory[name] = {
            "samples": len(pts),
            "run_first_quarter_mib": round(sum(run_first) / len(run_first) / 1024, 1)
            if run_first else None,
            "first_quarter_mib": round(f_mean / 1024, 1),
            "last_quarter_mib": round(l_mean / 1024, 1),
            "growth_pct": round((l_mean - f_mean) / f_mean * 100, 1) if f_mean else None,
            "max_mib": round(max(v for _, v in pts) / 1024, 1),
            "second_half_slope_mib_per_h": round(slope_per_hour(second_half), 2),
            "last_30min_slope_mib_per_h": round(slope_per_hour(last_30), 2),
            "window_floors_mib": [round(v / 1024, 1) for _, v in floors],
            "window_peaks_mib": [round(v / 1024, 1) for _, v in peaks],
            "floor_slope_mib_per_h": round(slope_per_hour(floors), 2),
            "peak_slope_mib_per_h": round(slope_per_hour(peaks), 2),
            "first_5min_mib": round(sum(start5) / len(start5) / 1024, 1) if start5 else None,
            "last_5min_mib": round(sum(end5) / len(end5) / 1024, 1) if end5 else None,
        }

    fan = {}
    try:
        fan = json.loads((out / "fanout.json").read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        fan = {"error": "no fan-out result"}
    churn = []
    if (out / "churn.jsonl").exists():
        for line in (out / "churn.jsonl").read_text().splitlines():
            try:
                churn.append(json.loads(line))
            except ValueError:
                churn.append({"error": line[:200]})
    rec = [c for c in churn if c.get("scenario") == "recover-replay"]
    idle = [c for c in churn if str(c.get("scenario", "")).startswith("idle")]
    errors = [c for c in churn if "error" in c]
    recoveries = {
        "runs": len(rec),
        "recovered": sum(1 for c in rec if c.get("recovered")),
        "missed": sum(c.get("missed", 0) or 0 for c in rec),
        "replayed": sum(c.get("replayed", 0) or 0 for c in rec),
    }
    churn_sum = {
        "runs": len(idle),
        "connected": sum(c.get("connected", 0) or 0 for c in idle),
        "failed": sum(c.get("failed", 0) or 0 for c in idle),
        "errors": len(errors),
    }
    streams = []
    try:
        jsz = json.loads((out / "jsz.json").read_text())
        for acc in jsz.get("account_details", []):
            for s in acc.get("stream_detail", []):
                st = s.get("state", {})
                streams.append({"name": s.get("name"), "messages": st.get("messages"),
                                "bytes": st.get("bytes")})
    except (OSError, ValueError):
        pass

    def trending(m):
        # The last 30 minutes' slope, unless the per-window floors and peaks
        # (at least three windows) show no trend: then the slope followed a
        # sawtooth's phase.
        if m["last_30min_slope_mib_per_h"] <= FLAT_MIB_PER_H:
            return False
        if len(m["window_floors_mib"]) < 3:
            return True
        return (m["floor_slope_mib_per_h"] > FLAT_MIB_PER_H
                or m["peak_slope_mib_per_h"] > FLAT_MIB_PER_H)

    nats_heap = go_heap(out, warm)

    def live_heap_flat(name):
        # nats-server's RSS is its Go garbage collector's sawtooth, and the
        # runtime keeps freed heap until its scavenger returns it: even the
        # lowest RSS of a window says when pages were last given back, not
        # what the server holds. What it holds is its live heap, the lowest
        # HeapAlloc of each window (sampled after collections); with that
        # flat, its RSS stays within the collector's headroom over it.
        h = nats_heap if name == "nats" else None
        return (h is not None and len(h["heap_alloc_floors_mib"]) >= 3
                and h["heap_alloc_floor_slope_mib_per_h"] <= FLAT_MIB_PER_H)

    def quarter_growth(m):
        return (m["last_quarter_mib"] - m["first_quarter_mib"] > GROWTH_KIB / 1024
                and (m["growth_pct"] or 0) > GROWTH_SHARE * 100)

    servers = [n for n in memory if n != "loadgen"]
    grew = [n for n in servers if quarter_growth(memory[n])
            or (trending(memory[n]) and not live_heap_flat(n))]
    # Flagged by their RSS slopes alone, their live heap flat: reported.
    sawtooth_only = [n for n in servers if n not in grew and trending(memory[n])]
    stream_series = defaultdict(list)
    if (out / "streams.csv").exists():
        with open(out / "streams.csv") as f:
            for row in csv.DictReader(f):
                stream_series[row["stream"]].append(
                    (int(row["elapsed_s"]), int(row["messages"]), int(row["bytes"])))
    stream_trend = {}
    for name, pts in sorted(stream_series.items()):
        mid = min(pts, key=lambda p: abs(p[0] - end / 2))
        stream_trend[name] = {"start": pts[0][1], "middle": mid[1], "end": pts[-1][1],
                              "max": max(p[1] for p in pts), "end_bytes": pts[-1][2]}
    api = []
    if (out / "api.csv").exists():
        with open(out / "api.csv") as f:
            api = [(int(r["elapsed_s"]), int(r["api_total"]), int(r["api_errors"]))
                   for r in csv.DictReader(f) if r["api_total"]]
    # When the API errors happened: the sample times at which the count rose.
    api_error_times = [t for (t, _, e), (_, _, pe) in zip(api[1:], api) if e > pe]
    step = (fan.get("steps") or [{}])[0]
    lost = fan.get("lost")
    dups = fan.get("duplicates")
    ok = (lost == 0 and dups == 0 and not grew and "error" not in fan
          and recoveries["recovered"] == recoveries["runs"]
          and recoveries["replayed"] == recoveries["missed"])
    summary = {"secs": end, "memory": memory, "fanout": {k: fan.get(k) for k in (
        "lost", "lost_on_dropped_clients", "duplicates", "error")},
        "sent": step.get("sent"), "acked": step.get("acked"),
        "expected_deliveries": fan.get("expected_deliveries"),
        "received_deliveries": fan.get("received_deliveries"),
        "recoveries": recoveries, "churn": churn_sum, "streams": streams,
        "nats_go_heap": nats_heap,
        "stream_messages": stream_trend, "grew": grew,
        "rss_trend_live_heap_flat": sawtooth_only, "ok": ok,
        "jetstream_api": {"requests": api[-1][1] if api else None,
                          "errors": api[-1][2] if api else None,
                          "errors_at_start": api[0][2] if api else None,
                          "error_rose_at_secs": api_error_times}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    lines = [f"# Soak {out.name}", "",
             f"{end} s of steady fan-out with churn and recoveries (bench/soak.sh). "
             f"Verdict: **{'pass' if ok else 'FAIL'}**.", "",
             f"Flat: first to last quarter growth <= {GROWTH_SHARE * 100:.0f} % or "
             f"{GROWTH_KIB // 1024} MiB, the quarters taken after a warm-up of {warm:.0f} s "
             f"(the room log's retention, {meta.get('rooms_max_age', 'default')}: the log fills "
             f"up meanwhile), and a last-30-minute slope <= {FLAT_MIB_PER_H} MiB/h, or, for a "
             f"sawtooth (a garbage collector's), the slopes of the lowest and of the highest "
             f"RSS of each {WINDOW_SECS // 60}-minute window after the warm-up (at least three "
             f"windows) both <= {FLAT_MIB_PER_H} MiB/h. For nats-server, whose Go runtime keeps "
             f"freed heap until its scavenger returns it, the window rule is applied to its live "
             f"heap (the lowest HeapAlloc per window) when its RSS breaks it; the quarter rule "
             f"still applies to its RSS.", "",
             "| process | first 5 min MiB | last 5 min MiB | run's first quarter MiB "
             "| first quarter after warm-up MiB | last quarter MiB "
             "| growth | max MiB | 2nd-half slope MiB/h | last-30-min slope MiB/h |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, m in memory.items():
        lines.append(f"| {n} | {m['first_5min_mib']} | {m['last_5min_mib']} | "
                     f"{m['run_first_quarter_mib']} | "
                     f"{m['first_quarter_mib']} | {m['last_quarter_mib']} | "
                     f"{m['growth_pct']} % | {m['max_mib']} | {m['second_half_slope_mib_per_h']} | "
                     f"{m['last_30min_slope_mib_per_h']} |")
    lines += ["", f"Lowest / highest RSS per {WINDOW_SECS // 60}-minute window after the "
              "warm-up (MiB), and their slopes:", ""]
    for n, m in memory.items():
        lines.append(f"- {n}: floors {m['window_floors_mib']} "
                     f"({m['floor_slope_mib_per_h']} MiB/h), peaks {m['window_peaks_mib']} "
                     f"({m['peak_slope_mib_per_h']} MiB/h)")
    if nats_heap:
        h = nats_heap
        lines += ["", f"nats-server's Go heap per window (runtime.MemStats, MiB): HeapAlloc floors "
                  f"{h['heap_alloc_floors_mib']} ({h['heap_alloc_floor_slope_mib_per_h']} MiB/h), "
                  f"peaks {h['heap_alloc_peaks_mib']} ({h['heap_alloc_peak_slope_mib_per_h']} MiB/h); "
                  f"idle heap the runtime still holds (HeapIdle - HeapReleased): lowest "
                  f"{h['held_idle_floors_mib']}, highest {h['held_idle_peaks_mib']}; Sys at the end "
                  f"{h['sys_end_mib']}."]
    lines += ["", f"Sends: {step.get('sent')} sent, {step.get('acked')} acked; deliveries "
              f"{fan.get('received_deliveries')}/{fan.get('expected_deliveries')}.",
              f"Fan-out: lost {lost}, lost on dropped clients "
              f"{fan.get('lost_on_dropped_clients')}, duplicates {dups}"
              + (f", error: {fan['error']}" if "error" in fan else "") + ".",
              f"Recoveries: {recoveries['recovered']}/{recoveries['runs']} recovered, "
              f"{recoveries['replayed']}/{recoveries['missed']} missed events replayed.",
              f"Churn: {churn_sum['runs']} rounds, {churn_sum['connected']} connections opened "
              f"and closed, {churn_sum['failed']} failed, {churn_sum['errors']} runs errored."]
    if streams:
        lines += ["", "Streams at the end: " + ", ".join(
            f"{s['name']} {s['messages']} msgs / {s['bytes']} B" for s in streams) + "."]
    if stream_trend:
        lines += ["", "Stream messages over the run (start / middle / end, max): " + ", ".join(
            f"{n} {t['start']} / {t['middle']} / {t['end']} ({t['max']})"
            for n, t in stream_trend.items()) + "."]
    if api:
        lines += ["", f"JetStream API: {api[-1][1]} requests, {api[-1][2]} errors "
                  f"({api[0][2]} by the first sample, at {api[0][0]} s); the count rose at "
                  + (", ".join(f"{t} s" for t in api_error_times) or "no later sample") + "."]
    if sawtooth_only:
        lines += ["", "RSS slopes over 2 MiB/h, live heap flat (not counted as growth): "
                  + ", ".join(sawtooth_only) + "."]
    if grew:
        lines += ["", "Grew: " + ", ".join(grew) + "."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
