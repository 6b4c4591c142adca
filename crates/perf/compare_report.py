#!/usr/bin/env python3
"""Tables and plots for crates/perf/compare.sh.

  compare_report.py line JSON_LINE      one-line summary of one raw result (for progress)
  compare_report.py report RAW.jsonl OUT.md [--plots DIR] [--header TEXT]

The raw file holds one JSON object per run: {"round", "scenario", "broker", "rc", "result"}.
The report gives, for each scenario and figure, the median over the rounds for each broker
and the ratio warren / RabbitMQ. matplotlib is only needed for --plots.
"""

import json
import statistics
import sys
from collections import defaultdict

BROKERS = ("warren", "rabbitmq")
NAMES = {"warren": "warren", "rabbitmq": "RabbitMQ"}
SIZES = (("16B", "16 B"), ("1KiB", "1 KiB"), ("64KiB", "64 KiB"))
MODES = (("publish", "publish only"), ("consume", "consume only (pre-filled)"),
         ("e2e", "end to end (1 producer + 1 consumer)"))
PCTS = (("p50", "p50"), ("p95", "p95"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))


def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return None
        d = d[k]
    return d


def figures(scenario):
    """(label, path in the result, unit, scale, higher_is_better) for a scenario."""
    if scenario.startswith("transient-"):
        mode = scenario.rsplit("-", 1)[1]
        if mode == "publish":
            return [("published", "publish_rate", "msg/s", 1, True)]
        if mode == "consume":
            return [("consumed", "consume_rate", "msg/s", 1, True)]
        return [("consumed", "consume_rate", "msg/s", 1, True),
                ("published", "publish_rate", "msg/s", 1, True)]
    if scenario.startswith("persistent-"):
        return [("confirmed", "confirm_rate", "msg/s", 1, True)]
    if scenario.startswith("flow-"):
        return [("consumed", "consume_rate", "msg/s", 1, True),
                ("published", "publish_rate", "msg/s", 1, True),
                ("broker RSS at the end", "broker_rss_bytes", "MB", 1e-6, False)]
    if scenario.startswith("fanout"):
        return [("published", "publish_rate", "msg/s", 1, True),
                ("delivered (all queues)", "consume_rate", "msg/s", 1, True)]
    if scenario.startswith("latency-"):
        return [(label, f"latency_us.{k}", "ms", 1e-3, False) for k, label in PCTS]
    if scenario.startswith("connections"):
        return [("RSS per connection", "rss_per_connection", "KiB", 1 / 1024, False),
                ("time to open all", "open_seconds", "s", 1, False),
                ("opened", "opened", "", 1, True)]
    if scenario.startswith("stream-"):
        return [("fill (confirmed)", "fill_rate", "msg/s", 1, True),
                ("read from first (disk)", "read_rate", "msg/s", 1, True),
                ("RSS with the stream", "filled.rss_bytes", "MB", 1e-6, False),
                ("RSS after the read", "after_read.rss_bytes", "MB", 1e-6, False),
                ("RSS with 100 readers", "with_readers.rss_bytes", "MB", 1e-6, False),
                ("disk with the stream", "filled.disk_bytes", "MB", 1e-6, False)]
    if scenario == "backlog":
        return [("fill (confirmed)", "fill.fill_rate", "msg/s", 1, True),
                ("RSS with the backlog", "fill.filled.rss_bytes", "MB", 1e-6, False),
                ("disk with the backlog", "fill.filled.disk_bytes", "MB", 1e-6, False),
                ("restart until served", "restart_seconds", "s", 1, False),
                ("RSS after restart", "rss_restarted", "MB", 1e-6, False),
                ("drain", "drain.drain_rate", "msg/s", 1, True)]
    return []


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "msg/s":
        if v >= 1e6:
            return f"{v / 1e6:.2f} M"
        if v >= 1e3:
            return f"{v / 1e3:.1f} k"
        return f"{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    runs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return runs


def line(raw):
    """One-line summary of one run."""
    run = json.loads(raw)
    res = run.get("result") or {}
    parts = []
    for label, path, unit, scale, _ in figures(run["scenario"]):
        v = get(res, path)
        if v is not None and label != "opened":
            parts.append(f"{label} {fmt(v * scale, unit)} {unit}".rstrip())
    for k in ("tool_cpu_pct", "broker_cpu_pct"):
        if get(res, k) is not None:
            parts.append(f"{k.split('_')[0]} cpu {res[k]:.0f}%")
    if get(res, "errors"):
        parts.append(f"ERRORS {res['errors']}")
    if run.get("rc"):
        parts.append(f"EXIT {run['rc']}")
    return ", ".join(parts) or "no result"


def medians(runs):
    """{scenario: {broker: {path: median}}}, plus run counts and failures."""
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    counts = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    order = []
    for run in runs:
        sc, br = run["scenario"], run["broker"]
        if sc not in order:
            order.append(sc)
        res = run.get("result") or {}
        ok = run.get("rc", 0) == 0 and not get(res, "errors") and not get(res, "failed")
        counts[sc][br][0] += 1
        counts[sc][br][1] += 0 if ok else 1
        for _, path, _, _, _ in figures(sc) + [("", "tool_cpu_pct", "", 1, 0),
                                               ("", "broker_cpu_pct", "", 1, 0)]:
            v = get(res, path)
            if isinstance(v, (int, float)):
                values[sc][br][path].append(float(v))
    med = {sc: {br: {p: statistics.median(v) for p, v in per.items() if v}
                for br, per in brs.items()} for sc, brs in values.items()}
    return order, med, counts


