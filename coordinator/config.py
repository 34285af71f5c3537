"""The coordinator's configuration: one JSON file read by the ServerApp and the API alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from protocol.commitments import RecordKey
from protocol.errors import LetheError, ProtocolError
from protocol.federation import DEFAULT_LABELS, DEFAULT_SHARDS, DEFAULT_SLICES
from protocol.files import JsonConfig


class ConfigError(LetheError):
    """The coordinator configuration is missing or invalid."""


@dataclass(frozen=True)
class CoordinatorConfig(JsonConfig):
    """Chain, store, queue and round parameters of one federation's coordinator.

    ``slices`` initial rounds are run, round k releasing the models trained through
    slice k (so progress shows while SISA training proceeds); later rounds, run after
    forgets, use every slice. Every node must have ``shards`` × ``slices`` (it refuses
    the round otherwise). The fixed-point code and the noise inside the sum are not
    settings of the coordinator: every node derives them from the chain.
    """

    federation_id: str
    rpc_url: str
    contract: str
    coordinator_key_file: str
    store: str
    db: str
    api_token_file: str
    slices: int = DEFAULT_SLICES
    shards: int = DEFAULT_SHARDS
    min_nodes: int = 2
    deployment_block: int = 0
    train_timeout_s: float = 600.0
    stage_timeout_s: float = 30.0
    straggler_floor_s: float = 1.5
    straggler_factor: float = 3.0
    """After ``train``, once a majority answered a stage, the rest get max(floor, factor ×
    median latency) more (``coordinator.deadline``); a dead node costs ~the floor."""
    poll_s: float = 0.05
    forget_batch: int = 32
    owner_offline_s: float = 30.0
    """A request whose owner node has been missing this long shows ``waiting: owner …``."""
    backoff_max_s: float = 120.0
    """Longest pause between futile forget rounds (it doubles from 5 s; a node joining or a
    new request ends it at once)."""
    labels: tuple[str, ...] = DEFAULT_LABELS
    """The federation's classes in head order (the nodes' ``--labels``): names of scores."""
    feedback_forget_on: tuple[str, ...] = ("negative", "neutral")
    """The labels whose probability counts for forgetting in ``POST /feedback``."""
    feedback_tau: float = 0.8
    """τ: the model forgets a record when P(feedback_forget_on) ≥ τ, keeps it when
    P(the other labels) ≥ τ, and otherwise sends the row to a person ("review")."""
    feedback_temperature: float = 1.0
    """Logit temperature of the feedback scorer (``make bench-sentiment`` fits it on the
    test split; ``coordinator.calibration``)."""
    record_key_file: str = ""
    """The federation's record key, shared with the nodes and no one else
    (``protocol.commitments.RecordKey``): the API finds a record's owner with it."""

    def __post_init__(self) -> None:
        # JSON gives lists; the config is frozen and compared, so keep tuples.
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "feedback_forget_on", tuple(self.feedback_forget_on))

    ERROR: ClassVar[type[Exception]] = ConfigError
    WHAT: ClassVar[str] = "coordinator config"

    def validate(self) -> None:
        """Refuse parameters no federation can run with."""
        if self.slices < 1 or self.shards < 1 or self.min_nodes < 2:
            raise ConfigError(
                "need slices ≥ 1, shards ≥ 1 and min_nodes ≥ 2 (one node alone has no secret)"
            )
        if self.straggler_floor_s <= 0 or self.straggler_factor < 1:
            raise ConfigError(
                "need straggler_floor_s > 0 and straggler_factor ≥ 1 (a node as fast as the "
                f"median must be kept), got {self.straggler_floor_s}, {self.straggler_factor}"
            )
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"need ≥ 2 distinct labels, got {list(self.labels)}")
        if not 0.5 <= self.feedback_tau <= 1.0:
            raise ConfigError(f"feedback_tau must be within 0.5 … 1, got {self.feedback_tau}")
        if not 0 < self.feedback_temperature <= 100:
            raise ConfigError(
                f"feedback_temperature must be within (0, 100], got {self.feedback_temperature}"
            )
        unknown = sorted(set(self.feedback_forget_on) - set(self.labels))
        if unknown:
            raise ConfigError(
                f"feedback_forget_on names {unknown}, which are not labels {list(self.labels)}"
            )

    def coordinator_key(self) -> str:
        """The coordinator's Ethereum private key (hex)."""
        return Path(self.coordinator_key_file).read_text().strip()

    def record_key(self) -> RecordKey:
        """The federation's record key; ConfigError if it is missing or malformed."""
        try:
            return RecordKey.load(self.record_key_file, self.federation_id)
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from exc

    def api_token(self) -> str:
        """The bearer token the API accepts."""
        return Path(self.api_token_file).read_text().strip()
