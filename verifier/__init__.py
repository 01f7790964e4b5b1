"""verifier: the User Auth URL that lets Mozarto verify a merchant platform's users."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from .app import create_app


def __getattr__(name: str) -> Any:
    # Loaded on first use, not by `import verifier`: gunicorn imports this package before running
    # verifier/gunicorn_conf.py, which must set PROMETHEUS_MULTIPROC_DIR before metrics load.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
