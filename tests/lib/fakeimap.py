"""A scripted IMAP server for fault-injection tests (real Dovecot does the
rest).

It serves one INBOX well enough for popgate (CAPABILITY, LOGIN,
AUTHENTICATE PLAIN with or without an initial response, SELECT,
UID FETCH of UID/RFC822.SIZE/FLAGS, of BODY.PEEK[] and of
BODY.PEEK[]<offset.length>, NOOP, UID STORE, SEARCH DELETED, EXPUNGE, UID
EXPUNGE when UIDPLUS is offered, LOGOUT) and, once, misbehaves in the
middle of a message: on the first whole-body fetch of a message over
FAULT_SIZE octets, or the first ranged one at an offset above 0, it does
what FAULT says.  Every connection runs in its own thread; sockets have
timeouts so a stalled server thread ends by itself.

Faults (a whole-body fetch has had half its literal sent first, except
where it says "after the body"):
  cut      close the connection half-way through the literal
  short    send half the announced literal, then the end of the response,
           then nothing (a literal shorter than announced)
  shortcut the same, then close the connection
  byecut   send half the literal, then "* BYE" and close (Dovecot, when
           stopped, writes its BYE into a literal it was sending)
  noisecut send half the literal, then 4 KiB that are not the message,
           then close
  drop     close the connection without answering
  long     send more octets than announced, then the end of the response
  huge     announce a literal of 1 TiB and send 1 MiB of it, then stall
  garbage  answer with a line that is not IMAP (after the body), then stall
  stall    answer nothing more
  bye      send "* BYE" (after the body) and close
  no       answer the FETCH with a tagged NO (after the body)
"""

import base64
import re
import select
import socket
import socketserver
import threading
import time

FAULTS = ("cut", "short", "shortcut", "byecut", "noisecut", "drop", "long", "huge", "garbage", "stall", "bye", "no")
FAULT_SIZE = 1 << 20
STALL_SECONDS = 30


class FakeIMAP:
    def __init__(self, messages, user="fake", password="fakepw", fault=None,
                 capabilities=b"IMAP4rev1 UIDPLUS ID", deleted=(),
                 size_error=0, login_refusal=None, change_after_fault=False,
                 id_waits=False, id_answer=b"OK done", select_gate=None):
        self.messages = list(messages)  # message i has UID i + 1
        # After the fault, one octet 700 before where it cut is changed, as
        # if the message were no longer the same (which IMAP forbids): what
        # a resumed answer must not be spliced onto.
        self.change_after_fault = change_after_fault
        # Before answering ID, wait (up to 2 s) for the next command, and
        # note in id_pipelined whether it came without that answer.
        self.id_waits = id_waits
        self.id_pipelined = []
        self.id_answer = id_answer  # the tagged answer to ID
        # A threading.Event: SELECT is answered once it is set (or after
        # 10 s); select_held is set while an answer waits for it.
        self.select_gate = select_gate
        self.select_held = threading.Event()
        # Added to every RFC822.SIZE, as a server that estimates sizes
        # (Exchange by default) would.
        self.size_error = size_error
        # What LOGIN gets instead of OK, whatever the credentials (e.g.
        # b"NO [UNAVAILABLE] try later"); None: OK for the right ones.
        self.login_refusal = login_refusal
        # Mailbox state shared by all connections: the UIDs not expunged
        # yet and their flags; DELETED lists UIDs another client flagged.
        self.live = list(range(1, len(self.messages) + 1))
        self.flags = {u: set() for u in self.live}
        for u in deleted:
            self.flags[u].add(b"\\Deleted")
        self.capabilities = capabilities
        self.commands = []  # every command line received, in order
        self.user = user
        self.password = password
        self.fault = fault
        self.fault_done = threading.Event()
        self.changes = []  # STORE/EXPUNGE commands seen: must stay empty
        self.lock = threading.Lock()
        handler = self._handler_class()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def take_fault(self):
        """The fault to apply now, once per server."""
        with self.lock:
            fault, self.fault = self.fault, None
            return fault

    def _handler_class(self):
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = STALL_SECONDS

            def handle(self):
                try:
                    Session(fake, self.connection, self.rfile).run()
                except (OSError, ValueError):
                    pass

        return Handler


