"""One exception per layer, so callers can tell a protocol fault from a chain or store fault."""


class LetheError(Exception):
    """Base of every error Lethe raises on purpose."""


class ProtocolError(LetheError):
    """A message, share, envelope or certificate does not satisfy the protocol."""


class StoreError(LetheError):
    """The content store could not put, find or verify a block."""


class LedgerError(LetheError):
    """A chain call failed or reverted; carries the contract's error name when known."""
