"""Who is calling: the caller's real address behind trusted proxies, the allowlist and caller keys.

The caller is the direct peer unless that peer is a trusted proxy; then X-Forwarded-For is walked
from the right, past every trusted proxy, to the first address that is not one. Entries to the left
of that are whatever the client wrote and are never read, so a spoofed header changes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable

from flask import g, request

from .config import Network, Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The query parameter of the registered User Auth URL that carries the caller key.
KEY_PARAMETER = "key"
# IPv6 callers are limited per /64: one host usually holds a whole /64.
IPV6_SUBJECT_PREFIX = 64
# The name in any spelling the query parser decodes to `key` (each letter plain or %XX).
_KEY_NAME = "".join(f"(?:{c}|%{ord(c):02x})" for c in KEY_PARAMETER)
_KEY_IN_TEXT = re.compile(rf"(?i)(?<![A-Za-z0-9_]){_KEY_NAME}=[^&\s\"']*")
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.%]+)\](?::\d+)?")
_V4_WITH_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d+")


# The same few peers (Mozarto, the load balancers) send nearly every request: parse each once.
@functools.lru_cache(maxsize=4096)
def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer or X-Forwarded-For entry (ports and brackets allowed), or None."""
    if not text:
        return None
    text = text.strip().strip('"')
    match = _BRACKETED.fullmatch(text) or _V4_WITH_PORT.fullmatch(text)
    if match:
        text = match.group(1)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(address: Address | None, networks: Iterable[Network]) -> bool:
    """True when the address is in one of the networks (never for an unknown address)."""
    return address is not None and any(address in network for network in networks)


def limit_subject(address: Address | None) -> str:
    """What failures are counted against: the IPv4 address, or the IPv6 address's /64."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_SUBJECT_PREFIX), strict=False))
    return str(address)


def redact(text: str) -> str:
    """The text with every `key=<value>` replaced by `key=***` (for log lines and URLs)."""
    if KEY_PARAMETER not in text.lower() and "%" not in text:
        return text
    return _KEY_IN_TEXT.sub(f"{KEY_PARAMETER}=***", text)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class CallerPolicy:
    """Resolves each request's caller and decides whether it may call the verify endpoint."""

    def __init__(self, *, trusted_proxies: Iterable[Network] = (),
                 allowed_callers: Iterable[Network] | None = None,
                 caller_keys: Iterable[str] | None = None) -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.allowed_callers = None if allowed_callers is None else tuple(allowed_callers)
        # Digests, so every comparison is of 32 bytes whatever length was sent.
        self._key_digests = tuple(_digest(key) for key in caller_keys or ())

    @classmethod
    def from_settings(cls, settings: Settings) -> CallerPolicy:
        """The policy the settings describe."""
        return cls(trusted_proxies=settings.trusted_proxies or (),
                   allowed_callers=settings.allowed_callers, caller_keys=settings.caller_keys)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> Address | None:
        """The caller's address: the peer's, or behind trusted proxies the first untrusted hop.

        None when it cannot be known (an unparsable peer, or junk where a trusted proxy's entry
        should be): such a caller fails every allowlist.
        """
        caller = parse_address(peer)
        if not forwarded_for or not within(caller, self.trusted_proxies):
            return caller
        for hop in reversed(forwarded_for.split(",")):
            if not within(caller, self.trusted_proxies):
                break
            caller = parse_address(hop)
            if caller is None:
                return None
        return caller

    @property
    def needs_key(self) -> bool:
        """True when callers must send one of the caller keys."""
        return bool(self._key_digests)

    def admits(self, caller: Address | None, key: str | None) -> bool:
        """True when the caller's address is allowed and, if keys are set, it sent one of them."""
        if self.allowed_callers is not None and not within(caller, self.allowed_callers):
            return False
        if not self._key_digests:
            return True
        sent = _digest(key or "")
        matched = False
        for digest in self._key_digests:  # no early exit: the time does not depend on which key
            matched |= hmac.compare_digest(sent, digest)
        return matched


def resolve_current(policy: CallerPolicy) -> Address | None:
    """Resolve the current request's caller once, and remember it for the rest of the request."""
    caller = policy.resolve(request.remote_addr, request.headers.get("X-Forwarded-For"))
    g.caller = caller
    return caller


def current() -> Address | None:
    """The current request's caller as resolve_current found it (None when unknown)."""
    caller: Address | None = g.get("caller")
    return caller
