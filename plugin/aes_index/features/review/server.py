"""`aes-index review`: the local web app over the index, a Starlette app behind uvicorn.

Who may talk to it (every request is checked by `Guard` before any route sees it):

* the Host header must name this server, 127.0.0.1:PORT or localhost:PORT: a page whose
  own domain was rebound to 127.0.0.1 (DNS rebinding) sends its domain as the Host;
* an Origin header, where the browser sends one, must be this server's; a browser's
  Sec-Fetch-Site must not be cross-site or same-site (another port of this machine is
  "same-site"): cross-site requests and other local pages are refused;
* the per-run secret token (secrets.token_urlsafe) must come with it: in the page's
  URL once (`/?token=...`), which answers with an HttpOnly, SameSite=Strict cookie and a
  redirect to `/`, so that the token leaves the address bar; after that the cookie, which
  every fetch and <img> of the page sends by itself, or an X-Review-Token header (scripts).
  The cookie's name carries the port: two reviews of two libraries do not overwrite
  each other's;
* a photo is named by its index id, never by a path from the client; an id the index
  does not hold (or whose path lies outside the library's roots) is 404.

Every answer carries a Content-Security-Policy allowing only the page's own files, and
Cross-Origin-Resource-Policy: same-origin (no other page may even embed an image).

The index is SQLite, whose connections belong to the thread that opened them: one
thread (`IndexThread`) opens the library and does all index work, one call at a time,
which also keeps decisions in the order they were pressed. Rendering pixels (images.py)
needs only a path and runs on the worker threads beside it, a few at a time.

One review per index: `<db>.review.lock` beside the index, held (flock) while the server
runs and holding its URL (mode 0600: the token is in it); a second `review` of that index
prints where the first one is and exits with ExitCode.ALREADY_RUNNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import AesIndexError, ConfigError, ExitCode, IndexUnavailable
from ...paths import inside_roots

LOCK_SUFFIX = ".review.lock"
HOST = "127.0.0.1"
TOKEN_HEADER = "x-review-token"
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/review.js": ("review.js", "text/javascript; charset=utf-8"),
              "/review.css": ("review.css", "text/css; charset=utf-8")}  # fmt: skip
MAX_FIT_SIDE = 8192  # a screen-size rendering larger than any screen is a mistake or an attack
MAX_RESULTS = 500
RENDER_AT_ONCE = max(2, min(8, os.cpu_count() or 2))  # pixels decoded in parallel: bounds memory
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip


class ReviewAlreadyRunning(AesIndexError):
    """Another `aes-index review` serves this index: its URL is in the message."""

    exit_code = ExitCode.ALREADY_RUNNING

    def __init__(self, url: str | None, lock: Path):
        self.url = url
        where = f"at {url}" if url else "(it is still starting)"
        super().__init__(f"a review of this index is already running {where}; its lock is {lock}")


# --------------------------------------------------------------------------- access


@dataclass
class Access:
    """What a request must carry: this server's Host and Origin, and the run's token."""

    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def hosts(self) -> tuple[str, ...]:
        return (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(f"http://{host}" for host in self.hosts)

    @property
    def cookie(self) -> str:
        return f"aes-review-{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def refusal(self, headers: dict[str, str], query: str) -> tuple[int, str] | None:
        """(status, why) for a request that must be refused, else None."""
        if headers.get("host", "") not in self.hosts:
            return 403, "refused: this server answers only to 127.0.0.1 and localhost on its own port (Host header)"
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, "refused: a request from another site (Origin header)"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "refused: a request from another site or another local server (Sec-Fetch-Site)"
        if not self.has_token(headers, query):
            return 401, "refused: no valid token; open the URL `aes-index review` printed"
        return None

    def has_token(self, headers: dict[str, str], query: str) -> bool:
        given = [headers.get(TOKEN_HEADER), _cookie(headers.get("cookie", ""), self.cookie), *parse_qs(query).get("token", [])]
        return any(value is not None and secrets.compare_digest(value.encode(), self.token.encode()) for value in given)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Guard:
    """ASGI middleware: refuses what `Access` refuses, trades the page URL's token for a
    cookie, and adds the security headers to every answer."""

    def __init__(self, app, access: Access):
        self.app = app
        self.access = access
        self.last_request = time.monotonic()  # for --stop-when-idle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.last_request = time.monotonic()
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        refused = self.access.refusal(headers, query)
        if refused is not None:
            return await _send_json(send, refused[0], {"error": refused[1]})
        if scope["path"] == "/" and "token" in parse_qs(query):
            return await self._token_to_cookie(send)
        await self.app(scope, receive, _with_headers(send, SECURITY_HEADERS))

    async def _token_to_cookie(self, send) -> None:
        cookie = f"{self.access.cookie}={self.access.token}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"cache-control", b"no-store"),
                                (b"content-length", b"0"), *SECURITY_HEADERS]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})


async def _send_json(send, status: int, data: dict) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *SECURITY_HEADERS]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _with_headers(send, extra: list[tuple[bytes, bytes]]):
    async def sending(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


# --------------------------------------------------------------------------- the index's thread


class IndexThread:
    """The one thread that opens the library and does all index work, one call at a time."""

    def __init__(self, open_library: Callable):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-index")
        try:
            self.library = self._pool.submit(open_library).result()
        except BaseException:
            self._pool.shutdown()
            raise

    async def call(self, function: Callable, *args):
        return await asyncio.wrap_future(self.submit(function, *args))

    def submit(self, function: Callable, *args):
        return self._pool.submit(function, self.library, *args)

    def run(self, function: Callable, *args):
        return self._pool.submit(function, self.library, *args).result()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.submit(self.library.close).result()
        self._pool.shutdown()


# --------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def review_lock(db_path: Path):
    """Hold `<db>.review.lock` (flock: it dies with the process) and yield a function that
    writes the running URL into it; refuse with the URL another review wrote there."""
    lock = Path(f"{db_path}{LOCK_SUFFIX}")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise IndexUnavailable(f"cannot create the lock file {lock} ({exc.strerror or exc})") from exc
    try:
        os.fchmod(fd, 0o600)  # the token is in it: only its owner reads it, whatever the umask made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReviewAlreadyRunning(os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or None, lock) from None

        def announce(url: str) -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (url + "\n").encode(), 0)

        try:
            yield announce
        finally:
            os.ftruncate(fd, 0)  # not unlinked: another review may be opening it right now
    finally:
        os.close(fd)


def running_url(db_path: Path) -> str | None:
    """The URL of the review that serves this index now, None when none does (its lock is
    free, or it is still starting)."""
    lock = Path(f"{db_path}{LOCK_SUFFIX}")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a review runs
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def bind(port: int | None) -> socket.socket:
    """A listening socket on 127.0.0.1 (a free port unless `port`); never another address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port or 0))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror or exc})") from exc
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


