"""verifier: the User Auth URL that lets Mozarto verify a merchant platform's users."""

__version__ = "0.1.0"

from .app import create_app

__all__ = ["__version__", "create_app"]
