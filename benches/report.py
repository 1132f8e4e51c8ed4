#!/usr/bin/env python3
"""Helpers of benches/bench.sh: count HTTP requests in an `oras --debug` log, render the tables and
the verdicts on the targets.

  report.py count LOG
      Prints "<total>\t<breakdown>" for the `[debug] METHOD URL -> STATUS` lines of LOG
      (one per HTTP request), the breakdown as "n× METHOD kind status; ...", most frequent
      first.

  report.py table RAW METRICS COMPARE
      Markdown tables from the measurements:
        RAW      key \t seconds \t peak_rss_kib \t status \t cpu_s \t registry_cpu_s
                 (one line per timed run; the two CPU times: of the tool, of the registries meanwhile)
        METRICS  key \t name \t value                         (tags, requests, breakdown, summary)
        COMPARE  key \t skopeo_key \t floor_key \t first_key  ("-" where none)
      A key is "scenario|operation|tool". After the tables, the targets of issue 5 that the rows
      measure, each with the figure and whether it is met.
"""

import os
import re
import statistics
import sys
from collections import Counter, OrderedDict

DEBUG = re.compile(r"^\[debug\] (\S+) (\S+)(?: \[[^\]]*\])* -> (\S+)")


def kind(url):
    path = re.sub(r"^https?://[^/]+", "", url)
    path, _, query = path.partition("?")
    if path in ("/v2", "/v2/"):
        return "ping /v2/"
    if path.endswith("/tags/list"):
        return "tags/list"
    if path.endswith("/_catalog"):
        return "catalog"
    if "/referrers/" in path:
        return "referrers API"
    if "/blobs/uploads/" in path:
        if "mount=" in query:
            return "blob mount"
        return "blob upload" if path.endswith("/blobs/uploads/") else "blob upload session"
    if "/blobs/" in path:
        return "blob"
    m = re.search(r"/manifests/(.+)$", path)
    if m:
        ref = m.group(1)
        if re.fullmatch(r"sha256-[0-9a-f]{64}", ref):
            return "manifest by schema tag sha256-<hex>"
        if ref.startswith("sha256:"):
            return "manifest by digest"
        return "manifest by tag"
    if "token" in path:
        return "token"
    return "other"


def count(path):
    c = Counter()
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            m = DEBUG.match(line)
            if not m:
                continue
            total += 1
            method, url, status = m.groups()
            c[f"{method} {kind(url)} {status}"] += 1
    breakdown = "; ".join(f"{n}× {k}" for k, n in c.most_common())
    print(f"{total}\t{breakdown}")


def read_tsv(path, width):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            parts += ["-"] * (width - len(parts))
            rows.append(parts[:width])
    return rows


def fmt_s(x):
    if x is None:
        return "–"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}×"


