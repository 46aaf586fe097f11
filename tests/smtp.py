"""A real SMTP server on 127.0.0.1 for tests of mail the gateway sends (Django's SMTP backend).

server = SMTPServer()         # binds a port the kernel chose: server.port
server.refuse = 1             # answer the next message's DATA with 451 (a temporary failure)
server.messages               # what was accepted: (sender, recipients, email.message.Message)

Only what smtplib and Django's backend send: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
"""

import email
import socketserver
import threading
from email import policy


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        owner = self.server.owner
        self.reply("220 test ESMTP")
        sender, recipients = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].decode(errors="replace").upper()
            argument = line[5:].strip().decode(errors="replace")
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb == "MAIL":
                sender, recipients = argument.partition(":")[2].strip("<> "), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(argument.partition(":")[2].strip("<> "))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = self.rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                with owner.lock:
                    refused = owner.refuse > 0
                    owner.refuse -= 1 if refused else 0
                    if not refused:
                        message = email.message_from_bytes(data[: -len(b".\r\n")], policy=policy.default)
                        owner.messages.append((sender, recipients, message))
                self.reply("451 try again later" if refused else "250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SMTPServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.messages: list = []
        self.refuse = 0
        self.lock = threading.Lock()
        self.server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.server.owner = self
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
