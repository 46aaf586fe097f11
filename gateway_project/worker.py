"""gunicorn's gevent worker, with a stop that neither hangs on idle clients nor works in a signal handler.

1. Idle keep-alive connections. Once told to stop (SIGTERM, or a restart after
   GATEWAY_MAX_REQUESTS), gunicorn's gevent worker waits until every connection is gone, and that
   includes a client's idle keep-alive connection: SDKs keep theirs open between calls for
   minutes. The worker would outlive the graceful timeout and be killed with the log rows it still
   had queued. Here each connection that waits for its next request is shut for reading: its
   handler reads a clean end of stream and returns. Calls in progress finish; gunicorn closes
   their connections after the answer, as it does for every call once stopping.
2. Work at stop time. A Python signal handler runs inside whichever greenlet happens to be
   running, in the middle of its work (a call's bookkeeping, say), and an exception or a switch
   there breaks that greenlet. So SIGTERM only sets `alive = False`, as in gunicorn; what stopping
   needs (closing idle connections, the `when_stopping` hooks) runs from the worker's own loop,
   which checks every second.
"""

import socket

import gevent
from gunicorn.workers.ggevent import GeventWorker


class GatewayWorker(GeventWorker):
    def init_process(self):
        self.idle_connections: dict = {}  # greenlet -> its client socket, between two requests
        self.when_stopping: list = []  # callables, each run once in a greenlet when stopping starts
        self._stop_seen = False
        super().init_process()

    def handle(self, listener, client, addr):
        try:
            super().handle(listener, client, addr)
        finally:
            self.idle_connections.pop(gevent.getcurrent(), None)

    def handle_request(self, listener_name, req, sock, addr):
        current = gevent.getcurrent()
        self.idle_connections.pop(current, None)
        super().handle_request(listener_name, req, sock, addr)
        # Still here: the connection is kept alive and waits for its next request. (Once stopping,
        # gunicorn closes the connection after the answer: super() raised StopIteration.)
        self.idle_connections[current] = sock

    def notify(self):
        """The heartbeat: called every second while serving and while stopping."""
        super().notify()
        if self.alive:
            return
        if not self._stop_seen:
            self._stop_seen = True
            for hook in self.when_stopping:
                gevent.spawn(hook)
        self.close_idle_connections()

    def close_idle_connections(self):
        for sock in list(self.idle_connections.values()):
            # Through a duplicate of the descriptor: gevent's own shutdown() would wake the waiting
            # handler with an error ("file descriptor was closed"); this way it reads a clean end.
            try:
                with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
                    duplicate.shutdown(socket.SHUT_RD)
            except OSError:  # the client closed it meanwhile
                pass
        self.idle_connections.clear()
