"""Instructions per call for each step of the call path (`bench/instructions.py --steps`).

Python 3.11 shows callgrind only the interpreter's C functions, never which Python function ran.
So each step is called through a C function of its own, named after it, in a tiny extension
module compiled here (`cc` and the Python headers are needed): callgrind's inclusive count of
`step_auth` is then every instruction spent inside pipeline.authenticate, whatever it calls.

The steps nest (the WSGI call holds the middleware, which hold the view, which holds the
pipeline ...); `report()` prints each step's inclusive count per call and what is left to its
parent once its children are taken off ("own"). The wrappers cost a little themselves
(OVERHEAD is measured and shown), so the instrumented total is a few percent above the plain one.

Through gunicorn (--server --steps) a step that waits on a socket switches greenlets while its C
function is on the stack, and callgrind then charges it with what other greenlets ran meanwhile:
there, only the totals and the steps that never wait (parse, writer, finish's parts) are exact;
the in-process table is the one to read step by step.
"""

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

# (name, parent, what it is). Instrumented in install(); the order is the report's. "call" is the
# in-process bench's loop; "request" is gunicorn's worker (--server), which replaces it there.
STEPS = [
    ("call", "", "one call: the WSGI call, its body read, its close (the bench's loop)"),
    ("parse", "", "gunicorn: the request head parsed"),
    ("request", "", "gunicorn: one request handled (environ, the WSGI call, writes, close)"),
    ("environ", "request", "gunicorn: the WSGI environ and Response"),
    ("write", "request", "gunicorn: the answer's head and body written to the client"),
    ("finish_body", "request", "the worker drains what the call left of the request body"),
    ("wsgi", "call", "Django's WSGI handler: request object, signals, middleware, view"),
    ("started", "wsgi", "request_started signal (close_old_connections, ...)"),
    ("middleware", "wsgi", "the middleware chain (each middleware's own share below)"),
    ("urls", "middleware", "URL resolution"),
    ("drf", "middleware", "DRF's APIView.dispatch: Request wrapper, negotiation, finalize"),
    ("view", "drf", "ProxyView.proxy: the thin adapter"),
    ("incoming", "view", "the Incoming (headers, client address, host)"),
    ("pipeline", "view", "pipeline.run, steps 1 to 6"),
    ("config", "pipeline", "the configuration snapshot"),
    ("authenticate", "pipeline", "1 authenticate: key from the headers, hash compare"),
    ("match", "pipeline", "2 match: route, body read, model"),
    ("quotas", "pipeline", "4 admit: quotas (token counters, request rate)"),
    ("budgets", "pipeline", "4 admit: budgets (estimate, reservation)"),
    ("forward", "pipeline", "5 forward (all of it)"),
    ("upstream_headers", "forward", "headers for the upstream"),
    ("http", "forward", "the HTTP exchange with the upstream (requests/urllib3, headers read)"),
    ("http_send", "http", "urllib3: the request written (http.client: request line, headers)"),
    ("http_answer", "http", "urllib3: the answer's status and headers read"),
    ("http_headers", "http_answer", "http.client.parse_headers (the email parser)"),
    ("http_response", "http", "requests' Response built (headers dict, cookies)"),
    ("respond", "pipeline", "6 respond: answer headers, Answer"),
    ("release_db", "view", "giving the database connections back"),
    ("body", "call", "reading the answer's body to the client (usage tracker)"),
    ("close", "call", "the response's close: the call's end"),
    ("finished", "close", "request_finished signal (close_old_connections, ...)"),
    ("usage_end", "close", "the upstream body's close: usage parsed, connection back to the pool"),
    ("finish", "close", "7 finish (all of it)"),
    ("price", "finish", "7 the call's cost"),
    ("settle", "finish", "7 budgets settled"),
    ("release", "finish", "7 the admission released: tokens added"),
    ("metrics", "finish", "7 Prometheus metrics"),
    ("record", "finish", "7 the log row made and queued"),
    ("access_line", "record", "the access log line (JSON, logging, write)"),
    ("writer", "", "background writer: rows, usage and rollups saved in batches"),
    ("insert", "writer", "INSERT of the log rows"),
    ("key_usage", "writer", "per-key daily usage"),
    ("rollups", "writer", "minute/hour/day rollups"),
    ("noop", "", "an empty step: what one wrapper costs"),
    # Called from several steps: shown apart, their instructions are also in the steps above.
    ("cache", None, "every cache operation (quotas, budgets, breakers), whichever step made it"),
    ("rate_window", None, "the request-rate windows counted without Redis (proxy/request_windows.py)"),
]
PARENT = {name: parent for name, parent, _ in STEPS}
WHAT = {name: what for name, _, what in STEPS}
# Middleware: one step each, named m<position>, children of "middleware".


