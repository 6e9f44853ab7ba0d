"""Example algorithm: per-city temperature and rain statistics of the weather dataset.

It reads every CSV under /data/inputs (the layout brizo gives every job), writes a JSON
summary to /data/outputs and prints a short table to its log. Standard library only.
"""
import csv
import json
import os
import statistics
import sys
from pathlib import Path

inputs = Path(os.environ.get("INPUTS", "/data/inputs"))
outputs = Path(os.environ.get("OUTPUTS", "/data/outputs"))

rows = []
for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
    with open(path, newline="") as f:
        rows.extend(csv.DictReader(f))
    print(f"read {path.relative_to(inputs)}", flush=True)
if not rows:
    sys.exit("no input rows found under " + str(inputs))

by_city = {}
for row in rows:
    by_city.setdefault(row["city"], []).append(row)

summary = {}
for city, items in sorted(by_city.items()):
    temps = [float(r["temp_c"]) for r in items]
    rain = [float(r["rain_mm"]) for r in items]
    summary[city] = {
        "days": len(items),
        "temp_mean_c": round(statistics.mean(temps), 2),
        "temp_min_c": min(temps),
        "temp_max_c": max(temps),
        "rain_total_mm": round(sum(rain), 1),
    }
    print(f"{city:<8} mean {summary[city]['temp_mean_c']:>6} °C  rain {summary[city]['rain_total_mm']:>6} mm", flush=True)

(outputs / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote summary.json for {len(summary)} cities from {len(rows)} rows", flush=True)
