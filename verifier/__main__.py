"""`python -m verifier`: the same as the `verifier` command."""

from .cli import main

main()
