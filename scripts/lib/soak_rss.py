"""Reads `chatflow bench` JSON on stdin; prints its rate, the peak RSS after 1, 2 and 5 M
records and at the end (10 M, or what the broker kept of them), and what the retention
horizon held and dropped (scripts/bench.sh soak)."""
import json
import sys

d = json.load(sys.stdin)
rss = {int(k): v for k, v in d["peak_rss_at_records"].items()}
end = d["peak_rss_bytes"]
held = sum(h["held"] for h in d["windows_held"].values())
dropped = sum(h["dropped"] for h in d["windows_held"].values())
mb = " / ".join(f"{v / 2**20:.0f}" for v in [rss.get(m * 10**6, 0) for m in (1, 2, 5)] + [end])
ratio = end / max(rss.get(2 * 10**6, 1), 1)
print(
    f"  {d['events']} events in {d['seconds']:.1f} s ({d['events_per_s']:.0f}/s); "
    f"peak RSS MB after 1 / 2 / 5 M / all: {mb} (all / 2 M = {ratio:.2f}); "
    f"windows held at the end {held}, dropped {dropped}"
)
