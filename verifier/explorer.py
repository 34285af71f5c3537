"""The explorer page: rounds, nodes and forget requests from chain and store, with audit badges.

One self-contained HTML document (inline CSS, no script, nothing fetched from elsewhere), so
it renders offline and behind any firewall. Every badge is the verdict of
:func:`verifier.audit.audit` run with ``keep_going=True``: the page shows what the
audit checks, never its own opinion. Every value from the chain, the store or the
coordinator's database is HTML-escaped: CIDs and strings on chain are attacker-chosen.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from html import escape
from typing import TYPE_CHECKING, Any, Protocol

from protocol.errors import LetheError
from protocol.stakes import format_ether
from verifier.audit import (
    AuditReport,
    ForgetAudit,
    IncrementalAudit,
    NodeAudit,
    RoundAudit,
    TxRef,
    audit,
)

if TYPE_CHECKING:
    from protocol.ledger import Ledger
    from protocol.store import ContentStore

_CSS = """
:root { --ink:#1d2433; --muted:#5f6b7e; --line:#e3e7ee; --bg:#f6f7f9; --card:#fff;
  --ok:#117a43; --ok-bg:#e3f5ea; --warn:#8a5a00; --warn-bg:#fff3d6; --bad:#b42318;
  --bad-bg:#fde8e6; --accent:#3355cc; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#182033; color:#fff; padding:20px 32px; }
header h1 { margin:0 0 4px; font-size:22px; letter-spacing:.3px; }
header .meta { color:#b9c2d3; font-size:13px; }
header code { color:#dfe5f0; }
main { max-width:1280px; margin:0 auto; padding:24px 32px 48px; }
h2 { font-size:17px; margin:32px 0 12px; }
code { font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.verdict { border-radius:8px; padding:14px 18px; font-weight:600; }
.verdict.ok { background:var(--ok-bg); color:var(--ok); border:1px solid #b7e2c6; }
.verdict.bad { background:var(--bad-bg); color:var(--bad); border:1px solid #f5c2bc; }
.verdict small { display:block; font-weight:400; color:var(--ink); margin-top:4px; }
.cards { display:grid; grid-template-columns:repeat(4,1fr); gap:12px; margin-top:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:12px 16px; }
.card .n { font-size:22px; font-weight:650; }
.card .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
table { width:100%; border-collapse:collapse; background:var(--card);
  border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { background:#eef1f6; font-size:12px; color:var(--muted); text-transform:uppercase;
  letter-spacing:.4px; }
tr:last-child td { border-bottom:none; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td code { white-space:nowrap; }
.sub { color:var(--muted); font-size:12px; }
.badge { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px;
  font-weight:600; }
.badge.verified { background:var(--ok-bg); color:var(--ok); }
.badge.pending { background:var(--warn-bg); color:var(--warn); }
.badge.failed { background:var(--bad-bg); color:var(--bad); }
.problem td { background:var(--bad-bg); color:var(--bad); }
.addrs { display:flex; flex-wrap:wrap; gap:4px; }
.addrs code { background:#eef1f6; border-radius:4px; padding:0 4px; }
.forget { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:14px 18px; margin-bottom:14px; }
.forget h3 { margin:0 0 2px; font-size:15px; display:flex; gap:10px; align-items:center; }
.forget .problem { background:var(--bad-bg); color:var(--bad); border-radius:6px;
  padding:8px 12px; margin-top:10px; }
ol.timeline { list-style:none; margin:12px 0 0; padding:0; display:grid;
  grid-template-columns:repeat(3,1fr); gap:12px; }
ol.timeline li { border-top:3px solid var(--accent); padding:8px 4px 0; }
ol.timeline li.waiting { border-top-color:var(--line); color:var(--muted); }
ol.timeline li b { display:block; margin-bottom:4px; }
dl { margin:0; display:grid; grid-template-columns:auto 1fr; gap:2px 10px; font-size:12.5px; }
dt { color:var(--muted); }
dd { margin:0; overflow-wrap:anywhere; }
.empty { color:var(--muted); background:var(--card); border:1px dashed var(--line);
  border-radius:8px; padding:14px 18px; }
footer { color:var(--muted); font-size:12px; margin-top:40px; }
"""


class RoundLog(Protocol):
    """Where the page reads the accuracy each round's approvers reported (the coordinator's
    queue, when the API serves the page): not verified, shown as reported."""

    def list_rounds(self) -> list[dict[str, Any]]: ...


def render_explorer(ledger: Ledger, store: ContentStore, db: RoundLog | None = None) -> str:
    """The whole explorer page for the contract behind ``ledger``.

    ``db`` (the coordinator's database) only adds what the chain cannot know, such as a
    round's test accuracy; everything else comes from the chain and the store. A chain
    that cannot be read gives a page that says so, not an exception.
    """
    try:
        report = audit(ledger, store, keep_going=True)
        return _render(_Page(ledger, report, _accuracies(db)))
    except LetheError as exc:
        return _unreadable(ledger, exc)


class LiveExplorer:
    """The explorer page as the API serves it: incremental, cached, one render at a time.

    The audit behind it replays only blocks it has not seen (:class:`IncrementalAudit`);
    the page is re-rendered only when the chain head moved, and the head is asked for at
    most once per ``min_interval`` seconds, so a flood of requests costs one cached string
    each. Gas and block times read for earlier renders are kept.
    """

    def __init__(
        self,
        ledger: Ledger,
        store: ContentStore,
        db: RoundLog | None = None,
        *,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.db = db
        self.min_interval = min_interval
        self._clock = clock
        self._audit = IncrementalAudit(ledger, store)
        self._lock = threading.Lock()
        self._html: str | None = None
        self._block = -1
        self._checked = -math.inf
        self._gas: dict[str, int] = {}
        self._times: dict[int, int] = {}

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if self._html is not None and now - self._checked < self.min_interval:
                return self._html
            self._checked = now
            try:
                head = self.ledger.block_number()
                if self._html is None or head != self._block:
                    report = self._audit.update(head)
                    page = _Page(self.ledger, report, _accuracies(self.db), self._gas, self._times)
                    self._html, self._block = _render(page), head
            except LetheError as exc:
                return _unreadable(self.ledger, exc)
            return self._html


def _render(page: _Page) -> str:
    report = page.report
    meta = (
        f"federation <b>{_e(report.federation_id or '—')}</b> · contract "
        f"<code>{_e(report.contract)}</code> · chain {report.chain_id} · blocks "
        f"{report.from_block}–{report.to_block}"
    )
    return _document(meta, page.render())


def _unreadable(ledger: Ledger, exc: LetheError) -> str:
    body = f'<div class="verdict bad">The history cannot be read<small>{_e(exc)}</small></div>'
    return _document(f"contract <code>{_e(ledger.address)}</code>", body)


def _accuracies(db: RoundLog | None) -> dict[int, float]:
    if db is None:
        return {}
    found = {}
    for info in db.list_rounds():
        value = info.get("accuracy")
        if isinstance(value, int | float):
            found[int(info["round"])] = float(value)
    return found


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _short(value: str) -> str:
    """A long hash or CID shortened for tables; the full value is its tooltip."""
    shown = value if len(value) <= 20 else f"{value[:10]}…{value[-6:]}"
    return f'<code title="{_e(value)}">{_e(shown)}</code>'


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _addresses(addresses: Iterable[str]) -> str:
    return '<div class="addrs">' + "".join(_short(a) for a in addresses) + "</div>"


def _table(table_id: str, headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<div class="empty">{_e(empty)}</div>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<table id="{_e(table_id)}"><tr>{head}</tr>{"".join(rows)}</table>'


def _document(meta: str, body: str) -> str:
    rendered = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Lethe explorer</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<header><h1>Lethe explorer</h1><div class="meta">{meta}</div></header>'
        f"<main>{body}<footer>Rendered {rendered} from the chain's events and the content "
        "store; badges are the verdicts of <code>lethe audit</code>.</footer></main>"
        "</body></html>"
    )


class _Page:
    """Renders one report, reading gas and block times from the chain once per tx or block."""

    def __init__(
        self,
        ledger: Ledger,
        report: AuditReport,
        accuracy: dict[int, float],
        gas: dict[str, int] | None = None,
        times: dict[int, int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.accuracy = accuracy
        self._gas = {} if gas is None else gas
        self._times = {} if times is None else times

    def gas(self, tx: TxRef) -> int:
        if tx.tx_hash not in self._gas:
            self._gas[tx.tx_hash] = self.ledger.receipt(tx.tx_hash).gas_used
        return self._gas[tx.tx_hash]

    def when(self, tx: TxRef) -> str:
        if tx.block_number not in self._times:
            self._times[tx.block_number] = self.ledger.block_timestamp(tx.block_number)
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._times[tx.block_number]))

    def render(self) -> str:
        return "".join(
            [
                self.verdict(),
                self.cards(),
                "<h2>Rounds</h2>",
                self.rounds(),
                "<h2>Nodes</h2>",
                self.nodes(),
                self.stakes(),
                "<h2>Forget requests</h2>",
                self.forgets(),
            ]
        )

    def verdict(self) -> str:
        report = self.report
        if report.failure is None:
            return f'<div class="verdict ok">✓ {_e(report.verdict())}</div>'
        more = len(report.failures) - 1
        extra = f" ({more} more below)" if more else ""
        return (
            f'<div class="verdict bad">✗ Audit failed{_e(extra)}'
            f"<small>{_e(report.failure.message)}</small></div>"
        )

    def cards(self) -> str:
        r = self.report
        finalized = sum(x.finalized is not None for x in r.rounds)
        admitted = sum(n.removed is None for n in r.nodes)
        completed = sum(f.completed is not None for f in r.forgets)
        cards = [
            (f"{finalized} / {len(r.rounds)}", "rounds finalized"),
            (f"{admitted}", "nodes admitted"),
            (f"{completed} / {len(r.forgets)}", "forgets completed"),
            (f"{r.events}", "events replayed"),
        ]
        return (
            '<div class="cards">'
            + "".join(
                f'<div class="card"><div class="n">{_e(n)}</div><div class="l">{_e(label)}</div>'
                "</div>"
                for n, label in cards
            )
            + "</div>"
        )

    # -- rounds ----------------------------------------------------------------------------

    def rounds(self) -> str:
        return _table(
            "rounds",
            [
                "Round",
                "Audit",
                "Block",
                "Proposal tx",
                "Gas",
                "Participants",
                "Approvals",
                "Global model",
                "Accuracy",
            ],
            [self.round_row(r) for r in self.report.rounds],
            "No round has been proposed yet.",
        )

    def round_row(self, r: RoundAudit) -> str:
        # Approvals signed off chain ride in the proposal's transaction: its gas, counted once.
        approval_txs = {a.tx for a in r.approvals} - {r.proposed}
        approvals_gas = sum(self.gas(tx) for tx in approval_txs)
        accuracy = self.accuracy.get(r.round)
        finalized = (
            f'<div class="sub">finalized in block {r.finalized.block_number}</div>'
            if r.finalized
            else '<div class="sub">not finalized</div>'
        )
        row = (
            f'<tr class="round" data-round="{r.round}" data-status="{_e(r.status)}">'
            f'<td class="num"><b>{r.round}</b></td>'
            f"<td>{_badge(r.status)}</td>"
            f'<td class="num">{r.proposed.block_number}</td>'
            f"<td>{_short(r.proposed.tx_hash)}</td>"
            f'<td class="num">{self.gas(r.proposed):,}'
            f'<div class="sub">+ {approvals_gas:,} for approvals</div></td>'
            f"<td>{len(r.participants)} updates{_addresses(r.participants)}</td>"
            f"<td>{len(r.approvals)} of quorum {r.quorum}{finalized}"
            f"{_addresses(a.node for a in r.approvals)}</td>"
            f'<td>{_short(r.global_model_cid)}<div class="sub">manifest '
            f"{_short(r.manifest_cid)}</div></td>"
            f'<td class="num">{"—" if accuracy is None else f"{accuracy:.1%}"}</td>'
            "</tr>"
        )
        if r.problem:
            row += f'<tr class="problem"><td colspan="9">✗ {_e(r.problem)}</td></tr>'
        return row

    # -- nodes -----------------------------------------------------------------------------

    def nodes(self) -> str:
        return _table(
            "nodes",
            ["Address", "Status", "Admitted", "X25519 key", "Rounds joined"],
            [self.node_row(n) for n in self.report.nodes],
            "No node has been admitted yet.",
        )

    def node_row(self, n: NodeAudit) -> str:
        status = "admitted" if n.removed is None else f"removed in block {n.removed.block_number}"
        rounds = ", ".join(str(r) for r in n.rounds) or "—"
        key = _short(n.key) if n.key else '<span class="sub">not registered</span>'
        return (
            f'<tr class="node" data-address="{_e(n.address)}">'
            f"<td><code>{_e(n.address)}</code></td><td>{_e(status)}</td>"
            f'<td>block {n.admitted.block_number}<div class="sub">tx '
            f"{_short(n.admitted.tx_hash)}</div></td>"
            f"<td>{key}</td><td>{_e(rounds)}</td></tr>"
        )

    # -- forgets ---------------------------------------------------------------------------

    def forgets(self) -> str:
        if not self.report.forgets:
            return '<div class="empty">No forget request yet.</div>'
        return "".join(self.forget_card(f) for f in self.report.forgets)

    def step(self, title: str, tx: TxRef | None, facts: list[tuple[str, str]]) -> str:
        if tx is None:
            return f'<li class="waiting"><b>{_e(title)}</b>waiting</li>'
        rows = [
            ("block", f"{tx.block_number} · {_e(self.when(tx))}"),
            ("tx", f"<code>{_e(tx.tx_hash)}</code>"),
            ("gas", f"{self.gas(tx):,}"),
            *facts,
        ]
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
        return f"<li><b>{_e(title)}</b><dl>{dl}</dl></li>"

    def forget_card(self, f: ForgetAudit) -> str:
        certified: list[tuple[str, str]] = []
        if f.node is not None:
            certified.append(("node", f"<code>{_e(f.node)}</code>"))
        if f.certificate_cid is not None:
            certified.append(("certificate", f'<code class="cid">{_e(f.certificate_cid)}</code>'))
        if f.certificate is not None:
            c = f.certificate
            certified += [
                ("record", f"shard {c.shard}, slice {c.slice} of {c.slices_total}"),
                (
                    "retrained",
                    f"slices {c.slices_retrained[0]}–{c.slices_retrained[-1]}, "
                    f"{c.samples_retrained:,} samples, {c.wall_time_ms:,} ms",
                ),
                ("model after", _short(c.model_hash_after)),
            ]
        completed = [] if f.completed_round is None else [("round", str(f.completed_round))]
        requested = [] if f.owner is None else [("owner node", f"<code>{_e(f.owner)}</code>")]
        problem = f'<div class="problem">✗ {_e(f.problem)}</div>' if f.problem else ""
        title = _e(f.label) if f.label else _short(f.request_id)
        return (
            f'<section class="forget" data-request="{_e(f.request_id)}" '
            f'data-status="{_e(f.status)}">'
            f"<h3>{title} {_badge(f.status)}</h3>"
            f'<div class="sub">request id {_short(f.request_id)} · record commitment '
            f"{_short(f.record_commitment)}</div>"
            '<ol class="timeline">'
            + self.step("Requested", f.requested, requested)
            + self.step("Certified", f.certified, certified)
            + self.step("Completed", f.completed, completed)
            + f"</ol>{problem}</section>"
        )

    # -- stakes, rewards and slashes -------------------------------------------------------

    def stakes(self) -> str:
        """The reward pool's flows and each node's stake, rewards and slashes (if in use)."""
        stakes = self.report.stakes
        if stakes is None:
            return ""
        pool = (
            f'<div class="sub" id="pool">Reward pool {_e(format_ether(stakes["pool_wei"]))}: '
            f"funded {_e(format_ether(stakes['funded_wei']))}, slashed in "
            f"{_e(format_ether(stakes['slashed_wei']))}, paid out "
            f"{_e(format_ether(stakes['paid_wei']))}</div>"
        )
        rows = [
            f'<tr class="stake" data-address="{_e(n["address"])}">'
            f"<td><code>{_e(n['address'])}</code></td>"
            f'<td class="num">{_e(format_ether(n["stake_wei"]))}</td>'
            f'<td class="num">{_e(format_ether(n["rewards_claimed_wei"]))}</td>'
            f'<td class="num">{_e(format_ether(n["rewards_claimable_wei"]))}</td>'
            f'<td class="num">{_e(format_ether(n["slashed_wei"]))}'
            f"{_addresses(n['slashed_requests'])}</td>"
            f"<td>{'block ' + str(n['unlock_block']) if n['unlock_block'] else '—'}</td></tr>"
            for n in stakes["nodes"]
        ]
        headers = ["Address", "Stake", "Rewards claimed", "Claimable", "Slashed", "Unstakes at"]
        return (
            "<h2>Stakes and rewards</h2>"
            + pool
            + _table("stakes", headers, rows, "No node has staked yet.")
        )
