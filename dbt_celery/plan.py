"""A run's plan: its nodes, their edges, and the Celery task id of each consumer.

Written once by the producer after it resolved the selection, read by consumers
(their own entry, never the manifest) and by run handles in any process. Task ids are
derived from the run id, so every process computes the same ones.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Mapping

from dbt_celery.project import GraphNode, ProjectGraph
from dbt_celery.store import StatusStore

_NAMESPACE = uuid.UUID("6f2b8a54-3f0e-4a53-9d7c-2c1f0e9d1c44")


def consumer_task_id(run_id: str, unique_id: str) -> str:
    """The task id of the consumer of one node in one run."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/node/{unique_id}"))


def producer_task_id(run_id: str) -> str:
    """The task id of a run's producer."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/producer"))


def node_entry_name(unique_id: str) -> str:
    """The store document holding one node's plan entry."""
    return f"plannode_{unique_id}"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The nodes of a run in dbt's build order, with their consumers' task ids."""

    run_id: str
    nodes: Mapping[str, GraphNode]

    @classmethod
    def from_graph(cls, run_id: str, graph: ProjectGraph) -> "RunPlan":
        """Plan a run over the selected nodes of a project graph."""
        return cls(run_id=run_id, nodes=dict(graph.nodes))

    def roots(self) -> list[str]:
        """Nodes whose consumers start at once (no parent in the selection)."""
        return sorted(uid for uid, node in self.nodes.items() if not node.parents)

    def task_id(self, unique_id: str) -> str:
        """The consumer task id of one node."""
        return consumer_task_id(self.run_id, unique_id)

    def summary(self) -> dict[str, Any]:
        """The compact plan document: every node's name, type and task id."""
        return {
            "run_id": self.run_id,
            "nodes": {
                uid: {"name": node.name, "resource_type": node.resource_type, "task_id": self.task_id(uid)}
                for uid, node in self.nodes.items()
            },
        }

    def save(self, store: StatusStore) -> None:
        """Write one entry per node, then the summary that makes the plan visible."""
        store.put_documents(self.run_id, {node_entry_name(uid): node.to_dict() for uid, node in self.nodes.items()})
        store.put_document(self.run_id, "plan", self.summary())


def load_nodes(store: StatusStore, run_id: str, unique_ids: list[str]) -> dict[str, GraphNode]:
    """Read the plan entries of some nodes (a consumer's own, its children's)."""
    entries = store.documents(run_id, [node_entry_name(uid) for uid in unique_ids])
    return {uid: GraphNode.from_dict(entry) for uid, entry in zip(unique_ids, entries) if entry is not None}
