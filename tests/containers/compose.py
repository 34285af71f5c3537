"""A compose project of the federation, driven with podman and podman-compose from the host.

The commands are the ones README's "Running a federation" shows; ``make test-containers``
builds the images first. Only loopback ports of this host and the project's own
containers are ever contacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from infra.net import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.offline.yml")
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"
CONTAINERS_CONF = REPO_ROOT / "docker" / "containers.conf"


class ComposeError(AssertionError):
    """A podman or podman-compose command failed."""


@dataclass
class ComposeProject:
    """One running compose project with its own name, volumes, network and host ports."""

    name: str
    api_port: int = field(default_factory=free_port)
    chain_port: int = field(default_factory=free_port)
    store_port: int = field(default_factory=free_port)
    joined: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            "LETHE_API_PORT": str(self.api_port),
            "LETHE_CHAIN_PORT": str(self.chain_port),
            "LETHE_STORE_PORT": str(self.store_port),
        }

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def rpc(self) -> str:
        return f"http://127.0.0.1:{self.chain_port}"

    @property
    def store(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.store_port}"

    # -- commands ---------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], *, timeout: float = 120, check: bool = True, merge: bool = False
    ) -> str:
        """Run a command; its stdout (``merge``: with its stderr, e.g. a container's log)."""
        result = subprocess.run(
            list(argv),
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ComposeError(
                f"{' '.join(argv)} → {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def compose(self, *args: str, timeout: float = 300) -> str:
        files = [arg for f in COMPOSE_FILES for arg in ("-f", f)]
        return self.run([str(PODMAN_COMPOSE), "-p", self.name, *files, *args], timeout=timeout)

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return self.run(["podman", *args], timeout=timeout, check=check)

    def container(self, service: str) -> str:
        """The container name of a service (podman-compose: project_service_1)."""
        names = self.podman(
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=com.docker.compose.project={self.name}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).split()
        if len(names) != 1:
            raise ComposeError(f"service {service}: containers {names}")
        return names[0]

    def log(self, container: str, *args: str) -> str:
        """A container's whole log: Flower writes its lines to stderr."""
        return self.run(["podman", "logs", *args, container], merge=True)

    @classmethod
    def attach(cls, name: str) -> ComposeProject:
        """A project already up (a rerun while developing), its host ports read back."""
        project = cls(name)
        for service, port, attr in (
            ("coordinator", "8080", "api_port"),
            ("chain", "8545", "chain_port"),
            ("ipfs", "5001", "store_port"),
        ):
            bound = project.podman("port", project.container(service), port).split()[0]
            setattr(project, attr, int(bound.rsplit(":", 1)[1]))
        return project

    def exec(self, service: str, *argv: str, timeout: float = 120, check: bool = True) -> str:
        return self.podman("exec", self.container(service), *argv, timeout=timeout, check=check)

    def inspect(self, service: str) -> dict[str, Any]:
        return dict(json.loads(self.podman("inspect", self.container(service)))[0])

    def network(self, name: str = "federation") -> str:
        return f"{self.name}_{name}"

    def up(self) -> None:
        self.compose("up", "-d", timeout=600)

    def down(self) -> None:
        self.compose("down", "-v", "-t", "5", timeout=300)
        # podman-compose 1.x leaves the volumes named like a service (node-1, …) behind.
        for volume in self.podman("volume", "ls", "--format", "{{.Name}}").split():
            if volume.startswith(f"{self.name}_"):
                self.podman("volume", "rm", "-f", volume, check=False)

    def logs(self) -> str:
        out = []
        for service in ("owner", "coordinator", "node-1", "node-2", "node-3", "ipfs", "chain"):
            try:
                tail = self.log(self.container(service), "--tail", "60")
            except ComposeError as exc:
                tail = str(exc)
            out.append(f"----- {service}\n{tail}")
        log = self.exec("coordinator", "tail", "-n", "40", "/state/coordinator.log", check=False)
        out.append(f"----- coordinator.log\n{log}")
        for name in self.joined:
            tail = self.log(self.joined[name], "--tail", "60")
            out.append(f"----- {name} (joined)\n{tail}")
        return "\n".join(out)

    # -- a participant joining the running federation (README, "A new participant") ----

    def join(self, name: str, csv: Path) -> str:
        """Start ``name``'s node container on the federation's network, its own volumes,
        the records of ``csv``; returns the container name."""
        container = f"{self.name}_{name}"
        self.joined[name] = container
        env = {
            "LETHE_RPC_URL": "http://chain-gate:8545",
            "LETHE_STORE": "http://ipfs:5001",
            "LETHE_FEDERATION": "lethe-compose",
            "LETHE_SLICES": "4",
            "LETHE_NODE_NAME": name,
            "LETHE_CSV": "/input/records.csv",
        }
        self.podman(
            "run", "-d", "--name", container, "--network", self.network(),
            "--network", self.network("store"),
            "-v", f"{container}:/data", "-v", f"{container}-outbox:/outbox",
            "-v", f"{self.name}_public:/public:ro",
            "-v", f"{self.name}_record-key:/record-key:ro",
            "-v", f"{csv.resolve()}:/input/records.csv:ro",
            *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
            "lethe:0.1.0", "node",
        )  # fmt: skip
        return container

    def admit_and_register(self, name: str) -> str:
        """The owner admits the new address on chain; the coordinator registers its
        SuperNode key. Returns the address."""
        container = self.joined[name]
        address = self.wait_for(
            f"{name} address",
            lambda: self.podman("exec", container, "cat", "/outbox/address").strip(),
            timeout=120,
        )
        self.exec("owner", "/app/docker/admit.sh", name, address)
        auth_pub = self.podman("exec", container, "cat", "/outbox/auth.pub")
        result = subprocess.run(
            ["podman", "exec", "-i", self.container("coordinator"),
             "/app/docker/register.sh", name],
            input=auth_pub, env=self.env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ComposeError(f"register.sh {name} → {result.returncode}\n{result.stderr}")
        return str(address).lower()

    def remove_joined(self) -> None:
        for container in self.joined.values():
            self.podman("rm", "-f", "-t", "3", container, check=False)
            self.podman("volume", "rm", "-f", container, f"{container}-outbox", check=False)

    # -- the coordinator's API, from the host ------------------------------------------

    def token(self) -> str:
        return self.exec("coordinator", "cat", "/state/api.token").strip()

    def get(self, path: str) -> Any:
        return requests.get(f"{self.api}{path}", timeout=10).json()

    def wait_for(self, what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (requests.RequestException, ComposeError, ValueError) as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(every)
        raise AssertionError(
            f"{what} not reached within {timeout:.0f} s (last: {last!r})\n{self.logs()}"
        )

    def finalized(self) -> list[dict[str, Any]]:
        return [r for r in self.get("/rounds") if r.get("state") == "finalized"]

    def record_of(self, service: str) -> str:
        return self.exec(
            service, "lethe-node", "records", "--db", "/data/node.sqlite", "--sample", "1"
        ).strip()

    def address_of(self, service: str) -> str:
        return self.exec(service, "cat", "/outbox/address").strip().lower()

    def forget(self, record_id: str, request_id: str) -> dict[str, Any]:
        res = requests.post(
            f"{self.api}/forget",
            json={"record_id": record_id, "request_id": request_id},
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=10,
        )
        assert res.status_code in (200, 202), res.text
        return dict(res.json())

    def request(self, request_id: str) -> dict[str, Any]:
        return dict(self.get(f"/forget/{request_id}"))