def table(raw_path, metrics_path, compare_path):
    runs = OrderedDict()
    rss = {}
    cpus = {}
    fails = Counter()
    for key, secs, kib, status, cpu, regcpu in read_tsv(raw_path, 6):
        runs.setdefault(key, [])
        if status == "ok":
            runs[key].append(float(secs))
            rss[key] = max(rss.get(key, 0), int(kib or 0))
            if cpu != "-" and regcpu != "-":
                cpus.setdefault(key, []).append((float(cpu), float(regcpu)))
        else:
            fails[key] += 1
    metrics = {}
    for key, name, value in read_tsv(metrics_path, 3):
        metrics[(key, name)] = value
    compare = {k: (s, f, b) for k, s, f, b in read_tsv(compare_path, 4)}

    def median(key):
        """The median run; for a floor, its fastest run: a floor is the least the work takes, and
        on this VM a run that writes into memory the host took back can take 4x longer."""
        v = runs.get(key)
        if not v:
            return None
        return min(v) if "floor" in key.split("|", 2)[2] else statistics.median(v)

    scenarios = OrderedDict()
    for key in runs:
        scen, op, tool = key.split("|", 2)
        scenarios.setdefault(scen, []).append((op, tool, key))

    out = []
    for scen, rows in scenarios.items():
        title = metrics.get((scen, "title"), scen)
        out.append(f"### Scenario {scen}: {title}")
        out.append("")
        out.append(
            "| operation | tool | median s (runs) | vs skopeo | vs curl floor | % of first run | peak RSS MiB "
            "| CPU s: tool + registry | tags | ms/tag | HTTP req/tag | notes |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for op, tool, key in rows:
            m = median(key)
            n_ok = len(runs[key])
            s_key, f_key, b_key = compare.get(key, ("-", "-", "-"))
            vs_sk = fmt_ratio(m, median(s_key)) if s_key != "-" else ""
            vs_fl = fmt_ratio(m, median(f_key)) if f_key != "-" else ""
            pct = ""
            if b_key != "-" and m is not None and median(b_key):
                pct = f"{100 * m / median(b_key):.0f}%"
            tags = metrics.get((key, "tags")) or metrics.get((scen, "tags"))
            per_tag = ""
            req_tag = ""
            if tags and tags != "-" and m is not None:
                per_tag = f"{1000 * m / int(tags):.2f}"
            req = metrics.get((key, "requests"))
            if req and tags and tags != "-":
                req_tag = f"{int(req) / int(tags):.1f} ({req})"
            elif req:
                req_tag = f"({req} total)"
            notes = []
            if fails[key]:
                notes.append(f"**{fails[key]} run(s) FAILED**")
            if metrics.get((key, "summary")):
                notes.append(metrics[(key, "summary")])
            if metrics.get((key, "note")):
                notes.append(metrics[(key, "note")])
            rss_mib = f"{rss[key] / 1024:.0f}" if key in rss else "–"
            cpu = ""
            if cpus.get(key):
                tool_cpu = statistics.median(c for c, _ in cpus[key])
                reg_cpu = statistics.median(r for _, r in cpus[key])
                cpu = f"{tool_cpu:.2f} + {reg_cpu:.2f}"
            out.append(
                f"| {op} | {tool} | {fmt_s(m)} ({n_ok}) | {vs_sk} | {vs_fl} | {pct} | {rss_mib} | {cpu} "
                f"| {tags if tags and tags != '-' else ''} | {per_tag} | {req_tag} | {' '.join(notes)} |"
            )
        out.append("")
        breakdowns = [(k, v) for (k, name), v in metrics.items() if name == "breakdown" and k.startswith(scen + "|")]
        if breakdowns:
            out.append(f"HTTP requests of `oras --debug` runs in scenario {scen}, by kind:")
            out.append("")
            for k, v in breakdowns:
                _, op, tool = k.split("|", 2)
                tags = metrics.get((k, "tags")) or metrics.get((scen, "tags"))
                per = f", {tags} tags" if tags and tags != "-" else ""
                out.append(f"- {op}, {tool} ({metrics.get((k, 'requests'), '?')} requests{per}): {v}")
            out.append("")
    def cpu_floor(key):
        """The least wall time the CPU work measured in a run allows: (tool + registry CPU) / cores."""
        v = cpus.get(key)
        if not v:
            return None
        return statistics.median(c + r for c, r in v) / (os.cpu_count() or 1)

    out.extend(targets(median, rss, metrics, compare, cpu_floor))
    print("\n".join(out))


def targets(median, rss, metrics, compare, cpu_floor=lambda key: None):
    """The issue's targets, judged from the medians: a table of what was measured and whether it is met,
    with, for the timed ones, the bound this machine sets: the best the target's ratio could be if
    the run took no longer than the CPU work it measured (its own and the registry's, spread over
    every core), or than the curl floor of the same transfers."""
    rows = []

    def slowest(candidates):
        """The largest of the (seconds, why) lower bounds that were measured, or None."""
        return max(((x, why) for x, why in candidates if x), default=None)

    def faster(label, key, other, at_least):
        a, b = median(key), median(other)
        if a and b:
            least = cpu_floor(key)
            bound = f"at most {b / least:.2f}x (CPU: oras + registry)" if least else ""
            rows.append((label, f"{b / a:.2f}x", b / a >= at_least, bound))

    def within(label, key, floor, at_most, others=()):
        """`others`: (key, why) of the floors of other work the operation cannot avoid."""
        a, b = median(key), median(floor)
        if a and b:
            least = slowest([(cpu_floor(key), "CPU: oras + registry")] + [(median(k), why) for k, why in others])
            bound = ""
            if least:
                x, why = least
                bound = f"at best {max(x, b) / b:.2f}x the floor ({why})"
            rows.append((label, f"{a / b:.2f}x the floor", a / b <= at_most, bound))

    faster("backup of (a) to .tar at least 3x faster than skopeo", "a|backup to .tar|oras",
           "a|backup to .tar|skopeo copy oci-archive:", 3)
    faster("backup of (a) to a directory at least 1.5x faster than skopeo", "a|backup to directory|oras",
           "a|backup to directory|skopeo copy oci:", 1.5)
    for where in ("to .tar", "to directory"):
        within(f"backup of (a) {where} within 2x of the curl floor", f"a|backup {where}|oras",
               "a|fetch the blobs|curl floor", 2)
    faster("restore of (a) at least 2x faster than skopeo", "a|restore from .tar|oras",
           "a|restore from .tar|skopeo copy oci-archive:", 2)
    for scen in ("a", "a-big"):
        within(f"backup of ({scen}) to .tar within 1.3x of the fsync'd disk floor", f"{scen}|backup to .tar|oras",
               f"{scen}|write the bytes to disk|dd conv=fsync floor", 1.3,
               ((f"{scen}|fetch the blobs|curl floor", "the curl fetch floor"),
                (f"{scen}|hash the largest blob|sha256 floor (openssl dgst)", "hashing the largest blob on one core")))
    for where in (".tar", "directory"):
        key = f"a|backup to {where}, other data unwritten|oras"
        a, b = median(key), median(f"a|backup to {where}|oras")
        if a and b:
            rows.append((f"backup of (a) to {where} beside another program's unflushed data within 1.15x of a clean one",
                         f"{a / b:.2f}x", a / b <= 1.15, ""))
    faster("(d) backup with referrers at least 5x faster than skopeo sync (tags only)",
           "d|backup to directory|oras --include-referrers", "d|backup to directory|skopeo sync (tags only)", 5)
    faster("(d) backup, tags only, at least 5x faster than skopeo sync", "d|backup to directory|oras (tags only)",
           "d|backup to directory|skopeo sync (tags only)", 5)
    faster("(d) restore with referrers at least 3x faster than skopeo sync (tags only)", "d|restore from directory|oras restore",
           "d|restore from directory|skopeo sync dir: (tags only)", 3)
    for scen, limit in (("a", 64), ("a-big", 64), ("d", 128)):
        peaks = [v for k, v in rss.items() if k.startswith(scen + "|") and k.split("|")[2].startswith("oras")]
        if peaks:
            rows.append((f"peak RSS of oras in ({scen}) under {limit} MiB", f"{max(peaks) / 1024:.0f} MiB",
                         max(peaks) < limit * 1024, ""))
    small = [v for k, v in rss.items() if k.startswith("a|") and k.split("|")[2].startswith("oras")]
    big = [v for k, v in rss.items() if k.startswith("a-big|") and k.split("|")[2].startswith("oras")]
    if small and big:
        # A few MiB either way are the allocator's, not buffering that grows with the blobs.
        rows.append(("peak RSS not growing with blob size (a-big against a)",
                     f"{max(big) / 1024:.0f} / {max(small) / 1024:.0f} MiB", max(big) <= max(small) * 1.25 + 4096, ""))
    for key, (_, _, first) in compare.items():
        scen, op, tool = key.split("|", 2)
        if not op.startswith("second") or not tool.startswith("oras") or first == "-":
            continue
        m, f = median(key), median(first)
        if m is None or not f:
            continue
        summary = metrics.get((key, "summary"), "")
        no_bytes = "(0 B copied" in summary or "(0 B uploaded" in summary
        share = 0.15 if scen == "d" else 0.10
        # The least a second run can take: the CPU work it measured, or curl making the same
        # conditional requests, whichever is longer.
        least = slowest([(cpu_floor(key), "CPU: oras + registry")]
                        + [(median(k), "the curl floor") for k in compare if k.startswith(f"{scen}|{op}|curl floor")])
        bound = f"at best {100 * least[0] / f:.1f}% ({least[1]})" if least else ""
        rows.append((f"({scen}) {op}: under {share:.0%} of the first run, no blob bytes",
                     f"{100 * m / f:.1f}%, {'no blob bytes' if no_bytes else 'blob bytes moved'}",
                     m / f < share and no_bytes, bound))
    per_tag = []
    for key in list(compare):
        scen, op, tool = key.split("|", 2)
        tags = metrics.get((key, "tags"))
        if scen == "c" and op.startswith("backup to .tar") and tool == "oras" and tags and median(key):
            per_tag.append((int(tags), 1000 * median(key) / int(tags)))
    if len(per_tag) > 1:
        per_tag.sort()
        shown = " / ".join(f"{t:.2f}" for _, t in per_tag)
        # Linear or better: the time per tag at the largest size is not above the smallest's (with noise).
        growth = per_tag[-1][1] / per_tag[0][1]
        rows.append((f"(c) time grows no faster than the tag count ({' / '.join(str(n) for n, _ in per_tag)} tags)",
                     f"{shown} ms per tag", growth <= 1.3, ""))
    if not rows:
        return []
    out = ["### Targets, judged from the medians above", ""]
    if os.environ.get("BENCH_MODE") == "quick":
        out += ["Quick mode: the sizes are far below the issue's, so these verdicts only exercise the script.", ""]
    out += ["| target | measured | met | bound on this machine |", "|---|---|---|---|"]
    out += [f"| {label} | {value} | {'yes' if ok else '**no**'} | {bound} |" for label, value, ok, bound in rows]
    out.append("")
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "count" and len(sys.argv) == 3:
        count(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "table" and len(sys.argv) == 5:
        table(*sys.argv[2:5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
