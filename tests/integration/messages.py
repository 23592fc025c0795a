"""Test messages, as the exact octets stored upstream."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "lib"))

from dovecot import demo_messages  # noqa: E402,F401


def simple(n, body_lines=3):
    body = "".join("Line %d of message %d.\r\n" % (i, n)
                   for i in range(1, body_lines + 1))
    return ("From: sender%d@example.org\r\n"
            "To: rcpt@example.org\r\n"
            "Subject: message %d\r\n"
            "Message-ID: <m%d@test.example>\r\n"
            "\r\n" % (n, n, n) + body).encode()


def five():
    return [simple(n, body_lines=n) for n in range(1, 6)]


def large(size):
    """A message of about SIZE octets: 76-column lines, some starting with
    a dot so that dot-stuffing runs all the way through."""
    head = (b"From: big@example.org\r\nTo: rcpt@example.org\r\n"
            b"Subject: large message\r\n\r\n")
    line_no = 0
    chunks = [head]
    total = len(head)
    while total < size:
        line_no += 1
        text = b"%08d " % line_no + b"x" * 66
        if line_no % 997 == 0:
            text = b"." + text
        if line_no % 5003 == 0:
            text = b"."
        chunks.append(text + b"\r\n")
        total += len(text) + 2
    return b"".join(chunks)
