"""Joining in three commands: the invitation, the admission request, the sealed record key.

1. The owner's `lethe invite` writes an :class:`Invitation`: where the federation runs
   (chain, contract, content store, SuperLink and its CA certificate), its recipe (how a
   node ingests: federation id, shards, slices, labels, feature map), the stake asked, and
   a one-time code. The owner keeps only the code's hash, to accept it once.
2. The newcomer's `lethe-node join --invite` makes every key locally and answers with an
   :class:`AdmissionRequest`: its address, share key (X25519), SuperNode auth key and the
   code, signed with its Ethereum key (so nobody who sees the request can redirect the
   admission to another address, nor the sealed key to another share key).
3. The owner's `lethe admit REQUEST` admits the address on chain and sends the federation's
   record key sealed to the request's share key (:func:`seal_record_key`) in the calldata
   of a transaction from the contract owner's account to the newcomer's address: the one
   channel both already read, authenticated by the chain (only the owner's account can
   have sent it) and confidential by the envelope (only the share key's holder opens it).

The envelope is :mod:`protocol.envelope`'s, from a one-time X25519 key whose public half
travels with it, bound to the federation, the stage ``record-key`` and the hash of the
signed request; a replay of another newcomer's envelope does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Self

from protocol.canonical import canonical_json
from protocol.envelope import (
    EnvelopeContext,
    generate_private_key,
    key_from_hex,
    key_to_hex,
    load_private_key,
    open_envelope,
    public_key_bytes,
    seal,
)
from protocol.errors import ProtocolError
from protocol.hashing import keccak256

INVITATION_VERSION = 1
MAILBOX_PREFIX = b"lethe/record-key/v1\x00"
RECORD_KEY_STAGE = "record-key"
_PUBLIC_KEY_BYTES = 32


def new_code() -> str:
    """A one-time invitation code (128 bits)."""
    return secrets.token_urlsafe(16)


def code_hash(code: str) -> str:
    """What the owner keeps of a code: its SHA-256, hex."""
    return hashlib.sha256(code.encode()).hexdigest()


def _check(cls: type, data: object, what: str) -> dict[str, Any]:
    """``data`` as exactly ``cls``'s fields with their JSON types; ProtocolError naming one."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    names = {f.name for f in fields(cls)}
    missing, extra = names - set(data), set(data) - names
    if missing:
        raise ProtocolError(f"{what}: field {', '.join(sorted(missing))} is missing")
    if extra:
        raise ProtocolError(f"{what}: unexpected field {', '.join(sorted(extra))}")
    return data


@dataclass(frozen=True)
class Recipe:
    """How a node of this federation ingests its records (`lethe-node ingest`'s options)."""

    federation_id: str
    shards: int
    slices: int
    labels: list[str]
    feature_map: str


@dataclass(frozen=True)
class Invitation:
    """Everything a newcomer needs to join, and the code that proves it was invited."""

    version: int
    federation_id: str
    chain_id: int
    rpc_url: str
    contract: str
    deployment_block: int
    owner: str
    store: str
    superlink: str
    ca_certificate: str | None
    """PEM of the SuperLink's CA; None: a loopback SuperLink without TLS (local only)."""
    supernode_auth: bool
    recipe: Recipe
    stake_wei: int
    code: str
    issued_block: int
    """The chain's head when invited: the newcomer looks for its sealed key after it."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = _check(cls, json.loads(text), "invitation")
            data = {**data, "recipe": Recipe(**_check(Recipe, data["recipe"], "recipe"))}
            invitation = cls(**data)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"not a Lethe invitation: {exc}") from exc
        if invitation.version != INVITATION_VERSION:
            raise ProtocolError(f"invitation version {invitation.version} is not supported")
        return invitation

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            return cls.from_json(path.read_text())
        except OSError as exc:
            raise ProtocolError(f"cannot read the invitation {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class AdmissionRequest:
    """The newcomer's answer: who it is, its public keys, the code, all signed."""

    federation_id: str
    name: str
    address: str
    share_key: str
    """X25519 public key, 0x hex: the record key is sealed to it."""
    auth_key: str
    """The SuperNode's authentication public key (OpenSSH), for the SuperLink."""
    code: str
    signature: str

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but itself, canonically."""
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return b"lethe/admission-request/v1\x00" + canonical_json(body)

    def digest(self) -> str:
        """The request's identity (hex keccak-256 of the signed bytes and signature)."""
        return "0x" + keccak256(self.signed_bytes() + self.signature.encode()).hex()

    @classmethod
    def signed(cls, private_key: str, **body: str) -> Self:
        """The request with ``body``, signed with the Ethereum ``private_key``."""
        from eth_account import Account
        from eth_account.messages import encode_defunct

        unsigned = cls(**body, signature="")
        signature = Account.sign_message(
            encode_defunct(unsigned.signed_bytes()), private_key
        ).signature
        return cls(**body, signature="0x" + bytes(signature).hex())

    def check_signature(self) -> None:
        """ProtocolError unless ``address`` signed this request."""
        from eth_account import Account
        from eth_account.messages import encode_defunct

        try:
            signer = Account.recover_message(
                encode_defunct(self.signed_bytes()), signature=self.signature
            )
        except Exception as exc:  # eth_account raises several types for a malformed one
            raise ProtocolError(f"the admission request's signature is unreadable: {exc}") from exc
        if signer.lower() != self.address.lower():
            raise ProtocolError(
                f"the admission request names {self.address} but was signed by {signer}"
            )
        try:
            key_from_hex(self.share_key)
        except ValueError as exc:
            raise ProtocolError(f"share_key: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = _check(cls, json.loads(text), "admission request")
            if not all(isinstance(v, str) for v in data.values()):
                raise ProtocolError("admission request: every field must be a string")
            return cls(**data)
        except ValueError as exc:
            raise ProtocolError(f"not an admission request: {exc}") from exc

    def code_matches(self, expected_hash: str) -> bool:
        return hmac.compare_digest(code_hash(self.code), expected_hash)


def _context(request: AdmissionRequest, owner: str) -> EnvelopeContext:
    return EnvelopeContext(
        federation_id=request.federation_id,
        round=0,
        sender=owner.lower(),
        recipient=request.address.lower(),
        stage=RECORD_KEY_STAGE,
        roster=request.digest(),
    )


def seal_record_key(record_key: bytes, request: AdmissionRequest, owner: str) -> bytes:
    """The mailbox payload: prefix | one-time public key | envelope of ``record_key``."""
    one_time = generate_private_key()
    envelope = seal(
        one_time,
        key_from_hex(request.share_key),
        record_key,
        context=_context(request, owner),
    )
    return MAILBOX_PREFIX + public_key_bytes(one_time) + envelope


def open_record_key(
    payload: bytes, share_key: bytes, request: AdmissionRequest, owner: str
) -> bytes:
    """The record key in a mailbox ``payload``; ProtocolError if it is not one for us."""
    if not payload.startswith(MAILBOX_PREFIX):
        raise ProtocolError("not a sealed record key")
    rest = payload[len(MAILBOX_PREFIX) :]
    sender, envelope = rest[:_PUBLIC_KEY_BYTES], rest[_PUBLIC_KEY_BYTES:]
    return open_envelope(
        load_private_key(share_key), sender, envelope, context=_context(request, owner)
    )


def share_key_hex(private_key: bytes) -> str:
    """The 0x-hex public half of a stored X25519 private key."""
    return key_to_hex(public_key_bytes(load_private_key(private_key)))
