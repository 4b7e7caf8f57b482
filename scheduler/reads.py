"""Which RPCs a following standby may answer from its read-only copy of the state.

There is one classification of the protocol's RPCs, the access table of :mod:`scheduler.auth`
(``RPC_ACCESS``): ``read`` is what a viewer may ask. Two of those reads change the state all
the same, so a standby, which must never write, sends them to the leader like any write:

* ``count_pending`` registers (or refreshes) the asking worker, as luigid does;
* ``get_scheduler_message_response`` removes the answer it returns (it is read once).

``task_list_chunks`` and ``status_counts`` are the node's own names for the streamed form of
``task_list`` and the zero-effect read behind it (scheduler/http.py).
"""

from __future__ import annotations

from scheduler.auth import RPC_ACCESS

#: Reads by access that change the state, with why: answered by the leader only.
WRITING_READS: dict[str, str] = {
    "count_pending": "registers the asking worker",
    "get_scheduler_message_response": "removes the answer it returns",
}

#: The RPCs a following standby answers from its copy.
REPLICA_READS: frozenset[str] = frozenset(
    {method for method, access in RPC_ACCESS.items() if access == "read" and method not in WRITING_READS}
    | {"task_list_chunks", "status_counts"}
)
