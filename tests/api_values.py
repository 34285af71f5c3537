"""Constants of the API test fixtures (importable by tests; the fixtures live in
``tests.api_fixtures``, loaded as a plugin)."""

from protocol.commitments import record_commitment

TOKEN = "test-token-0123456789"
FED = "fed-test"
NODE = "0x" + "11" * 20
RECORDS = ("rec-1", "rec-2")


def commitment(record_id: str) -> str:
    """The record commitment the API looks up for ``record_id`` in federation ``FED``."""
    return "0x" + record_commitment(FED, record_id).hex()
