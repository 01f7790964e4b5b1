"""`make bench-profile` (bench/hotpath.py): where one verification's CPU goes, in-process, on a private Redis.

Calls the WSGI app directly (no gunicorn, no wrk, one thread), so the figures are the app's own
CPU per request (the least of several batches, which moves less with the machine's load than
wrk's figures): verify against /livez, then cProfile's view of verify, as a share of its time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import redis_server  # noqa: E402
from bench.seed import Seeder  # noqa: E402
from verifier.app import create_app  # noqa: E402
from verifier.config import load_settings  # noqa: E402

VERIFY_PATH = "/api/v1/mozarto/verify-user"


def wsgi_caller(app: Any, pairs: list[tuple[str, str]]) -> Callable[[str], bytes]:
    """A function that sends one request (verify or livez) straight to the WSGI app."""
    counter = iter(range(sys.maxsize))

    def call(target: str) -> bytes:
        token, user_id = pairs[next(counter) % len(pairs)]
        body = f'{{"userId": "{user_id}"}}'.encode() if target == "verify" else b""
        environ = {
            "REQUEST_METHOD": "POST" if target == "verify" else "GET",
            "PATH_INFO": VERIFY_PATH if target == "verify" else "/livez",
            "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000", "HTTP_AUTHORIZATION": f"Bearer {token}",
            "HTTP_ACCEPT": "application/json", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False,
        }
        status: list[str] = []
        chunks = app(environ, lambda s, _h, _e=None: status.append(s))
        data = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
        if not status[0].startswith("200"):
            raise RuntimeError(f"{target} answered {status[0]}: {data[:200]!r}")
        return data

    return call


def cpu_us_per_call(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    """The least thread CPU one call took, over `repeats` batches of `calls`."""
    fn()
    timer = timeit.Timer(fn, timer=time.thread_time)
    return min(timer.repeat(number=calls, repeat=repeats)) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print CPU per request of verify and /livez, then verify's profile."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per timed batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--top", type=int, default=35, help="rows of the profile")
    parser.add_argument("--server", choices=("auto", "redis", "valkey"), default="auto")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verifier-profile-") as tmp, \
            redis_server(args.server, Path(tmp)) as (url, server), open(os.devnull, "w") as devnull:
        settings = load_settings({"VERIFIER_REDIS_URL": url})
        tokens = io.StringIO()
        with Seeder(settings, 500) as seeder:
            seeder.create(1000, tokens)
        pairs = [(t, u) for t, u in (line.split("\t") for line in tokens.getvalue().splitlines())]
        # The access log is written (as under gunicorn), but to /dev/null rather than the screen.
        with redirect_stdout(devnull):
            app = create_app(settings)
        call = wsgi_caller(app, pairs)
        verify_us = cpu_us_per_call(lambda: call("verify"), args.calls, args.repeats)
        livez_us = cpu_us_per_call(lambda: call("livez"), args.calls, args.repeats)
        print(f"store {server}; CPU per request in-process (least of {args.repeats} x "
              f"{args.calls}): verify {verify_us:.0f} us, livez {livez_us:.0f} us, "
              f"verify - livez {verify_us - livez_us:.0f} us")
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for _ in range(args.calls * 3):
            call("verify")
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"\nverify under cProfile (thread CPU, profiler overhead included): cumulative share "
          f"of each function, top {args.top}")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][3])  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, _tt, cumulative, _callers) in rows[:args.top]:
        where = _short(filename)
        print(f"{100 * cumulative / total:5.1f}%  {calls // (args.calls * 3):>3}x  {where}:{line} {name}")
    return 0


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    sys.exit(main())
