"""Reads `chatflow bench` JSON on stdin; prints its rate, the peak RSS after 1, 2, 5 and 10 M
records, and what the retention horizon held and dropped (scripts/bench.sh soak)."""
import json
import sys

d = json.load(sys.stdin)
rss = {int(k): v for k, v in d["peak_rss_at_records"].items()}
held = sum(h["held"] for h in d["windows_held"].values())
dropped = sum(h["dropped"] for h in d["windows_held"].values())
mb = " / ".join(f"{rss.get(m * 10**6, 0) / 2**20:.0f}" for m in (1, 2, 5, 10))
ratio = rss.get(10**7, 0) / max(rss.get(2 * 10**6, 1), 1)
print(
    f"  {d['events']} events in {d['seconds']:.1f} s ({d['events_per_s']:.0f}/s); "
    f"peak RSS MB after 1/2/5/10 M: {mb} (10 M / 2 M = {ratio:.2f}); windows held {held}, dropped {dropped}"
)
