"""Visualiser listings and graphs: TaskJSON (2.1), task_list (2.4), upstream status (3.12)."""

from __future__ import annotations

from core_harness import Harness

TASK_JSON_KEYS = {
    "display_name",
    "status",
    "workers",
    "worker_running",
    "time_running",
    "start_time",
    "last_updated",
    "params",
    "name",
    "priority",
    "resources",
    "resources_running",
    "tracking_url",
    "status_message",
    "progress_percentage",
}


def test_task_json_has_the_documented_keys_and_only_public_params(h: Harness) -> None:
    h.add(
        "A_1",
        family="A",
        params={"day": "1", "token": "xyz", "b": "2"},
        param_visibilities={"day": 0, "token": 1},
        priority=3,
    )
    entry = h.s.task_list("PENDING", "")["A_1"]
    assert set(entry) == TASK_JSON_KEYS
    assert entry["display_name"] == "A(b=2, day=1)"
    assert entry["params"] == {"day": "1", "b": "2"}
    assert entry["name"] == "A"
    assert entry["start_time"] == h.clock.now
    assert entry["resources_running"] is None


def test_running_tasks_show_accepts_messages(h: Harness) -> None:
    h.add("A", accepts_messages=True)
    h.next_id()
    assert h.s.task_list("RUNNING", "")["A"]["accepts_messages"] is True


def test_accepts_messages_is_hidden_when_messages_are_disabled(make) -> None:
    h = make(send_messages=False)
    h.add("A", accepts_messages=True)
    h.next_id()
    assert "accepts_messages" not in h.s.task_list("RUNNING", "")["A"]


def test_disabled_tasks_show_whether_they_can_be_re_enabled(make) -> None:
    h = make(retry_count=1)
    h.add("ByWorker", status="DISABLED")
    h.add("ByScheduler")
    h.next_id()
    h.finish("ByScheduler", status="FAILED")
    listing = h.s.task_list("DISABLED", "")
    assert listing["ByWorker"]["re_enable_able"] is False
    assert listing["ByScheduler"]["re_enable_able"] is True


def test_task_list_filters_by_status_and_an_unknown_status_gives_nothing(h: Harness) -> None:
    h.add("A")
    h.add("B", status="DONE")
    assert set(h.s.task_list("DONE", "")) == {"B"}
    assert set(h.s.task_list("", "")) == {"A", "B"}
    assert h.s.task_list("NOT_A_STATUS", "") == {}


def test_task_list_answers_with_a_count_when_there_are_too_many(h: Harness) -> None:
    for index in range(5):
        h.add(f"T{index}")
    assert h.s.task_list("PENDING", "", max_shown_tasks=3) == {"num_tasks": 5}
    assert h.s.task_list("PENDING", "UPSTREAM_FAILED", max_shown_tasks=3) == {"num_tasks": -1}
    assert len(h.s.task_list("PENDING", "", limit=False, max_shown_tasks=3)) == 5


def test_task_list_with_max_shown_tasks_zero_uses_the_configured_cap(make) -> None:
    h = make(max_shown_tasks=2)
    for index in range(3):
        h.add(f"T{index}")
    assert h.s.task_list("PENDING", "", max_shown_tasks=0) == {"num_tasks": 3}


def test_task_list_search_needs_every_term_case_insensitively(h: Harness) -> None:
    h.add("Load_1", family="Load", params={"day": "Monday"})
    h.add("Load_2", family="Load", params={"day": "Tuesday"})
    h.add("Sum_1", family="Sum", params={"day": "Monday"})
    assert set(h.s.task_list("", "", search="load monday")) == {"Load_1"}


def test_upstream_status_filter_keeps_pending_tasks_with_that_upstream_status(h: Harness) -> None:
    h.add("Top", deps=["Mid"])
    h.add("Mid", deps=["Failing"])
    h.add("Failing")
    h.add("Free")
    h.add("Waits", deps=["Ext"])
    h.add("Ext", runnable=False)
    h.next_id()  # hands out a ready task ...
    h.s.add_task(task_id="Failing", worker="W1", status="FAILED")  # ... Failing is now FAILED
    failed = h.s.task_list("PENDING", "UPSTREAM_FAILED")
    assert set(failed) == {"Top", "Mid"}
    missing = h.s.task_list("PENDING", "UPSTREAM_MISSING_INPUT")
    assert "Waits" in missing and "Ext" in missing


def test_upstream_disabled_beats_upstream_failed(h: Harness) -> None:
    h.add("Top", deps=["Bad", "Off"])
    h.add("Bad", status="FAILED")
    h.add("Off", status="DISABLED")
    assert set(h.s.task_list("PENDING", "UPSTREAM_DISABLED")) == {"Top"}
    assert h.s.task_list("PENDING", "UPSTREAM_FAILED") == {}


def test_a_pending_task_whose_deps_are_done_has_no_upstream_status(h: Harness) -> None:
    h.add("Top", deps=["Dep"])
    h.add("Dep", status="DONE")
    for upstream in ("UPSTREAM_FAILED", "UPSTREAM_MISSING_INPUT", "UPSTREAM_RUNNING", "UPSTREAM_DISABLED"):
        assert "Top" not in h.s.task_list("PENDING", upstream)