class Session:
    def __init__(self, fake, sock, rfile):
        self.fake = fake
        self.sock = sock
        self.rfile = rfile

    def send(self, data):
        self.sock.sendall(data)

    def stall(self):
        # Hold the connection open without answering until the client
        # gives up (its timeout) or STALL_SECONDS pass.
        self.sock.settimeout(STALL_SECONDS)
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass

    def run(self):
        caps = self.fake.capabilities
        self.send(b"* OK [CAPABILITY %s] fake server ready\r\n" % caps)
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            with self.fake.lock:
                self.fake.commands.append(line)
            m = re.match(rb"(\S+) (?:UID )?(\S+)", line)
            if not m:
                self.send(b"* BAD what?\r\n")
                continue
            tag = m.group(1)
            uid_cmd = line.split()[1].upper() == b"UID" if len(line.split()) > 1 else False
            cmd = m.group(2).upper()
            if cmd == b"CAPABILITY":
                self.send(b"* CAPABILITY %s\r\n%s OK done\r\n" % (caps, tag))
            elif cmd == b"LOGIN":
                args = re.findall(rb'"((?:[^"\\]|\\.)*)"|(\S+)', line)[2:]
                self.login(tag, [a or b for a, b in args])
            elif cmd == b"AUTHENTICATE":
                words = line.split()
                if len(words) > 3:
                    response = words[3]
                else:
                    self.send(b"+ \r\n")
                    response = self.rfile.readline(65536).strip()
                creds = base64.b64decode(response).split(b"\0")
                self.login(tag, creds[1:])
            elif cmd in (b"SELECT", b"EXAMINE"):
                if self.fake.select_gate is not None:
                    self.fake.select_held.set()
                    self.fake.select_gate.wait(10)
                n = len(self.fake.live)
                self.send(b"* %d EXISTS\r\n* 0 RECENT\r\n"
                          b"* OK [UIDVALIDITY 42] ok\r\n"
                          b"* OK [UIDNEXT %d] ok\r\n"
                          b"* FLAGS (\\Seen \\Deleted)\r\n"
                          b"%s OK [READ-WRITE] selected\r\n"
                          % (n, len(self.fake.messages) + 1, tag))
            elif cmd == b"FETCH" and uid_cmd:
                if self.fetch(tag, line) is False:
                    return
            elif cmd == b"STORE" and uid_cmd:
                self.fake.changes.append(line)
                self.store(tag, line)
            elif cmd == b"EXPUNGE":
                self.fake.changes.append(line)
                if uid_cmd and b"UIDPLUS" not in caps:
                    self.send(b"%s BAD no UIDPLUS here\r\n" % tag)
                else:
                    self.expunge(tag, self.uids(line.split()[3]) if uid_cmd
                                 else None)
            elif cmd == b"SEARCH":
                self.search(tag, line, uid_cmd)
            elif cmd == b"ID":
                if self.fake.id_waits:
                    self.fake.id_pipelined.append(self.next_command_within(2))
                self.send(b'* ID ("name" "fakeimap")\r\n%s %s\r\n'
                          % (tag, self.fake.id_answer))
            elif cmd == b"LOGOUT":
                self.send(b"* BYE bye\r\n%s OK done\r\n" % tag)
                return
            else:  # NOOP, ID, ENABLE...
                self.send(b"%s OK done\r\n" % tag)

    def next_command_within(self, seconds):
        """Whether more input arrives within SECONDS, buffered or not,
        without taking it."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.0)  # a peek then reads nothing but the buffer
        try:
            while True:
                if self.rfile.peek(1):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([self.sock], [], [], left)
        finally:
            self.sock.settimeout(STALL_SECONDS)

    def login(self, tag, credentials):
        if self.fake.login_refusal is not None:
            self.send(b"%s %s\r\n" % (tag, self.fake.login_refusal))
        elif credentials == [self.fake.user.encode(),
                             self.fake.password.encode()]:
            self.send(b"%s OK logged in\r\n" % tag)
        else:
            self.send(b"%s NO [AUTHENTICATIONFAILED] no\r\n" % tag)

    def uids(self, spec):
        """The live UIDs in a UID set such as 1:*, 3 or 2,5:7."""
        live = self.fake.live
        top = live[-1] if live else 0
        out = []
        for part in spec.split(b","):
            lo, _, hi = part.partition(b":")
            lo = top if lo == b"*" else int(lo)
            hi = lo if not hi else (top if hi == b"*" else int(hi))
            lo, hi = min(lo, hi), max(lo, hi)
            out += [u for u in live if lo <= u <= hi]
        return sorted(set(out))

    def seq(self, uid):
        return self.fake.live.index(uid) + 1

    def flag_list(self, uid):
        return b"(%s)" % b" ".join(sorted(self.fake.flags[uid]))

    def store(self, tag, line):
        m = re.search(rb"STORE (\S+) ([+-]?)FLAGS(\.SILENT)? \(([^)]*)\)", line, re.I)
        if not m:
            self.send(b"%s BAD bad STORE\r\n" % tag)
            return
        flags = set(m.group(4).split())
        with self.fake.lock:
            for u in self.uids(m.group(1)):
                if m.group(2) == b"+":
                    self.fake.flags[u] |= flags
                elif m.group(2) == b"-":
                    self.fake.flags[u] -= flags
                else:
                    self.fake.flags[u] = set(flags)
                if not m.group(3):
                    self.send(b"* %d FETCH (UID %d FLAGS %s)\r\n"
                              % (self.seq(u), u, self.flag_list(u)))
        self.send(b"%s OK done\r\n" % tag)

    def expunge(self, tag, only):
        with self.fake.lock:
            gone = [u for u in self.fake.live
                    if b"\\Deleted" in self.fake.flags[u]
                    and (only is None or u in only)]
            for u in reversed(gone):
                self.send(b"* %d EXPUNGE\r\n" % self.seq(u))
                self.fake.live.remove(u)
        self.send(b"%s OK done\r\n" % tag)

    def search(self, tag, line, uid_cmd):
        words = line.upper().split()
        key = words[3] if uid_cmd else words[2]
        live = self.fake.live
        if key == b"DELETED":
            hits = [u for u in live if b"\\Deleted" in self.fake.flags[u]]
        elif key == b"UNDELETED":
            hits = [u for u in live if b"\\Deleted" not in self.fake.flags[u]]
        elif key == b"ALL":
            hits = list(live)
        else:
            self.send(b"%s BAD unsupported SEARCH\r\n" % tag)
            return
        ids = hits if uid_cmd else [self.seq(u) for u in hits]
        self.send(b"* SEARCH%s\r\n%s OK done\r\n"
                  % (b"".join(b" %d" % i for i in ids), tag))

    def fetch(self, tag, line):
        parts = line.split()
        uids = self.uids(parts[3])
        body = re.search(rb"BODY\.PEEK\[\](?:<(\d+)\.(\d+)>)?", line)
        if not body:
            want_flags = b"FLAGS" in line.upper()
            for u in uids:
                self.send(b"* %d FETCH (UID %d RFC822.SIZE %d%s)\r\n"
                          % (self.seq(u), u,
                             len(self.fake.messages[u - 1]) + self.fake.size_error,
                             b" FLAGS " + self.flag_list(u) if want_flags else b""))
            self.send(b"%s OK done\r\n" % tag)
            return True
        if body.group(1) is None:
            offset, length, item = 0, None, b"BODY[]"
            fault = (self.fake.take_fault()
                     if any(len(self.fake.messages[u - 1]) > FAULT_SIZE
                            for u in uids) else None)
        else:
            offset, length = int(body.group(1)), int(body.group(2))
            item = b"BODY[]<%d>" % offset
            fault = self.fake.take_fault() if offset > 0 else None
        for u in uids:
            msg = self.fake.messages[u - 1]
            data = msg[offset:] if length is None else \
                msg[offset:offset + length]
            head = b"* %d FETCH (UID %d %s {%d}\r\n" % (
                self.seq(u), u, item, len(data))
            if fault is None:
                self.send(head + data + b")\r\n")
                continue
            self.fake.fault_done.set()
            half = data[:len(data) // 2]
            if self.fake.change_after_fault:
                changed = bytearray(msg)
                changed[offset + len(half) - 700] ^= 1
                self.fake.messages[u - 1] = bytes(changed)
            # A whole body is cut into by every fault: never before it.
            before = head + half if length is None else b""
            if fault == "cut":
                self.send(head + half)
                return False
            if fault == "drop":
                return False
            if fault == "byecut":
                self.send(head + half + b"* BYE Server shutting down.\r\n")
                return False
            if fault == "noisecut":
                self.send(head + half + b"not the message\r\n" * 241)
                return False
            if fault in ("short", "shortcut"):
                self.send(head + half + b")\r\n%s OK done\r\n" % tag)
                if fault == "short":
                    self.stall()
                return False
            if fault == "long":
                self.send(head + data + b"EXTRA OCTETS\r\n" * 10 +
                          b")\r\n%s OK done\r\n" % tag)
                self.stall()
                return False
            if fault == "huge":
                self.send(b"* %d FETCH (UID %d %s {1099511627776}\r\n"
                          % (u, u, item) + b"x" * (1 << 20))
                self.stall()
                return False
            if fault == "stall":
                self.send(before)
                self.stall()
                return False
            after = head + data + b")\r\n" if length is None else b""
            if fault == "garbage":
                self.send(after + b"%%%% this is not IMAP %%%%\r\n\x00\xff\r\n")
                self.stall()
                return False
            if fault == "bye":
                self.send(after + b"* BYE server shutting down\r\n")
                return False
            if fault == "no":
                self.send(after + b"%s NO [SERVERBUG] cannot fetch\r\n" % tag)
                return True
        self.send(b"%s OK done\r\n" % tag)
        return True