# --------------------------------------------------------------------------- serving


def serve(open_library: Callable, port: int | None = None, ready: Callable[[str], None] = lambda url: None,
          under: tuple[str, ...] = (), idle_s: float | None = None) -> int:
    """Open the library, take its review lock, listen, call `ready(url)`, serve until
    Ctrl-C (ExitCode.INTERRUPTED), SIGTERM or `idle_s` without a request (ExitCode.OK)."""
    index = IndexThread(open_library)
    try:
        with review_lock(index.library.index.path) as announce:
            sock = bind(port)
            access = Access(sock.getsockname()[1])
            app = create_app(index, under)
            api = app.state.api
            api.prefetch()
            app = Guard(app, access)
            server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2,
                                            server_header=False, access_log=False))  # fmt: skip
            server.idle = (app, idle_s)
            announce(access.url)
            ready(access.url)
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                api.preparing.shutdown(wait=False, cancel_futures=True)
            return ExitCode.INTERRUPTED if server.stopped_by == signal.SIGINT else ExitCode.OK
    finally:
        index.close()


class _Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGINT and SIGTERM and remembering which: uvicorn
    itself raises the signal again once stopped, which would end us with a traceback."""

    stopped_by: int | None = None
    idle: tuple[Guard, float | None] | None = None  # (the guard that sees every request, seconds)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn asks ten times a second whether to stop: also after `idle` seconds
        without a request (a review started by the darktable plugin has no terminal to
        press Ctrl-C in)."""
        if await super().on_tick(counter):
            return True
        guard, idle_s = self.idle or (None, None)
        return idle_s is not None and time.monotonic() - guard.last_request > idle_s

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum, frame):
            if self.stopped_by is None:
                self.stopped_by = signum
            self.force_exit = self.should_exit  # a second Ctrl-C: do not wait for open connections
            self.should_exit = True

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


