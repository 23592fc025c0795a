"""A raw POP3 client for tests that must see the exact octets on the wire.

poplib hides line endings and dot-stuffing; this client keeps them, so a
test can check CRLF, the terminator and the un-stuffed message bytes.
Every read has a socket timeout; nothing waits forever.
"""

import socket
import ssl

TIMEOUT = 30.0
MAX_LINE = 64 * 1024


class POP3Error(Exception):
    pass


class RawPOP3:
    def __init__(self, host, port, timeout=TIMEOUT, tls_context=None,
                 read_greeting=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        self.greeting = self.read_line() if read_greeting else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("connection closed by server")
        self.buf += data

    def read_line(self):
        """One line including its CRLF (raises if the line has no CRLF)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                if not line.endswith(b"\r\n"):
                    raise POP3Error("line without CRLF: %r" % line)
                return line
            if len(self.buf) > MAX_LINE:
                raise POP3Error("line longer than %d octets" % MAX_LINE)
            self._fill()

    def read_multiline(self):
        """The body of a multi-line response, un-dot-stuffed, CRLF kept."""
        out = []
        while True:
            line = self.read_line()
            if line == b".\r\n":
                return b"".join(out)
            if line.startswith(b"."):
                line = line[1:]
            out.append(line)

    def read_multiline_raw(self):
        """The body of a multi-line response exactly as sent, terminator
        included."""
        out = []
        while True:
            line = self.read_line()
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)

    def send(self, data):
        self.sock.sendall(data)

    def cmd(self, line):
        """Send LINE (str or bytes, without CRLF); return the status line."""
        if isinstance(line, str):
            line = line.encode()
        self.sock.sendall(line + b"\r\n")
        return self.read_line()

    def ok(self, line):
        resp = self.cmd(line)
        if not resp.startswith(b"+OK"):
            raise POP3Error("%r -> %r" % (line, resp))
        return resp

    def multi(self, line):
        """Send LINE, expect +OK, return (status line, un-stuffed body)."""
        resp = self.ok(line)
        return resp, self.read_multiline()

    def login(self, user, password):
        self.ok("USER " + user)
        self.ok("PASS " + password)

    def at_eof(self, timeout=5.0):
        """True if the server closes the connection within TIMEOUT without
        sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return data == b""


def insecure_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pop3_message(upstream):
    """What RETR must deliver for a message whose upstream (IMAP) copy is
    UPSTREAM: every line CRLF-terminated, a final CRLF added if missing."""
    lines = upstream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(l + b"\r\n" for l in lines)


def top_of(message, n):
    """What TOP msg N must deliver for MESSAGE (already POP3-normalised)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return message
    body_lines = body.split(b"\r\n")[:-1] if body else []
    return head + sep + b"".join(l + b"\r\n" for l in body_lines[:n])
