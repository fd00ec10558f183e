"""A run's plan: its nodes and edges, the consumers' task ids, and which consumer goes next.

Written once by the producer after it resolved the selection, read by consumers
(their own entry and their children's, never the manifest) and by run handles in any
process. Task ids derive from the run id, so every process computes the same ones.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Iterable, Mapping

from dbt_celery.core.records import PASSING_STATES, NodeOutcome, NodeState
from dbt_celery.core.store import HeldLease, StatusStore, decode_payload
from dbt_celery.errors import PayloadError

_NAMESPACE = uuid.UUID("6f2b8a54-3f0e-4a53-9d7c-2c1f0e9d1c44")


def consumer_task_id(run_id: str, unique_id: str) -> str:
    """The task id of the consumer of one node in one run."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/node/{unique_id}"))


def producer_task_id(run_id: str, generation: int = 1) -> str:
    """The task id of a run's producer (a resumed producer has one per generation)."""
    suffix = "" if generation <= 1 else f"/{generation}"
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/producer{suffix}"))


def watchdog_task_id(run_id: str) -> str:
    """The task id of a run's watchdog (each round is the same task, sent again)."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/watchdog"))


def node_entry_name(unique_id: str) -> str:
    """The store document holding one node's plan entry."""
    return f"plannode_{unique_id}"


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One node of a run, with its neighbours inside the selection."""

    unique_id: str
    resource_type: str
    name: str
    selector: str
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form kept in a run's plan."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphNode:
        """Rebuild a node from :meth:`to_dict` output; a value of the wrong shape is a PayloadError."""
        try:
            return cls(
                unique_id=str(data["unique_id"]),
                resource_type=str(data["resource_type"]),
                name=str(data["name"]),
                selector=str(data["selector"]),
                parents=tuple(data.get("parents", ())),
                children=tuple(data.get("children", ())),
                tests=tuple(data.get("tests", ())),
            )
        except (KeyError, TypeError) as exc:
            raise PayloadError(f"stored value is not a plan entry: missing {exc}") from None

    @classmethod
    def placeholder(cls, unique_id: str) -> GraphNode:
        """A node known only by its id (its plan entry is unreadable): enough to send its consumer."""
        return cls(unique_id, unique_id.split(".", 1)[0], unique_id.rsplit(".", 1)[-1], "")


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The nodes of a run in dbt's build order, with their consumers' task ids."""

    run_id: str
    nodes: Mapping[str, GraphNode]

    def roots(self) -> list[str]:
        """Nodes whose consumers start at once (no parent in the selection)."""
        return sorted(uid for uid, node in self.nodes.items() if not node.parents)

    def summary(self) -> dict[str, Any]:
        """The compact plan document: every node's name, type and task id."""
        return {
            "run_id": self.run_id,
            "nodes": {
                uid: {
                    "name": node.name,
                    "resource_type": node.resource_type,
                    "task_id": consumer_task_id(self.run_id, uid),
                }
                for uid, node in self.nodes.items()
            },
        }

    def save(self, store: StatusStore, lease: HeldLease | None = None) -> bool:
        """Write every node's entry and the summary that makes the plan visible, in one write."""
        documents = {node_entry_name(uid): node.to_dict() for uid, node in self.nodes.items()}
        return store.put_documents(self.run_id, {**documents, "plan": self.summary()}, lease)

    @classmethod
    def load(cls, store: StatusStore, run_id: str) -> RunPlan | None:
        """Read a whole plan back (a resumed producer, a watchdog); None before it is saved."""
        (summary,) = store.documents(run_id, ["plan"])
        if summary is None:
            return None
        return cls(run_id, load_nodes(store, run_id, list(summary["nodes"])))


def plan_summary(store: StatusStore, run_id: str) -> dict[str, dict[str, Any]] | None:
    """Every planned node's name, type and task id; None before the run is planned."""
    (summary,) = store.documents(run_id, ["plan"])
    return dict(summary["nodes"]) if summary else None


def load_nodes(store: StatusStore, run_id: str, unique_ids: list[str]) -> dict[str, GraphNode]:
    """Read the plan entries of some nodes (a consumer's own, its children's); a broken one raises."""
    nodes, broken = read_nodes(store, run_id, unique_ids)
    if broken:
        raise PayloadError(f"run {run_id}: the plan entry of {broken[0]} is missing or unreadable")
    return nodes


def read_nodes(store: StatusStore, run_id: str, unique_ids: list[str]) -> tuple[dict[str, GraphNode], list[str]]:
    """Read the plan entries of some nodes; also return the ids whose entries are absent or unreadable."""
    raws = store.kv.get_many([store.key(run_id, node_entry_name(uid)) for uid in unique_ids])
    nodes: dict[str, GraphNode] = {}
    broken: list[str] = []
    for uid, raw in zip(unique_ids, raws):
        try:
            if raw is None:
                raise PayloadError("absent")
            nodes[uid] = GraphNode.from_dict(decode_payload(raw))
        except PayloadError:
            broken.append(uid)
    return nodes, broken


def ready_children(store: StatusStore, run_id: str, node: GraphNode) -> list[GraphNode]:
    """The children of a passed node whose parents have all passed now.

    A child whose plan entry is unreadable comes back as a placeholder: its own consumer
    then ends it ``error``, saying so, instead of leaving it waiting.
    """
    children, broken = read_nodes(store, run_id, list(node.children))
    ready = [GraphNode.placeholder(uid) for uid in broken]
    parents = sorted({parent for child in children.values() for parent in child.parents})
    outcomes = store.outcomes(run_id, parents) if parents else {}  # one read for all the children
    for child in children.values():
        if all(parent in outcomes and outcomes[parent].state in PASSING_STATES for parent in child.parents):
            ready.append(child)
    return ready


def children_of(store: StatusStore, run_id: str, unique_id: str) -> tuple[str, ...]:
    """A node's children, read from the other nodes' entries (when its own entry is unreadable)."""
    nodes, _ = read_nodes(store, run_id, list(plan_summary(store, run_id) or {}))
    return tuple(sorted(uid for uid, node in nodes.items() if unique_id in node.parents))


def fail_descendants(
    store: StatusStore, run_id: str, unique_id: str, children: Iterable[str], state: NodeState
) -> list[GraphNode]:
    """End every not-yet-enqueued descendant of a node that did not pass; return them.

    They end ``upstream_failed``, or ``cancelled`` when the node was cancelled. A
    descendant whose consumer was already sent resolves on its own; the enqueue claim
    makes it one or the other. (Unreadable plan entries come back as placeholders.)
    """
    cancelled = state is NodeState.CANCELLED
    outcome = NodeOutcome(
        NodeState.CANCELLED if cancelled else NodeState.UPSTREAM_FAILED,
        "cancelled" if cancelled else "upstream_failed",
        message=f"not built: upstream node {unique_id} ended {state.value}",
    )
    failed: list[GraphNode] = []
    seen: set[str] = set()
    frontier = list(children)
    while frontier:
        entries, broken = read_nodes(store, run_id, [uid for uid in frontier if uid not in seen])
        frontier = []
        for uid in [*entries, *broken]:
            seen.add(uid)
            if not store.claim(run_id, f"enqueue_{uid}"):
                continue
            if store.put_outcome(run_id, uid, outcome.replace(recorded_at=time.time())):
                failed.append(entries.get(uid) or GraphNode.placeholder(uid))
            frontier.extend(entries[uid].children if uid in entries else children_of(store, run_id, uid))
    return failed