def c_source(names: list[str]) -> str:
    functions = "".join(
        f"__attribute__((noinline)) static PyObject *step_{name}(PyObject *self, PyObject *args, PyObject *kw)\n"
        '{ PyObject *r = call(args, kw); __asm__ volatile(""); return r; }\n'
        for name in names
    )
    table = "".join(
        f'  {{"{name}", (PyCFunction)(void (*)(void))step_{name}, METH_VARARGS | METH_KEYWORDS, NULL}},\n'
        for name in names
    )
    return (
        "#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n"
        "__attribute__((noinline)) static PyObject *call(PyObject *args, PyObject *kw) {\n"
        "  PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));\n"
        "  if (rest == NULL) return NULL;\n"
        "  PyObject *r = PyObject_Call(PyTuple_GET_ITEM(args, 0), rest, kw);\n"
        "  Py_DECREF(rest); return r; }\n"
        + functions
        + "static PyMethodDef methods[] = {\n"
        + table
        + "  {NULL, NULL, 0, NULL}};\n"
        'static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gwsteps", NULL, -1, methods};\n'
        "PyMODINIT_FUNC PyInit_gwsteps(void) { return PyModule_Create(&module); }\n"
    )


def proxied_middleware() -> list[str]:
    """The middleware a proxied call passes through: up to ProxiedPathsMiddleware, which hands it
    to the proxy view (gateway_project/middleware.py); the rest serve the browser pages."""
    from django.conf import settings

    chain = list(settings.MIDDLEWARE)
    bypass = "gateway_project.middleware.ProxiedPathsMiddleware"
    return chain[: chain.index(bypass) + 1] if bypass in chain else chain


def middleware_names() -> list[str]:
    return [f"m{index}" for index in range(len(proxied_middleware()))]


def build(folder: Path, middleware: int) -> Path:
    """Compile the gwsteps module into `folder`; returns the folder (to put on sys.path)."""
    names = [name for name, _, _ in STEPS] + [f"m{index}" for index in range(middleware)]
    source = folder / "gwsteps.c"
    source.write_text(c_source(names))
    target = folder / ("gwsteps" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-O1",
            "-g",
            "-fno-optimize-sibling-calls",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(target),
        ],
        check=True,
    )
    return folder


def _function(step, original):
    return lambda *args, **kwargs: step(original, *args, **kwargs)


def _method(step, original):
    def wrapped(self, *args, **kwargs):
        return step(original, self, *args, **kwargs)

    return wrapped


def install(folder: str, server: bool = False):
    """Route every step through its C function (in the measured process, after django.setup()).

    server: in a gunicorn worker (its request handling is counted too)."""
    sys.path.insert(0, folder)
    import http.client

    import gwsteps
    import urllib3
    from django.core import signals
    from django.core.cache import caches
    from django.core.handlers.base import BaseHandler
    from django.utils.module_loading import import_string

    from proxy import budgets, costs, forwarding, metrics, pipeline, quotas, recording, request_windows, rollups, views
    from proxy.config import ConfigCache
    from proxy.forwarding import UpstreamBody
    from proxy.pinning import PinnedAdapter
    from proxy.quotas import Admission

    def patch(owner, attribute, name, method=False):
        original = getattr(owner, attribute)
        step = getattr(gwsteps, name)
        setattr(owner, attribute, _method(step, original) if method else _function(step, original))

    for index, path in enumerate(proxied_middleware()):
        patch(import_string(path), "__call__", f"m{index}", method=True)
    for signal, name in ((signals.request_started, "started"), (signals.request_finished, "finished")):
        signal.send = _function(getattr(gwsteps, name), signal.send)
    patch(BaseHandler, "resolve_request", "urls", method=True)
    patch(views.ProxyView, "dispatch", "drf", method=True)
    patch(views.ProxyView, "post", "view", method=True)
    patch(views, "incoming", "incoming")
    patch(views, "release_database", "release_db")
    patch(pipeline, "run", "pipeline")
    patch(ConfigCache, "current", "config", method=True)
    patch(pipeline, "authenticate", "authenticate")
    patch(pipeline, "match", "match")
    patch(quotas, "admit", "quotas")
    patch(budgets, "admit", "budgets")
    patch(pipeline, "forward", "forward")
    patch(forwarding, "upstream_request_headers", "upstream_headers")
    patch(PinnedAdapter, "send", "http", method=True)
    patch(urllib3.connection.HTTPConnection, "request", "http_send", method=True)
    patch(urllib3.connection.HTTPConnection, "getresponse", "http_answer", method=True)
    patch(http.client, "parse_headers", "http_headers")
    patch(PinnedAdapter, "build_response", "http_response", method=True)
    cache_class = type(caches["default"])
    for operation in ("get", "get_many", "set", "add", "incr", "decr", "delete", "delete_many"):
        patch(cache_class, operation, "cache", method=True)
    patch(request_windows, "_count_here", "rate_window")
    patch(pipeline, "respond", "respond")
    patch(pipeline, "finish", "finish")
    patch(UpstreamBody, "close", "usage_end", method=True)
    patch(costs, "price_call", "price")
    patch(budgets, "settle", "settle")
    patch(Admission, "release", "release", method=True)
    patch(metrics, "finished", "metrics")
    patch(recording, "record", "record")
    patch(recording, "_access_line", "access_line")
    patch(recording.LogWriter, "flush", "writer", method=True)
    patch(recording, "_insert", "insert")
    patch(recording, "_add_usage", "key_usage")
    patch(rollups, "add", "rollups")
    from django.http.response import HttpResponseBase

    patch(HttpResponseBase, "close", "close", method=True)
    if server:
        from gunicorn.http import message, wsgi

        from gateway_project.worker import GatewayWorker

        patch(message.Request, "__init__", "parse", method=True)
        patch(GatewayWorker, "handle_request", "request", method=True)
        patch(GatewayWorker, "finish_body", "finish_body", method=True)
        patch(wsgi, "create", "environ")
        patch(wsgi.Response, "write", "write", method=True)
    return gwsteps


