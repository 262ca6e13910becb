#!/usr/bin/env python3
"""chatflow's final views in the peer workload's CSV layout (../shared/bench/chatviews.py).

  peer_views.py OUTDIR < nothing      (reads `chatflow query … --format csv` through CHATFLOW)

Runs `$CHATFLOW query <view> --dir RUNDIR --format csv` for word_counts, user_counts and
channel_activity and writes OUTDIR/v1_word_counts.csv (channel, minute, word, count),
v2_user_counts.csv (channel, user, count) and v3_channel_minute.csv (channel, minute,
messages, words): minute = window_start / 60, rows sorted by key with strings in byte order,
`,` and `\\n`, quoted only where CSV needs it (as DuckDB writes them).

Usage: peer_views.py CHATFLOW RUNDIR OUTDIR
"""
import csv
import io
import os
import subprocess
import sys


def query(chatflow, rundir, view):
    out = subprocess.run([chatflow, "query", view, "--dir", rundir, "--format", "csv"],
                         check=True, capture_output=True).stdout
    rows = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def write(path, header, rows):
    rows.sort(key=lambda r: [f.encode("utf-8") if isinstance(f, str) else f for f in r])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main():
    chatflow, rundir, outdir = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    head, rows = query(chatflow, rundir, "word_counts")
    assert head == ["channel", "window_start", "word", "count"], head
    write(os.path.join(outdir, "v1_word_counts.csv"), ["channel", "minute", "word", "count"],
          [[c, int(w) // 60, word, int(n)] for c, w, word, n in rows])
    head, rows = query(chatflow, rundir, "user_counts")
    assert head == ["channel", "user", "messages"], head
    write(os.path.join(outdir, "v2_user_counts.csv"), ["channel", "user", "count"],
          [[c, u, int(n)] for c, u, n in rows])
    head, rows = query(chatflow, rundir, "channel_activity")
    assert head[:4] == ["channel", "window_start", "messages", "words"], head
    write(os.path.join(outdir, "v3_channel_minute.csv"), ["channel", "minute", "messages", "words"],
          [[r[0], int(r[1]) // 60, int(r[2]), int(r[3])] for r in rows])


if __name__ == "__main__":
    main()
