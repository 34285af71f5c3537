"""Generate a participant's keys inside its own container; only public halves leave it.

``python docker/keys.py eth DIR``   Ethereum key: DIR/eth.key (0600), prints the address.
``python docker/keys.py auth DIR``  SuperNode authentication key (ECDSA P-384, OpenSSH
                                     format, as Flower's `flwr supernode register` takes):
                                     DIR/auth.key (0600) and DIR/auth.pub.
Existing keys are kept, so a restarted container keeps its identity.
"""

import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account import Account

from protocol.files import write_secret


def eth(folder: Path) -> str:
    key = folder / "eth.key"
    if not key.exists():
        write_secret(key, ("0x" + bytes(Account.create().key).hex()).encode())
    return str(Account.from_key(key.read_text().strip()).address)


def auth(folder: Path) -> str:
    key, pub = folder / "auth.key", folder / "auth.pub"
    if not key.exists():
        private = ec.generate_private_key(ec.SECP384R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        write_secret(key, pem)
    loaded = serialization.load_ssh_private_key(key.read_bytes(), password=None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pub.write_bytes(public + b"\n")
    return str(pub)


if __name__ == "__main__":
    kind, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    print({"eth": eth, "auth": auth}[kind](folder))
