#!/usr/bin/env python3
"""Prints the criterion results of `cargo bench --bench dataplane` as a Markdown table of
ns/frame and Mframes/s (from target/criterion/*/*/new/{estimates,benchmark}.json)."""
import json, pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
rows = []
for est in sorted(root.glob("*/*/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    elements = (bench.get("throughput") or {}).get("Elements", 1)
    ns = json.loads(est.read_text())["median"]["point_estimate"] / elements
    rows.append((bench["full_id"], ns))
if not rows:
    sys.exit(f"no results under {root}: run `cargo bench --bench dataplane` first")
print("| benchmark | ns/frame | Mframes/s |")
print("|---|---:|---:|")
for name, ns in rows:
    print(f"| {name} | {ns:.1f} | {1e3 / ns:.1f} |")