def table(order, med, counts):
    out = ["| scenario | figure | warren | RabbitMQ | warren / RabbitMQ |",
           "| --- | --- | ---: | ---: | ---: |"]
    notes = []
    for sc in order:
        for label, path, unit, scale, higher in figures(sc):
            if label == "opened":
                continue
            w = med.get(sc, {}).get("warren", {}).get(path)
            r = med.get(sc, {}).get("rabbitmq", {}).get(path)
            ratio = "-"
            if w is not None and r:
                ratio = f"{w / r:.2f}x" if w / r < 10 else f"{w / r:.0f}x"
            arrow = "higher is better" if higher else "lower is better"
            u = f" ({unit})" if unit else ""
            out.append(f"| {sc} | {label}{u}, {arrow} | {fmt(None if w is None else w * scale, unit)}"
                       f" | {fmt(None if r is None else r * scale, unit)} | {ratio} |")
        for br in BROKERS:
            n, bad = counts[sc][br]
            if bad:
                notes.append(f"- {sc} / {NAMES[br]}: {bad} of {n} runs failed or counted errors "
                             "(see the raw results and logs)")
    return out, notes


def cpu_table(order, med):
    out = ["| scenario | warren-perf CPU (vs warren) | warren CPU | warren-perf CPU (vs RabbitMQ) "
           "| RabbitMQ CPU |", "| --- | ---: | ---: | ---: | ---: |"]
    any_row = False
    for sc in order:
        w = med.get(sc, {}).get("warren", {})
        r = med.get(sc, {}).get("rabbitmq", {})
        if "tool_cpu_pct" not in w and "tool_cpu_pct" not in r:
            continue
        any_row = True

        def pct(d, k):
            return f"{d[k]:.0f} %" if k in d else "-"
        out.append(f"| {sc} | {pct(w, 'tool_cpu_pct')} | {pct(w, 'broker_cpu_pct')} | "
                   f"{pct(r, 'tool_cpu_pct')} | {pct(r, 'broker_cpu_pct')} |")
    return out if any_row else []


def plots(med, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plots", file=sys.stderr)
        return []
    made = []
    colors = {"warren": "#2a7ab0", "rabbitmq": "#f28c28"}
    if not any(sc.startswith("transient-") for sc in med):
        return made + latency_plot(med, outdir, plt, colors)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (mode, title) in zip(axes, MODES):
        xs = range(len(SIZES))
        for i, br in enumerate(BROKERS):
            path = "publish_rate" if mode == "publish" else "consume_rate"
            ys = [med.get(f"transient-{s}-{mode}", {}).get(br, {}).get(path, 0) for s, _ in SIZES]
            bars = ax.bar([x + (i - 0.5) * 0.38 for x in xs], ys, 0.38, label=NAMES[br],
                          color=colors[br])
            for b, y in zip(bars, ys):
                if y:
                    ax.annotate(fmt(y, "msg/s"), (b.get_x() + b.get_width() / 2, y),
                                ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [label for _, label in SIZES])
        ax.set_yscale("log")
        ax.set_title(f"transient, {title}", fontsize=10)
        ax.set_xlabel("body size")
        ax.set_ylabel("messages per second (median)")
        ax.legend()
    fig.tight_layout()
    path = f"{outdir}/throughput.png"
    fig.savefig(path, dpi=110)
    made.append(path)
    return made + latency_plot(med, outdir, plt, colors)


def latency_plot(med, outdir, plt, colors):
    made = []
    rates = [sc for sc in ("latency-1k", "latency-10k") if sc in med]
    if rates:
        fig, axes = plt.subplots(1, len(rates), figsize=(6.5 * len(rates), 4.8), squeeze=False)
        for ax, sc in zip(axes[0], rates):
            xs = range(len(PCTS))
            for i, br in enumerate(BROKERS):
                ys = [med.get(sc, {}).get(br, {}).get(f"latency_us.{k}", 0) / 1000 for k, _ in PCTS]
                bars = ax.bar([x + (i - 0.5) * 0.38 for x in xs], ys, 0.38, label=NAMES[br],
                              color=colors[br])
                for b, y in zip(bars, ys):
                    if y:
                        ax.annotate(fmt(y, "ms"), (b.get_x() + b.get_width() / 2, y),
                                    ha="center", va="bottom", fontsize=8)
            ax.set_xticks(list(xs), [label for _, label in PCTS])
            ax.set_yscale("log")
            rate = sc.split("-")[1]
            ax.set_title(f"end-to-end latency at {rate} msg/s, 16 B", fontsize=10)
            ax.set_ylabel("milliseconds (median over rounds)")
            ax.legend()
        fig.tight_layout()
        path = f"{outdir}/latency.png"
        fig.savefig(path, dpi=110)
        made.append(path)
    return made


def report(raw, out, plot_dir, header):
    runs = load(raw)
    order, med, counts = medians(runs)
    rows, notes = table(order, med, counts)
    text = []
    if header:
        text += [header, ""]
    text += rows
    if notes:
        text += ["", "Failures:", ""] + notes
    cpu = cpu_table(order, med)
    if cpu:
        text += ["", "CPU over each throughput/latency run (median, percent of one core; "
                 "the machine has 2 cores shared by the tool and the broker):", ""] + cpu
    made = plots(med, plot_dir) if plot_dir else []
    if made:
        text += ["", "Plots: " + ", ".join(p.rsplit("/", 1)[-1] for p in made)]
    with open(out, "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "line":
        print(line(args[1]))
    elif len(args) >= 3 and args[0] == "report":
        plot_dir = header = None
        rest = args[3:]
        while rest:
            if rest[0] == "--plots" and len(rest) > 1:
                plot_dir, rest = rest[1], rest[2:]
            elif rest[0] == "--header" and len(rest) > 1:
                header, rest = rest[1], rest[2:]
            else:
                sys.exit(f"unknown argument {rest[0]}")
        report(args[1], args[2], plot_dir, header)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
