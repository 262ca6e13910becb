"""Replays the statements a chatflow run sent to ClickHouse (a CHATFLOW_SQL_LOG file) in an
embedded current ClickHouse (chdb-core), in order, with their data: every statement must be
accepted, and every answer must equal the one the server of the run gave.

Usage: chdb_check.py <log.jsonl>
Prints one line per statement kind with its count, then each failure; exits 1 on any failure.
"""

import json
import sys
import tempfile

import chdb
from chdb import session as chs


def main(path):
    session = chs.Session(tempfile.mkdtemp(prefix="chdb-check-"))
    version = session.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    counts, failures = {}, []
    with open(path, encoding="utf-8") as log:
        for number, line in enumerate(log, 1):
            statement = json.loads(line)
            kind, sql = statement["kind"], statement["sql"]
            counts[kind] = counts.get(kind, 0) + 1
            try:
                if kind == "insert":
                    session.query(sql + "\n" + statement["data"])
                    continue
                if kind == "select_with":
                    # An external table is a table of the query's own: the same name, here a
                    # Memory table of the current database, made and dropped around it.
                    name, structure = statement["external"]
                    session.query(f"CREATE TABLE {name} ({structure}) ENGINE = Memory")
                    session.query(f"INSERT INTO {name} FORMAT TabSeparated\n" + statement["data"])
                    try:
                        answer = session.query(sql).bytes().decode()
                    finally:
                        session.query(f"DROP TABLE {name}")
                else:
                    answer = session.query(sql).bytes().decode()
            except Exception as e:  # chdb raises its own error type with the server's message
                failures.append(f"statement {number} ({kind}) refused: {sql[:300]}\n    {str(e)[:600]}")
                continue
            expected = statement.get("answer")
            if expected is not None and answer != expected:
                failures.append(
                    f"statement {number} ({kind}) answered differently: {sql[:300]}\n"
                    f"    ClickHouse of the run: {expected[:300]!r}\n    chdb {version}: {answer[:300]!r}"
                )
    print(f"chdb {version}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    for failure in failures[:20]:
        print(failure)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
