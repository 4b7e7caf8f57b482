"""How ``luigi-ha drill`` turns what it sampled into figures (the live drill is in tests/e2e_ha)."""

from __future__ import annotations

from pathlib import Path

from scheduler.drill import (
    DrillReport,
    LeaderSample,
    LeaderWatch,
    WriteProbe,
    WriteSample,
    expand,
    expected_task_ids,
    percentile,
    read_runs,
    summarise,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def watch_with(samples: list[tuple[float, str, bool, str | None]]) -> LeaderWatch:
    watch = LeaderWatch([])
    watch.samples = [LeaderSample(t, url, leader, node) for t, url, leader, node in samples]
    return watch


def test_time_without_leader_runs_from_the_last_sight_of_the_old_leader_to_the_first_of_the_new():
    watch = watch_with([
        (9.90, "a", True, "node-a"), (9.95, "b", False, "node-b"),
        (10.00, "a", True, "node-a"),  # the action is taken at 10.01
        (10.05, "a", False, None), (10.05, "b", False, "node-b"),
        (12.00, "b", False, "node-b"), (12.10, "b", True, "node-b"), (12.12, "b", True, "node-b"),
    ])
    gap, new = watch.takeover(10.01, "node-a")
    assert new == "node-b"
    assert abs(gap - 2.10) < 1e-9


def test_no_new_leader_yet_gives_no_figure():
    watch = watch_with([(10.0, "a", True, "node-a"), (11.0, "a", False, None), (11.0, "b", False, "node-b")])
    assert watch.takeover(10.5, "node-a") == (None, None)


def test_through_a_vip_the_same_node_leading_again_after_a_gap_counts_as_the_new_leader():
    watch = watch_with([(10.0, "vip", True, "node-a"), (10.3, "vip", False, "node-a"), (10.6, "vip", True, "node-a")])
    gap, new = watch.takeover(10.1, "node-a")
    assert new == "node-a" and abs(gap - 0.6) < 1e-9


def test_the_old_leader_still_answering_after_the_action_is_not_a_takeover():
    watch = watch_with([(10.0, "a", True, "node-a"), (10.2, "a", True, "node-a"), (10.4, "b", True, "node-b")])
    gap, new = watch.takeover(10.1, "node-a")
    assert new == "node-b" and abs(gap - 0.2) < 1e-9


def test_write_recovery_counts_only_writes_sent_after_the_action():
    probe = WriteProbe(["http://x"], "r")
    probe.samples = [WriteSample(9.0, 11.5, True, 200), WriteSample(10.2, 10.4, False, 503),
                     WriteSample(10.5, 12.3, True, 200)]
    first = probe.recovered_after(10.0)
    assert first is not None and first.done == 12.3


def test_placeholders_name_the_current_leader_and_nothing_else_is_touched():
    command = expand("ssh {leader_host} -p 22 systemctl kill -s KILL luigi-ha-scheduler # {leader_id} "
                     "{leader_url} {leader_port} awk '{print $1}' ${HOME}", "http://sched2.internal:8082", "sched-2")
    assert command == ("ssh sched2.internal -p 22 systemctl kill -s KILL luigi-ha-scheduler # sched-2 "
                       "http://sched2.internal:8082 8082 awk '{print $1}' ${HOME}")


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.0
    assert percentile(values, 99) == 20.0
    assert percentile([], 50) is None


def test_runs_twice_and_lost_come_from_the_run_log(tmp_path):
    log = tmp_path / "runs.log"
    log.write_text("ProbeTask T_1 1 2 10\nProbeTask T_2 1 2 11\nProbeTask T_1 3 4 12\n")
    counts = read_runs(log)
    assert counts == {"T_1": 2, "T_2": 1}
    assert read_runs(tmp_path / "missing.log") == {}


def test_the_expected_ids_are_luigis_own_task_ids_of_the_probe():
    ids = expected_task_ids(EXAMPLES, "unit", 12)
    assert len(ids) == 12 + 2 + 1
    assert sum(i.startswith("ProbeTask_") for i in ids) == 12 and sum(i.startswith("DrillProbe_") for i in ids) == 1


def test_the_summary_of_several_drills():
    reports = [DrillReport(run_id=str(i), action="switchover", write_recovery_s=0.1 * i, time_without_leader_s=0.05,
                           pipeline_completed=True) for i in range(1, 5)]
    reports[-1].problems.append("1 task(s) never ran")
    reports[-1].tasks_lost = 1
    summary = summarise(reports)
    assert summary["drills"] == 4 and summary["ok"] == 3 and summary["tasks_lost"] == 1
    assert summary["write_recovery_s"]["p50"] == 0.2 and summary["write_recovery_s"]["max"] == 0.4