def gunicorn_config(folder: Path, root: Path) -> Path:
    """A gunicorn config file: the gateway's own, and the steps installed in each worker."""
    path = folder / "gunicorn_steps.conf.py"
    path.write_text(
        f"exec(open({str(root / 'gateway_project' / 'gunicorn.conf.py')!r}).read())\n"
        "_gateway_post_worker_init = post_worker_init\n\n\n"
        "def post_worker_init(worker):\n"
        "    _gateway_post_worker_init(worker)\n"
        f"    import sys\n    sys.path.append({str(root / 'bench')!r})\n"
        "    import steps\n"
        f"    gwsteps = steps.install({str(folder)!r}, server=True)\n"
        "    application = worker.wsgi\n"
        "    worker.wsgi = lambda environ, start_response: gwsteps.wsgi(application, environ, start_response)\n"
    )
    return path


def inclusive(callgrind_file: Path) -> dict[str, int]:
    """Inclusive instructions of each step_* function in a callgrind file."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(callgrind_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*:step_(\w+?)(?:'\d+)?\s", line + " ")
        if match:
            found.setdefault(match.group(2), int(match.group(1).replace(",", "")))
    return found


def report(few: dict, many: dict, calls: int, noop_calls: int, middleware: list[str], server: bool = False) -> str:
    """Per call: each step's inclusive count and its own (children taken off), as a table."""
    names = [name for name, parent, _ in STEPS if name != "noop" and parent is not None]
    apart = [name for name, parent, _ in STEPS if parent is None]
    parents = dict(PARENT)
    top = "request" if server else "call"
    for name in ("wsgi", "body", "close"):
        parents[name] = top
    drop = ("call", "body") if server else ("parse", "request", "environ", "write", "finish_body")
    names = [name for name in names if name not in drop]
    what = dict(WHAT)
    for index, path in enumerate(middleware):
        parents[f"m{index}"] = "middleware" if index == 0 else f"m{index - 1}"
        what[f"m{index}"] = path.rsplit(".", 1)[-1]
    # The middleware nest: each holds the next; the last holds the URL resolution and the view.
    if middleware:
        parents["urls"] = parents["drf"] = f"m{len(middleware) - 1}"
        names[names.index("middleware") + 1 : names.index("middleware") + 1] = [f"m{i}" for i in range(len(middleware))]
        names.remove("middleware")
        parents["m0"] = "wsgi"
    per_call = {name: (many.get(name, 0) - few.get(name, 0)) / calls for name in names}
    overhead = (many.get("noop", 0) - few.get("noop", 0)) / max(1, noop_calls)
    own = dict(per_call)
    for name in names:
        parent = parents.get(name)
        if parent and parent in own:
            own[parent] -= per_call[name]
    total = sum(per_call[name] for name in names if not parents.get(name))
    lines = [f"{'step':<18}{'inclusive':>12}{'own':>12}{'share':>8}  what", "-" * 90]
    for name in names:
        depth, parent = 0, parents.get(name)
        while parent:
            depth, parent = depth + 1, parents.get(parent)
        label = "  " * depth + name
        lines.append(
            f"{label:<18}{per_call[name] / 1e3:>10,.0f} k{own[name] / 1e3:>10,.0f} k"
            f"{100 * own[name] / total:>7.1f}%  {what.get(name, '')}"
        )
    for name in apart:
        count = (many.get(name, 0) - few.get(name, 0)) / calls
        lines.append(f"{name:<18}{count / 1e3:>10,.0f} k{'':>12}{'':>8}  {what[name]}")
    lines.append(f"one wrapper costs about {overhead / 1e3:.1f} k instructions (included above)")
    return "\n".join(lines)