def test_task_search_matches_ids_case_sensitively_grouped_by_status(h: Harness) -> None:
    h.add("Load_1")
    h.add("Load_2", status="DONE")
    h.add("load_3")
    result = h.s.task_search("Load")
    assert set(result) == {"PENDING", "DONE"}
    assert set(result["PENDING"]) == {"Load_1"}


def test_worker_list_describes_workers_newest_first(h: Harness) -> None:
    h.add("First_1", family="First", params={"n": "1"}, worker="Old")
    h.s.add_worker("Old", [["host", "a"], ["first_task", "First_1"]])
    h.clock.advance(5)
    h.add("Other", worker="New")
    h.add("Shared", worker="New")
    h.add("Shared", worker="Old")
    h.next_id("New")
    workers = h.s.worker_list()
    assert [entry["name"] for entry in workers] == ["New", "Old"]
    new, old = workers
    assert old["host"] == "a"
    assert old["first_task_display_name"] == "First(n=1)"
    assert old["state"] == "active"
    assert (new["num_running"], new["num_pending"], new["num_uniques"]) == (1, 1, 0)
    assert set(new["running"]) == {"Other"}
    assert (old["num_running"], old["num_pending"], old["num_uniques"]) == (0, 2, 1)


def test_worker_list_without_running_details(h: Harness) -> None:
    h.add("A")
    entry = h.s.worker_list(include_running=False)[0]
    assert "running" not in entry and "num_pending" not in entry


def test_resource_list_shows_configured_resources_with_use_and_consumers(make) -> None:
    h = make(resources={"db": 3, "idle": 1})
    h.add("A", resources={"db": 2})
    h.add("B", resources={"gpu": 1})
    h.next_id()
    by_name = {entry["name"]: entry for entry in h.s.resource_list()}
    assert set(by_name) == {"db", "idle"}  # gpu is used but not configured
    assert (by_name["db"]["num_total"], by_name["db"]["num_used"], by_name["db"]["num_consumer"]) == (3, 2, 1)
    assert set(by_name["db"]["running"]) == {"A"}
    assert (by_name["idle"]["num_used"], by_name["idle"]["num_consumer"]) == (0, 0)


def test_update_resource_accepts_only_non_negative_integers(h: Harness) -> None:
    assert h.s.update_resource("db", 5) is True
    assert h.s.update_resource("db", "3") is False
    assert h.s.update_resource("db", -1) is False
    assert h.s.update_resource("db", 2.5) is False
    assert [entry["num_total"] for entry in h.s.resource_list()] == [5]


def test_dep_graph_walks_deps_breadth_first_and_only_the_root_keeps_its_display_name(h: Harness) -> None:
    h.add("A", deps=["B", "C"])
    h.add("B", deps=["D"])
    h.add("C", status="DONE")
    graph = h.s.dep_graph("A")
    assert set(graph) == {"A", "B", "C", "D"}
    assert sorted(graph["A"]["deps"]) == ["B", "C"]
    assert "display_name" in graph["A"]
    assert all("display_name" not in graph[node] for node in ("B", "C"))
    assert graph["D"] == {
        "deps": [],
        "status": "UNKNOWN",
        "workers": [],
        "start_time": "UNKNOWN",
        "params": {"task_id": "D"},
        "name": "UNKNOWN",
        "priority": 0,
    }


def test_dep_graph_can_hide_done_tasks(h: Harness) -> None:
    h.add("A", deps=["B", "C"])
    h.add("B")
    h.add("C", status="DONE")
    graph = h.s.dep_graph("A", include_done=False)
    assert set(graph) == {"A", "B"}
    assert graph["A"]["deps"] == ["B"]


def test_a_placeholder_node_guesses_its_family_from_the_id(h: Harness) -> None:
    h.add("A", deps=["Extract_2024_abc"])
    assert h.s.dep_graph("A")["Extract_2024_abc"]["name"] == "Extract"


def test_dep_graph_stops_at_max_graph_nodes(make) -> None:
    h = make(max_graph_nodes=2)
    h.add("A", deps=["B"])
    h.add("B", deps=["C"])
    h.add("C")
    assert len(h.s.dep_graph("A")) == 2


def test_dep_graph_of_an_unknown_task_is_empty(h: Harness) -> None:
    assert h.s.dep_graph("missing") == {}
    assert h.s.inverse_dep_graph("missing") == {}


def test_inverse_dep_graph_walks_dependents(h: Harness) -> None:
    h.add("Top", deps=["Mid"])
    h.add("Mid", deps=["Base"])
    h.add("Other", deps=["Base"])
    h.add("Base")
    graph = h.s.inverse_dep_graph("Base")
    assert set(graph) == {"Base", "Mid", "Other", "Top"}
    assert sorted(graph["Base"]["deps"]) == ["Mid", "Other"]
    assert graph["Mid"]["deps"] == ["Top"]


def test_graph_lists_every_task_once_with_deps(h: Harness) -> None:
    h.add("A", deps=["B"])
    h.add("B")
    h.add("C")
    graph = h.s.graph()
    assert set(graph) == {"A", "B", "C"}
    assert graph["A"]["deps"] == ["B"]


def test_fetch_error_of_an_unknown_task(h: Harness) -> None:
    assert h.s.fetch_error("missing") == {"taskId": "missing", "error": ""}


def test_has_task_history_reflects_the_setting(make) -> None:
    assert make().s.has_task_history() is False
    assert make(record_task_history=True).s.has_task_history() is True
