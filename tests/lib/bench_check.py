"""bench_check.py REPORT.json - judge a bench/run --json report as a smoke
test: every target measured, every run with sessions and without errors or
mismatches (popbench checks each RETR's octets against LIST and each
terminator), the whole table run, and no note (a target not measured).  The
figures themselves are not judged.  Exit status 0 or 1."""

import json
import sys


def main(path):
    with open(path) as f:
        report = json.load(f)
    cells = report["results"]
    problems = ["note: %s" % n for n in report["notes"]]
    if not report.get("complete"):
        problems.append("the run stopped before the end of the table")
    targets = {c["target"] for c in cells}
    for t in sorted({"popgate", "imap", "dovecot-imapc"} - targets):
        problems.append("no results for %s" % t)
    for c in cells:
        for r in c["runs"]:
            if r.get("errors", 0) or r.get("mismatches", 0) or \
                    not r.get("sessions", 0):
                problems.append("%s c=%s %s: %d sessions, %s errors, %s "
                                "mismatches, first error %s" % (
                                    c["row"], c["concurrency"], c["target"],
                                    r.get("sessions", 0), r.get("errors"),
                                    r.get("mismatches"),
                                    r.get("first_error")))
    for p in problems:
        print("bench: %s" % p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
