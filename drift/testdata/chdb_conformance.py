#!/usr/bin/env python3
"""Runs SQL statements in chDB (an embedded current ClickHouse engine), in
order, and reports each failure. seer's DDL and queries must run both on
ClickHouse 18.16 (the Debian server) and on current ClickHouse.

stdin: JSON list of statements. stdout: JSON {"version": ..., "failures": [{"index", "error", "sql"}]}.
"""
import json
import sys

from chdb import session

stmts = json.load(sys.stdin)
s = session.Session()
failures = []
for i, sql in enumerate(stmts):
    try:
        s.query(sql, "CSV")
    except Exception as e:  # chdb raises on any server error
        failures.append({"index": i, "error": str(e)[:500], "sql": sql[:300]})
version = str(s.query("SELECT version()", "CSV")).strip().strip('"')
json.dump({"version": version, "failures": failures}, sys.stdout)