# --------------------------------------------------------------------------- the app


def create_app(index: IndexThread, under: tuple[str, ...] = ()) -> Starlette:
    api = ReviewApi(index, under)
    routes = [Route(path, api.page_file) for path in PAGE_FILES] + [
        Route("/api/session", api.session),
        Route("/api/groups", api.groups),
        Route("/api/groups/{group:int}", api.group),
        Route("/api/gallery", api.gallery),
        Route("/api/photos/{photo:int}", api.photo),
        Route("/api/photos/{photo:int}/image", api.image),
        Route("/api/photos/{photo:int}/tiles/{level:int}/{col:int}/{row:int}", api.tile),
        Route("/api/photos/{photo:int}/decision", api.decide, methods=["POST"]),
        Route("/api/photos/{photo:int}/similar", api.similar),
        Route("/api/undo", api.undo, methods=["POST"]),
        Route("/api/search", api.search),
    ]
    app = Starlette(routes=routes)
    app.state.api = api
    return app


class NotInIndex(Exception):
    """A photo id the index does not hold (or one whose path left the library's roots)."""


class BadRequest(Exception):
    pass


def _errors(handler):
    """One JSON answer for what a route refuses, whatever route it is."""
    from functools import wraps

    @wraps(handler)
    async def answering(self, request):
        try:
            return await handler(self, request)
        except NotInIndex as exc:
            return JSONResponse({"error": str(exc) or "no such photo in this index"}, 404)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except AesIndexError as exc:
            return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, 422)

    return answering


class ReviewApi:
    def __init__(self, index: IndexThread, under: tuple[str, ...] = ()):
        from .images import DEFAULT_CACHE_BYTES, Renderer, default_cache_dir

        self.index = index
        self.under = under
        self.renderer = Renderer(default_cache_dir(), DEFAULT_CACHE_BYTES)  # outside the library, bounded
        self.rendering = asyncio.Semaphore(RENDER_AT_ONCE)
        self.paths: dict[int, str] = {}  # id -> path, for the pixel routes (which need no index thread)
        self._prefetch = None
        # A frame under review (the page asks with ahead=1) is decoded at full resolution behind it, one at a time
        # (the person looks before pressing Z): its first 100 % tile is then a crop of
        # milliseconds, not a full decode (bench_review_images.py: 2.5 ms against ~0.3 s).
        self.preparing = ThreadPoolExecutor(1, thread_name_prefix="aes-review-prepare")

    # --- page ----------------------------------------------------------------------

    async def page_file(self, request):
        name, media_type = PAGE_FILES[request.url.path]
        body = resources.files(__package__).joinpath("page", name).read_bytes()
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    # --- JSON ----------------------------------------------------------------------

    @_errors
    async def session(self, request):
        return _json(await self.index.call(views.session, self.under))

    @_errors
    async def groups(self, request):
        data = await self._prefetched_or(views.group_list, self.under)
        if data["first"] is not None:
            await self._with_pixels_info(data["first"])
        return _json(data)

    @_errors
    async def group(self, request):
        data = await self.index.call(views.group, request.path_params["group"])
        if data is None:
            raise NotInIndex("no such group (a cull since may have changed it): reload the groups")
        return _json(await self._with_pixels_info(data))

    async def _with_pixels_info(self, group: dict) -> dict:
        """Each member's picture size (the loupe's tiles need it), read off the index's thread."""
        for member in group["members"]:
            if "fullPath" in member:
                self.paths[member["id"]] = member.pop("fullPath")
        infos = await asyncio.gather(*(self._info(self.paths[member["id"]]) for member in group["members"]))
        for member, info in zip(group["members"], infos):
            member["image"] = info
        return group

    def prefetch(self) -> None:
        """Read the group list and the first group while the server starts and the browser
        opens: the page's first request then finds them ready."""
        self._prefetch = self.index.submit(views.group_list, self.under)

    async def _prefetched_or(self, function, *args):
        future, self._prefetch = self._prefetch, None
        if future is not None:
            try:
                return await asyncio.wrap_future(future)
            except Exception:  # read again below: an error is then answered as any other
                pass
        return await self.index.call(function, *args)

    @_errors
    async def gallery(self, request):
        return _json(await self.index.call(views.gallery, self.under))

    @_errors
    async def photo(self, request):
        data = await self.index.call(views.photo, request.path_params["photo"])
        if data is None:
            raise NotInIndex()
        self.paths[data["id"]] = data.pop("fullPath")
        data["image"] = await self._info(self.paths[data["id"]])
        return _json(data)

    @_errors
    async def decide(self, request):
        body = await _body(request)
        action = body.get("action")
        if action not in ("pick", "reject", "unmark", "stars"):
            raise BadRequest("action is one of pick, reject, unmark, stars")
        value = body.get("value")
        if action == "stars" and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5):
            raise BadRequest("stars take a value from 0 to 5")
        result = await self.index.call(views.decide, request.path_params["photo"], action, value, body.get("seen"))
        if result is None:
            raise NotInIndex()
        status, data = result
        return _json(data, status)

    @_errors
    async def undo(self, request):
        body = await _body(request)
        decision = body.get("decision")
        if not isinstance(decision, (int, str)) or isinstance(decision, bool):
            raise BadRequest("undo takes the decision's id")
        return _json(await self.index.call(views.undo, decision))

    @_errors
    async def search(self, request):
        text = request.query_params.get("q", "").strip()
        if not text:
            raise BadRequest("search for some words, e.g. q=kite on a beach")
        rank = request.query_params.get("rank", "similarity")
        if rank not in ("similarity", "score"):
            raise BadRequest("rank is similarity or score")
        return _json(await self.index.call(views.search, text, _count(request), rank))

    @_errors
    async def similar(self, request):
        data = await self.index.call(views.similar, request.path_params["photo"], _count(request))
        if data is None:
            raise NotInIndex()
        return _json(data)

    # --- pixels --------------------------------------------------------------------

    @_errors
    async def image(self, request):
        width, height = (_int(request.query_params.get(side, "1600"), 16, MAX_FIT_SIDE) for side in ("w", "h"))
        path = await self._path(request.path_params["photo"])
        response = await self._jpeg(self.renderer.fit, path, width, height)
        if response.status_code == 200 and request.query_params.get("ahead") == "1":  # a frame under review, not a thumbnail
            self.preparing.submit(self._prepare, path)
        return response

    def _prepare(self, path: str) -> None:
        with contextlib.suppress(AesIndexError, OSError, ValueError):  # the tile route reports it, if ever asked
            self.renderer.prepare(path)

    @_errors
    async def tile(self, request):
        params = request.path_params
        if not 0 <= params["level"] <= 16:
            raise BadRequest("level runs from 0 (100 %) to 16")
        path = await self._path(params["photo"])
        return await self._jpeg(self.renderer.tile, path, params["level"], params["col"], params["row"])

    async def _path(self, image_id: int) -> str:
        if image_id not in self.paths:
            path = await self.index.call(views.path_of, image_id)
            if path is None:
                raise NotInIndex()
            self.paths[image_id] = path
        return self.paths[image_id]

    async def _info(self, path: str) -> dict | None:
        async with self.rendering:
            try:
                return await run_in_threadpool(self.renderer.info, path)
            except (AesIndexError, OSError, ValueError) as exc:
                return {"error": str(exc) or type(exc).__name__}

    async def _jpeg(self, render, *args):
        async with self.rendering:
            try:
                data = await run_in_threadpool(render, *args)
            except (AesIndexError, OSError) as exc:
                return JSONResponse({"error": str(exc) or type(exc).__name__}, 422)
            except ValueError as exc:  # a tile beyond the image
                return JSONResponse({"error": str(exc)}, 404)
        from .images import media_type

        # The URLs carry the file's version (?v=): a changed file gets new URLs.
        return Response(data, media_type=media_type(data), headers={"cache-control": "private, max-age=3600"})


def _json(data, status: int = 200) -> Response:
    body = json.dumps(data, allow_nan=False, separators=(",", ":"), default=_plain)
    return Response(body, status, media_type="application/json", headers={"cache-control": "no-store"})


def _plain(value):
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON")


async def _body(request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest("send JSON (Content-Type: application/json)")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body is a JSON object")
    return body


def _count(request) -> int:
    return _int(request.query_params.get("n", "40"), 1, MAX_RESULTS)


def _int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{text!r} is not a whole number") from None
    return min(high, max(low, value))


from . import views  # noqa: E402 - the index-thread side, kept apart from the web side
