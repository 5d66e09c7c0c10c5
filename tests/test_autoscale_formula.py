"""Azure Batch's autoscale formula language (shoal.domain.batch.autoscale): the documented examples evaluate to
what the documentation says, operators follow Azure's precedence and type table, every function and sample
method works, errors carry their line and column, and no input makes parse or evaluate fail any other way."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.domain.batch.autoscale import (
    EVALUATION_ERROR,
    SYNTAX_ERROR,
    Evaluation,
    FormulaError,
    Metrics,
    Sample,
    evaluate,
    parse,
)

NOW = datetime(2024, 5, 6, 10, 30, tzinfo=UTC)  # a Monday


def samples(values: Sequence[float], *, now: datetime = NOW, period: float = 30.0,
            skip_latest: int = 0) -> list[Sample]:
    """``values`` as 30-second samples, oldest first, the last one taken at ``now - skip_latest periods``."""
    n = len(values)
    return [Sample(now - timedelta(seconds=period * (n - 1 - i + skip_latest)), v) for i, v in enumerate(values)]


def metrics(now: datetime = NOW, values: dict[str, float] | None = None, **series: Sequence[float]) -> Metrics:
    return Metrics(now=now, series={name: samples(v, now=now) for name, v in series.items()}, values=values or {})


def run(formula: str, m: Metrics | None = None, *, dedicated: int = 0, low_priority: int = 0,
        seed: int = 1) -> Evaluation:
    return evaluate(formula, m or metrics(), current_dedicated=dedicated, current_low_priority=low_priority,
                    rng=random.Random(seed))


def results(formula: str, m: Metrics | None = None, **kwargs: int) -> dict[str, str]:
    """The ``$Name=value`` pairs of the results text."""
    return dict(part.split("=", 1) for part in run(formula, m, **kwargs).results.split(";"))


def value(expression: str, m: Metrics | None = None) -> str:
    """How ``expression`` appears in the results."""
    return results(f"result = {expression};", m)["result"]


def syntax_error(formula: str) -> FormulaError:
    with pytest.raises(FormulaError) as info:
        parse(formula)
    assert info.value.code == SYNTAX_ERROR
    return info.value


def evaluation_error(formula: str, m: Metrics | None = None) -> FormulaError:
    parse(formula)  # well-formed: it fails only when it runs
    with pytest.raises(FormulaError) as info:
        run(formula, m)
    assert info.value.code == EVALUATION_ERROR
    return info.value


# --- the examples of the Azure documentation --------------------------------------------------------------------
PENDING_TASKS = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;
"""  # noqa: E501


def test_pending_tasks_example_averages_the_last_three_minutes_capped_at_25() -> None:
    result = run(PENDING_TASKS, metrics(PendingTasks=[100, 100, 4, 6, 8, 10, 12, 14]))
    assert (result.target_dedicated, result.target_low_priority) == (9, 0)  # avg(4..14) = 9
    assert result.node_deallocation_option == "taskcompletion"
    assert result.results == ("$TargetDedicatedNodes=9;$TargetLowPriorityNodes=0;"
                              "$NodeDeallocationOption=taskcompletion;maxNumberofVMs=25;pendingTaskSamplePercent=100;"
                              "pendingTaskSamples=9;startingNumberOfVMs=1")
    assert run(PENDING_TASKS, metrics(PendingTasks=[300] * 6)).target_dedicated == 25


def test_pending_tasks_example_starts_with_one_vm_while_samples_are_missing() -> None:
    sparse = Metrics(now=NOW, series={"PendingTasks": samples([50, 50, 50, 50], skip_latest=2)})  # 4 of 6
    result = run(PENDING_TASKS, sparse, dedicated=7)
    assert result.target_dedicated == 1
    assert "pendingTaskSamplePercent=66.66666666666667" in result.results
    assert run(PENDING_TASKS, metrics(), dedicated=7).target_dedicated == 1  # a new pool: no samples at all


def test_pending_tasks_example_with_dollar_user_variables() -> None:
    formula = PENDING_TASKS.replace("startingNumberOfVMs", "$startingNumberOfVMs").replace(
        "maxNumberofVMs", "$maxNumberofVMs").replace("pendingTaskSample", "$pendingTaskSample")
    assert results(formula, metrics(PendingTasks=[3] * 6))["$pendingTaskSamples"] == "3"


def test_preempted_nodes_example_replaces_preempted_spot_nodes_with_dedicated_ones() -> None:
    formula = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""
    result = run(formula, metrics(PreemptedNodeCount=[3, 3, 4, 4, 4, 4]))
    assert (result.target_dedicated, result.target_low_priority) == (3, 22)


CPU = """$totalDedicatedNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
$totalDedicatedNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicatedNodes * 0.9) : $totalDedicatedNodes;
$TargetDedicatedNodes = min(400, $totalDedicatedNodes)
"""


@pytest.mark.parametrize(("cpu", "current", "target"), [
    ([0.9] * 120, 20, 22),  # busy for the last 10 minutes: +10%
    ([0.1] * 120, 20, 18),  # idle for an hour: -10%
    ([0.3] * 120, 20, 20),  # neither
    ([0.9] * 120, 380, 400),  # capped at 400
])
def test_cpu_example_grows_and_shrinks_with_cpu_usage(cpu: list[float], current: int, target: int) -> None:
    m = metrics(values={"CurrentDedicatedNodes": current}, CPUPercent=cpu)
    assert run(CPU, m, dedicated=current).target_dedicated == target


TIME_OF_DAY = """$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;"""


@pytest.mark.parametrize(("now", "target"), [
    (datetime(2024, 5, 6, 10, 0, tzinfo=UTC), 20),  # Monday morning
    (datetime(2024, 5, 10, 17, 59, tzinfo=UTC), 20),  # Friday afternoon
    (datetime(2024, 5, 6, 18, 0, tzinfo=UTC), 10),  # Monday evening
    (datetime(2024, 5, 11, 10, 0, tzinfo=UTC), 10),  # Saturday
    (datetime(2024, 5, 12, 10, 0, tzinfo=UTC), 10),  # Sunday
])
def test_time_of_day_example_uses_twenty_nodes_in_working_hours(now: datetime, target: int) -> None:
    assert run(TIME_OF_DAY, metrics(now)).target_dedicated == target


def test_time_of_day_example_in_mountain_daylight_time() -> None:
    formula = TIME_OF_DAY.replace("$curTime = time();", "$curTime = time() + (-6 * TimeInterval_Hour);")
    assert run(formula, metrics(datetime(2024, 5, 6, 15, 0, tzinfo=UTC))).target_dedicated == 20  # 09:00 MDT
    assert run(formula, metrics(datetime(2024, 5, 6, 10, 0, tzinfo=UTC))).target_dedicated == 10  # 04:00 MDT


def test_results_are_written_as_in_the_documented_evaluation() -> None:
    formula = TIME_OF_DAY.replace("\n$NodeDeallocationOption = taskcompletion;", "")
    result = run(formula, metrics(datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)))
    assert result.results == ("$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
                              "$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0")
    assert result.node_deallocation_option is None


def test_monday_formula_of_the_dotnet_snippets() -> None:
    formula = "$TargetDedicatedNodes = (time().weekday == 1 ? 5:1);"
    assert run(formula, metrics(datetime(2024, 5, 6, tzinfo=UTC))).target_dedicated == 5
    assert run(formula, metrics(datetime(2024, 5, 7, tzinfo=UTC))).target_dedicated == 1
    assert run("$TargetDedicatedNodes = $CurrentDedicatedNodes;", metrics(values={"CurrentDedicatedNodes": 6}),
               dedicated=9).target_dedicated == 6
    assert run("$TargetDedicatedNodes = 0", dedicated=9).target_dedicated == 0


TASKS = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
// Set node deallocation mode - let running tasks finish before removing a node
$NodeDeallocationOption = taskcompletion;
"""  # noqa: E501


def test_task_based_example_with_comments() -> None:
    assert run(TASKS, metrics(PendingTasks=[10] * 29 + [4])).target_dedicated == 9  # max(4, avg) = 9.8
    assert run(TASKS, metrics(PendingTasks=[7]), dedicated=3).target_dedicated == 7  # few samples: the last one
    assert run(TASKS, metrics(PendingTasks=[0] * 30), dedicated=9).target_dedicated == 4  # 9 / 2
    assert run(TASKS, metrics(), dedicated=9).target_dedicated == 4  # no samples: max(0, empty) is 0
    assert run(TASKS, metrics(PendingTasks=[90] * 30)).target_dedicated == 20


PARALLEL = """// Determine whether 70 percent of the samples have been recorded in the past
// 15 minutes; if not, use last sample
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// Set the number of nodes to add to one-fourth the number of active tasks
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
// Attempt to grow the number of compute nodes to match the number of active
// tasks, with a maximum of 3
$TargetDedicatedNodes = max(0,min($targetVMs,3));
// Keep the nodes active until the tasks finish
$NodeDeallocationOption = taskcompletion;
"""  # noqa: E501


def test_parallel_tasks_example() -> None:
    assert run(PARALLEL, metrics(ActiveTasks=[6] * 30), dedicated=1).target_dedicated == 2  # 1 + (6-4+3)/4
    assert run(PARALLEL, metrics(ActiveTasks=[40] * 30), dedicated=1).target_dedicated == 3
    assert run(PARALLEL, metrics(ActiveTasks=[0] * 30), dedicated=2).target_dedicated == 0


def initial_size(created: datetime) -> str:
    """Example 4 as the C# snippet formats it: the pool's creation time in RFC 1123 ("r")."""
    return f"""
    $TargetDedicatedNodes = 4;
    lifespan         = time() - time("{created:%a, %d %b %Y %H:%M:%S} GMT");
    span             = TimeInterval_Minute * 60;
    startup          = TimeInterval_Minute * 10;
    ratio            = 50;

    $TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio), $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : 4);
    """  # noqa: E501


def test_initial_pool_size_example() -> None:
    busy, idle = metrics(RunningTasks=[1] * 120, ActiveTasks=[0] * 120), metrics(RunningTasks=[0] * 120,
                                                                                  ActiveTasks=[0] * 120)
    assert run(initial_size(NOW - timedelta(minutes=5)), idle).target_dedicated == 4  # still starting up
    assert run(initial_size(NOW - timedelta(hours=2)), idle).target_dedicated == 0
    assert run(initial_size(NOW - timedelta(hours=2)), busy).target_dedicated == 4
    assert results(initial_size(NOW - timedelta(hours=2)), idle)["lifespan"] == "02:00:00"
    error = evaluation_error(initial_size(NOW - timedelta(hours=2)))  # no samples: under 50%
    assert "insufficient sample data" in error.message
    assert "Insufficient data from data set: $RunningTasks wanted 50%, received 0%" in error.message


def test_get_sample_window_and_percent_as_documented() -> None:
    """Ten minutes of history hold 20 samples; without the last minute 18, so 95% fails and 80% succeeds."""
    full = Metrics(now=NOW, series={"CPUPercent": samples([0.5] * 40)})
    late = Metrics(now=NOW, series={"CPUPercent": samples([0.5] * 40, skip_latest=2)})
    assert value("len($CPUPercent.GetSample(TimeInterval_Minute * 10))", full) == "20"
    assert value("len($CPUPercent.GetSample(TimeInterval_Minute * 10))", late) == "18"
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", late) == "90"
    error = evaluation_error("x = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", late)
    assert "$CPUPercent wanted 95%, received 90%" in error.message
    assert error.values[:2] == [{"name": "Line", "value": "1"}, {"name": "Column", "value": "17"}]
    assert value("len($CPUPercent.GetSample(TimeInterval_Minute * 10, 80))", late) == "18"


def test_get_sample_between_two_look_backs() -> None:
    m = metrics(RunningTasks=[1] * 20)
    formula = "$runningTasksSample = $RunningTasks.GetSample(1 * TimeInterval_Minute, 6 * TimeInterval_Minute);"
    assert results(formula, m)["$runningTasksSample"] == "[1,1,1,1,1,1,1,1,1,1]"
    formula = "$runningTasksSample = $RunningTasks.GetSample(60 * TimeInterval_Second, 120 * TimeInterval_Second, 75);"
    assert results(formula, m)["$runningTasksSample"] == "[1,1]"


def test_powershell_example_with_the_older_variable_names() -> None:
    formula = ("totalNodes=($CPUPercent.GetSamplePercent(TimeInterval_Minute*0,TimeInterval_Minute*10)<0.7?5:"
               "(min($CPUPercent.GetSample(TimeInterval_Minute*0, TimeInterval_Minute*10))>0.8?($CurrentDedicated*1.1)"
               ":$CurrentDedicated));$TargetDedicated=min(100,totalNodes);")
    result = run(formula)
    assert result.target_dedicated == 5
    assert result.results.endswith("$NodeDeallocationOption=requeue;$TargetDedicated=5;totalNodes=5")


def test_fractional_targets_are_reported_as_computed_and_applied_truncated() -> None:
    formula = """startingNumberOfVMs = 1;
maxNumberofVMs = 10;
activeTaskSamplePercent = $ActiveTasks.GetSamplePercent(180 * TimeInterval_Second);
activeTaskMax = activeTaskSamplePercent < 70 ? startingNumberOfVMs : max($ActiveTasks.GetSample(180 *   TimeInterval_Second));
$TargetDedicatedNodes = min(maxNumberofVMs, activeTaskMax / $TaskSlotsPerNode);
$NodeDeallocationOption = taskcompletion;"""  # noqa: E501
    result = run(formula, metrics(values={"TaskSlotsPerNode": 2}, ActiveTasks=[1] * 6))
    assert result.target_dedicated == 0
    assert "$TargetDedicatedNodes=0.5;" in result.results
    fixed = formula.replace("activeTaskMax / $TaskSlotsPerNode", "ceil(activeTaskMax / $TaskSlotsPerNode)")
    assert run(fixed, metrics(values={"TaskSlotsPerNode": 2}, ActiveTasks=[1] * 6)).target_dedicated == 1


# --- operators ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("expression", "expected"), [
    ("1 + 2 * 3", "7"),
    ("(1 + 2) * 3", "9"),
    ("1 - 2 - 3", "-4"),
    ("8 / 4 / 2", "1"),
    ("-2 * 3", "-6"),
    ("- -3", "3"),
    ("!0 + 1", "2"),
    ("!5", "0"),
    ("1 + 1 > 1 ? 5 : 6", "5"),
    ("1 < 2 == 1", "1"),
    ("2 > 1 != 0", "1"),
    ("1 || 0 && 0", "1"),
    ("0 && 1 || 1", "1"),
    ("0 || 0", "0"),
    ("1 ? 2 : 0 ? 3 : 4", "2"),
    ("0 ? 2 : 0 ? 3 : 4", "4"),
    ("0 ? 2 : 1 ? 3 : 4", "3"),
    ("1 ? 0 ? 5 : 6 : 7", "6"),
    ("0.1 + 0.2", "0.30000000000000004"),
    ("10 / 4", "2.5"),
    (".5 + 1.", "1.5"),
    ("2e3", "2000"),
    ("1e20", "1E+20"),
    ("1 / 3", "0.3333333333333333"),
])
def test_operator_precedence_and_associativity(expression: str, expected: str) -> None:
    assert value(expression) == expected


def test_logical_operators_short_circuit() -> None:
    assert value("0 && avg($PendingTasks.GetSample(1))") == "0"  # avg() of nothing is never evaluated
    assert value("1 || 1 / 0") == "1"
    evaluation_error("x = 1 && 1 / 0;")


@pytest.mark.parametrize(("expression", "expected"), [
    ("TimeInterval_Minute * 2", "00:02:00"),
    ("2 * TimeInterval_Minute", "00:02:00"),
    ("TimeInterval_Hour / 4", "00:15:00"),
    ("TimeInterval_Hour - TimeInterval_Minute", "00:59:00"),
    ("TimeInterval_Day * 1.5 + TimeInterval_100ns", "1.12:00:00.0000001"),
    ("-TimeInterval_Second", "-00:00:01"),
    ("TimeInterval_Week + TimeInterval_Zero", "7.00:00:00"),
    ("TimeInterval_Millisecond * 3 + TimeInterval_Microsecond", "00:00:00.0030010"),
    ("TimeInterval_Year", "365.00:00:00"),
    ('time("2024-01-01T00:00:00Z") + TimeInterval_Day', "2024-01-02T00:00:00.000Z"),
    ('TimeInterval_Hour + time("2024-01-01")', "2024-01-01T01:00:00.000Z"),
    ('time("2024-01-02") - time("2024-01-01T12:00:00Z")', "12:00:00"),
    ('time("2024-01-01") - time("2024-01-02")', "-1.00:00:00"),
    ('time("2024-01-01") < time("2024-01-02")', "1"),
    ("TimeInterval_Hour >= TimeInterval_Minute * 60", "1"),
    ('"abc" < "abd"', "1"),
    ('"a" == "a"', "1"),
    ('"a" != "a"', "0"),
    ("$PendingTasks.GetSample(3) * 2", "[2,4,6]"),
    ("$PendingTasks.GetSample(3) - 1", "[0,1,2]"),
    ("$PendingTasks.GetSample(3) / $PendingTasks.GetSample(3)", "[1,1,1]"),
    ("$PendingTasks.GetSample(3) + $PendingTasks.GetSample(3)", "[2,4,6]"),
    ('1 ? "x" : "y"', "x"),
    ("1 ? $PendingTasks.GetSample(2) : $PendingTasks.GetSample(1)", "[2,3]"),
    ("1 ? TimeInterval_Second : TimeInterval_Minute", "00:00:01"),
])
def test_operations_of_the_type_table(expression: str, expected: str) -> None:
    assert value(expression, metrics(PendingTasks=[1, 2, 3])) == expected


@pytest.mark.parametrize(("expression", "complaint"), [
    ('1 + "a"', "'+' does not apply to a double and a string"),
    ('"a" + "b"', "'+' does not apply to a string and a string"),
    ("TimeInterval_Second * TimeInterval_Second", "'*' does not apply to a timeinterval and a timeinterval"),
    ("1 / TimeInterval_Second", "'/' does not apply to a double and a timeinterval"),
    ("time() - TimeInterval_Hour", "'-' does not apply to a timestamp and a timeinterval"),
    ("time() + time()", "'+' does not apply to a timestamp and a timestamp"),
    ("1 - $PendingTasks.GetSample(1)", "'-' does not apply to a double and a doubleVec"),
    ('-"a"', "'-' does not apply to a string"),
    ("!TimeInterval_Second", "'!' does not apply to a timeinterval"),
    ("-time()", "'-' does not apply to a timestamp"),
    ('1 < "a"', "'<' compares two doubles, strings, timestamps or timeintervals, not a double and a string"),
    ("$PendingTasks.GetSample(1) == 1", "not a doubleVec and a double"),
    ('"a" && 1', "'&&' applies to doubles, not a string and a double"),
    ('1 ? 2 : "a"', "both values of '?:' must have the same type, not double and string"),
    ("1 ? 2 : $PendingTasks.GetSample(1)", "not double and doubleVec"),
    ('"a" ? 1 : 2', "the condition of '?:' must be a double, not a string"),
    ("time().hours", "a timestamp has no member 'hours'"),
    ("TimeInterval_Hour.hour", "only a timestamp has members; this is a timeinterval"),
    ("$PendingTasks", "'$PendingTasks' is a sampled metric: read it with a sample method"),
    ("$PendingTasks.GetSample", "'$PendingTasks' is a sampled metric"),
    ("$TaskSlotsPerNode.GetSample(1)", "'$TaskSlotsPerNode' has no method 'GetSample'"),
    ("time().GetSample(1)", "this value has no method 'GetSample'"),
    ("$PendingTasks.GetSamples(1)", "'GetSamples' is not a sample method"),
    ('$PendingTasks.GetSample("1")', "the argument of GetSample() must be a double, timestamp or timeinterval"),
    ("$PendingTasks.GetSample(1, 50)", "the start of GetSample() must be a timestamp or timeinterval"),
    ("$PendingTasks.GetSample(TimeInterval_Hour, 1, 50)", "the end of GetSample() must be a timestamp"),
    ("$PendingTasks.GetSample()", "GetSample() takes 1 to 3 arguments, not 0"),
    ("$PendingTasks.GetSamplePercent(5)", "a time argument of GetSamplePercent() must be a timestamp"),
    ("$PendingTasks.Count(1)", "Count() takes 0 arguments, not 1"),
    ('avg("a")', "an argument of avg() must be a double or doubleVec, not a string"),
    ("avg(TimeInterval_Second)", "an argument of avg() must be a double or doubleVec, not a timeinterval"),
    ("lg()", "lg() needs a double or a doubleVec"),
    ("time(1)", "the argument of time() must be a string, not a double"),
    ('time("a", "b")', "time() takes 0 or 1 arguments, not 2"),
    ("rand(1)", "rand() takes 0 arguments, not 1"),
    ("val(1, 2)", "the first argument of val() must be a doubleVec, not a double"),
    ("percentile($PendingTasks.GetSample(1))", "percentile() takes 2 arguments, not 1"),
    ("foo(1)", "'foo' is not a function"),
    ("undefinedVariable + 1", "'undefinedVariable' is not defined"),
    ("$NotAMetric + 1", "'$NotAMetric' is not defined"),
])
def test_type_errors_are_found_before_evaluation(expression: str, complaint: str) -> None:
    error = syntax_error(f"x = 1;\nresult = {expression};")
    assert complaint in error.message
    assert error.message.startswith("line 2, column ")


@pytest.mark.parametrize(("statement", "complaint"), [
    ("$CPUPercent = 1", "'$CPUPercent' is a read-only service-defined variable"),
    ("$CurrentDedicatedNodes = 1", "'$CurrentDedicatedNodes' is a read-only service-defined variable"),
    ("TimeInterval_Second = 1", "'TimeInterval_Second' is a constant"),
    ("requeue = 1", "'requeue' is a constant"),
    ('$NodeDeallocationOption = "later"', "'later' is not a node deallocation option"),
    ("$NodeDeallocationOption = 1", "the value of $NodeDeallocationOption must be a string, not a double"),
    ('$TargetDedicatedNodes = "5"', "the value of $TargetDedicatedNodes must be a double, not a string"),
    ("$TargetLowPriorityNodes = $PendingTasks.GetSample(1)", "must be a double, not a doubleVec"),
    ("x = $PendingTasks", "'$PendingTasks' is a sampled metric"),
])
def test_assignments_are_checked(statement: str, complaint: str) -> None:
    assert complaint in syntax_error(statement).message


# --- functions ------------------------------------------------------------------------------------------------
FUNCTIONS = metrics(ActiveTasks=[4, 1, 3, 2])


@pytest.mark.parametrize(("expression", "expected"), [
    ("avg($ActiveTasks.GetSample(4))", "2.5"),
    ("avg($ActiveTasks.GetSample(4), 7)", "3.4"),  # a doubleVecList is flattened: avg(4, 1, 3, 2, 7)
    ("avg(1, 2)", "1.5"),
    ("len($ActiveTasks.GetSample(4), 1, $ActiveTasks.GetSample(2))", "7"),
    ("len()", "0"),
    ("lg(8)", "3"),
    ("lg($ActiveTasks.GetSample(2))", "[1.584962500721156,1]"),
    ("lg(2, 4)", "[1,2]"),
    ("ln(1)", "0"),
    ("ln($ActiveTasks.GetSample(1))", "[0.6931471805599453]"),
    ("log(1000)", "3"),
    ("log(10, 100)", "[1,2]"),
    ("max($ActiveTasks.GetSample(4))", "4"),
    ("max($ActiveTasks.GetSample(4), 7)", "7"),
    ("min($ActiveTasks.GetSample(4))", "1"),
    ("min(0, $ActiveTasks.GetSample(4))", "0"),
    ("norm(3, 4)", "5"),
    ("norm()", "0"),
    ("percentile($ActiveTasks.GetSample(4), 50)", "2"),
    ("percentile($ActiveTasks.GetSample(4), 51)", "3"),
    ("percentile($ActiveTasks.GetSample(4), 0)", "1"),
    ("percentile($ActiveTasks.GetSample(4), 100)", "4"),
    ("range($ActiveTasks.GetSample(4))", "3"),
    ("std($ActiveTasks.GetSample(4))", "1.2909944487358056"),
    ("std(2, 4, 4, 4, 5, 5, 7, 9)", "2.138089935299395"),
    ("sum($ActiveTasks.GetSample(4))", "10"),
    ("sum($ActiveTasks.GetSample(4), 0.5)", "10.5"),
    ("sum()", "0"),
    ("val($ActiveTasks.GetSample(4), 0)", "4"),  # oldest first
    ("val($ActiveTasks.GetSample(4), 3)", "2"),
    ("val($ActiveTasks.GetSample(4), 2.9)", "3"),
    ("ceil(1.2)", "2"),
    ("ceil(-1.2)", "-1"),
    ("floor(1.8)", "1"),
    ("floor(1.5, -1.5)", "[1,-2]"),
    ("round(2.5)", "3"),
    ("round(-2.5)", "-3"),
    ("round(2.4999)", "2"),
    ("time()", "2024-05-06T10:30:00.000Z"),
    ('time("")', "2024-05-06T10:30:00.000Z"),
    ('time("2024-02-29T23:59:59.1234567+02:00")', "2024-02-29T21:59:59.123Z"),
    ('time("2024-02-29T08:00Z")', "2024-02-29T08:00:00.000Z"),
    ('time("2024-02")', "2024-02-01T00:00:00.000Z"),
    ('time("Tue, 14 Apr 2020 10:00:00 GMT")', "2020-04-14T10:00:00.000Z"),
    ('time("Tue, 14 Apr 2020 10:00:00 +0100")', "2020-04-14T09:00:00.000Z"),
    ('time("2024-03-10").year + time("2024-03-10").month + time("2024-03-10").day', "2037"),
    ('time("2024-03-10T07:08:09Z").hour * 10000 + time("2024-03-10T07:08:09Z").minute * 100'
     ' + time("2024-03-10T07:08:09Z").second', "70809"),
    ('time("2024-03-10").weekday', "0"),  # a Sunday
    ('time("2024-03-16").weekday', "6"),  # a Saturday
])
def test_functions(expression: str, expected: str) -> None:
    assert value(expression, FUNCTIONS) == expected


def test_rand_draws_from_the_injected_generator() -> None:
    first = value("rand()")
    assert 0 <= float(first) < 1
    assert value("rand()") == first  # the same seed
    draws = {float(run("x = rand();", seed=seed).results.rsplit("=", 1)[1]) for seed in range(20)}
    assert len(draws) == 20 and all(0 <= d < 1 for d in draws)


def test_stop_ends_the_evaluation_and_keeps_what_was_assigned() -> None:
    formula = "$TargetDedicatedNodes = 3; a = 1; stop(); $TargetDedicatedNodes = 9; b = 2;"
    result = run(formula, dedicated=5)
    assert result.stopped and result.target_dedicated == 3
    assert result.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;a=1"
    conditional = "$TargetDedicatedNodes = $CurrentDedicatedNodes > 4 ? stop() : 2; $TargetLowPriorityNodes = 1;"
    assert run(conditional, dedicated=5).target_low_priority == 0
    assert run(conditional, dedicated=5).stopped
    assert run(conditional, dedicated=1).target_dedicated == 2


@pytest.mark.parametrize(("formula", "complaint"), [
    ("x = avg($ActiveTasks.GetSample(TimeInterval_Hour));", "avg() of an empty list"),
    ("x = max($ActiveTasks.GetSample(1));", "max() of an empty list"),
    ("x = std(1);", "std() needs at least two values, not 1"),
    ("x = 1 / 0;", "division by zero"),
    ("x = TimeInterval_Hour / 0;", "division by zero"),
    ("x = 1e308 * 10;", "'*' overflows"),
    ("x = lg(0);", "lg() of 0: the logarithm of a number that is not positive"),
    ("x = log(-1, 2);", "log() of -1"),
    ("x = norm(1e200, 1e200);", "norm() overflows"),
    ("x = val($ActiveTasks.GetSample(3), 3);", "val(): index 3 is outside the doubleVec (length 0)"),
    ("x = percentile($ActiveTasks.GetSample(3), 50);", "percentile() of an empty doubleVec"),
    ('x = time("yesterday");', "time(): 'yesterday' is not a W3C-DTF or RFC 1123 date and time"),
    ('x = time("2024-02-30");', "is not a W3C-DTF or RFC 1123 date and time"),
    ("x = TimeInterval_Year * 1e9;", "the timeinterval is too long"),
    ('x = time("9999-12-31") + TimeInterval_Week;', "outside the years 1 to 9999"),
    ("x = $ActiveTasks.GetSample(-1);", "GetSample() cannot take -1 samples"),
    ("x = $ActiveTasks.GetSample(TimeInterval_Hour, 101);", "between 0 and 100, not 101"),
    ("x = $ActiveTasks.HistoryBeginTime();", "$ActiveTasks has no samples"),
    ('$NodeDeallocationOption = 1 ? "soon" : "later";', "'soon' is not a node deallocation option"),
    ("$TargetDedicatedNodes = 1e12;", "more nodes than a pool can have"),
])
def test_evaluation_errors(formula: str, complaint: str) -> None:
    assert complaint in evaluation_error(formula).message


def test_evaluation_errors_name_line_and_column() -> None:
    error = evaluation_error("a = 1;\n  b = a /\n 0;")
    assert error.message == "line 2, column 9: division by zero"
    assert error.position == 15
    assert error.values == [{"name": "Line", "value": "2"}, {"name": "Column", "value": "9"},
                            {"name": "Message", "value": "division by zero"}]
    error = evaluation_error("x = vecs;".replace("vecs", "$ActiveTasks.GetSample(2) + $ActiveTasks.GetSample(1)"),
                             metrics(ActiveTasks=[1, 2]))
    assert "doubleVecs of different lengths (2 and 1)" in error.message


# --- sample methods -------------------------------------------------------------------------------------------
def test_sample_methods() -> None:
    m = Metrics(now=NOW, series={"PendingTasks": samples([5, 6, 7, 8])}, sample_period_seconds=30)
    assert value("$PendingTasks.GetSamplePeriod()", m) == "00:00:30"
    assert value("$PendingTasks.Count()", m) == "4"
    assert value("$PendingTasks.HistoryBeginTime()", m) == "2024-05-06T10:28:30.000Z"
    assert value("$PendingTasks.GetSample(TimeInterval_Minute)", m) == "[7,8]"
    assert value("$PendingTasks.GetSample(10)", m) == "[5,6,7,8]"
    assert value("$PendingTasks.GetSample(0)", m) == "[]"
    assert value("$PendingTasks.GetSample(time() + (-1 * TimeInterval_Minute))", m) == "[7,8]"
    assert value('$PendingTasks.GetSample(time("2024-05-06T10:28:45Z"), time("2024-05-06T10:29:45Z"))',
                 m) == "[6,7]"
    assert value("$PendingTasks.GetSamplePercent(TimeInterval_Minute * 2, TimeInterval_Minute)", m) == "100"
    assert value("$PendingTasks.GetSamplePercent(TimeInterval_Minute * 4)", m) == "50"
    assert value("$PendingTasks.GetSamplePercent(TimeInterval_Second)", m) == "100"
    assert value("$PendingTasks.GetSamplePercent(TimeInterval_Zero)", m) == "0"
    assert value("$FailedTasks.Count()", m) == "0"  # a metric without samples


def test_samples_outside_the_history_or_in_the_future_are_not_seen() -> None:
    old = Sample(NOW - timedelta(days=8), 1.0)
    future = Sample(NOW + timedelta(seconds=30), 9.0)
    naive = Sample((NOW - timedelta(seconds=30)).replace(tzinfo=None), 2.0)  # as SQLite returns it: UTC
    m = Metrics(now=NOW, series={"ActiveTasks": [future, naive, old]})
    assert value("$ActiveTasks.GetSample(100)", m) == "[2]"
    m.history_seconds = 9 * 86400
    assert value("$ActiveTasks.GetSample(100)", m) == "[1,2]"


# --- the service-defined variables ----------------------------------------------------------------------------
def test_targets_start_at_the_current_targets_and_stay_unless_assigned() -> None:
    result = run("x = $TargetDedicatedNodes + $TargetLowPriorityNodes;", dedicated=3, low_priority=2)
    assert (result.target_dedicated, result.target_low_priority, result.node_deallocation_option) == (3, 2, None)
    assert result.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=2;$NodeDeallocationOption=requeue;x=5"


def test_targets_are_truncated_to_whole_non_negative_nodes() -> None:
    assert run("$TargetDedicatedNodes = 2.99; $TargetLowPriorityNodes = -4;").target_dedicated == 2
    result = run("$TargetDedicatedNodes = 2.99; $TargetLowPriorityNodes = -4;")
    assert result.target_low_priority == 0
    assert result.results.startswith("$TargetDedicatedNodes=2.99;$TargetLowPriorityNodes=-4;")


def test_aliases_of_the_target_variables() -> None:
    assert run("$TargetDedicated = 4; $TargetLowPriority = 2;").target_dedicated == 4
    both = run("$TargetDedicated = 4; $TargetDedicatedNodes = 6; $TargetLowPriority = 2;")
    assert (both.target_dedicated, both.target_low_priority) == (6, 2)  # the full name wins
    assert both.results == ("$TargetDedicatedNodes=6;$TargetLowPriorityNodes=2;$NodeDeallocationOption=requeue;"
                            "$TargetDedicated=4;$TargetLowPriority=2")


def test_node_deallocation_option_values() -> None:
    for option in ("requeue", "terminate", "taskcompletion", "retaineddata"):
        assert run(f"$NodeDeallocationOption = {option};").node_deallocation_option == option
        assert run(f'$NodeDeallocationOption = "{option.upper()}";').node_deallocation_option == option
    assert value("$NodeDeallocationOption") == "requeue"
    assert results("$NodeDeallocationOption = terminate; x = $NodeDeallocationOption == terminate;")["x"] == "1"


def test_plain_values_and_their_defaults() -> None:
    m = metrics(values={"TaskSlotsPerNode": 4, "CurrentDedicatedNodes": 2, "CurrentLowPriorityNodes": 1,
                        "UsableNodeCount": 3})
    assert value("$TaskSlotsPerNode * 100 + $CurrentDedicatedNodes * 10 + $CurrentLowPriorityNodes", m) == "421"
    assert value("$UsableNodeCount", m) == "3"
    assert results("a = $TaskSlotsPerNode; b = $CurrentDedicatedNodes; c = $CurrentLowPriorityNodes;"
                   "d = $UsableNodeCount;", dedicated=5, low_priority=2) == {
        "$TargetDedicatedNodes": "5", "$TargetLowPriorityNodes": "2", "$NodeDeallocationOption": "requeue",
        "a": "1", "b": "5", "c": "2", "d": "7"}


def test_user_variables_with_and_without_dollar_are_distinct_and_listed_by_name() -> None:
    got = run("zeta = 1; $alpha = 2; Beta = 3; alpha = 4; max = 5; y = max(max, 6);").results
    assert got.endswith("$alpha=2;alpha=4;Beta=3;max=5;y=6;zeta=1")
    assert "'x' is not defined" in syntax_error("$x = 1; y = x;").message


def test_variables_take_the_type_of_their_latest_assignment() -> None:
    assert results('x = 1; x = "a"; y = x == "a";')["y"] == "1"
    assert "'+' does not apply to a string and a double" in syntax_error('x = 1; x = "a"; y = x + 1;').message


# --- statements, comments, limits -----------------------------------------------------------------------------
def test_statements_end_with_semicolons_or_line_breaks() -> None:
    assert results("a = 1\nb = a + 1\n;;c = b\n   * 3")["c"] == "6"
    assert results("/* a block\n comment */ a = 1 // a line comment\n$TargetDedicatedNodes = a")["a"] == "1"
    assert syntax_error("a = 1 b = 2").message == ("line 1, column 7: expected ';' or a line break after the "
                                                  "statement, found name 'b'")


def test_formula_limits() -> None:
    parse("x = 1;" * 100)
    assert "at most 100 statements" in syntax_error("x = 1;" * 101).message
    long = "x = 1;" + " " * 8187
    assert len(long) == 8193
    error = syntax_error(long)
    assert error.position is None and "limit is 8192" in error.message
    assert "no statements" in syntax_error(" ;; // nothing\n").message
    assert "nested too deeply" in syntax_error("x = " + "(" * 70 + "1" + ")" * 70).message
    assert "nested too deeply" in syntax_error("x = " + "-" * 70 + "1").message
    assert value("-" * 60 + "1") == "1"


@pytest.mark.parametrize(("formula", "line", "column", "complaint"), [
    ("a = 1;\nb = (2 + ;", 2, 10, "expected a value, found ';'"),
    ("x = 5 % 2", 1, 7, "'%' is not an operator of autoscale formulas"),
    ("x = 1 & 2", 1, 7, "the logical and is '&&'"),
    ("x = 1 | 2", 1, 7, "the logical or is '||'"),
    ("x = 'a'", 1, 5, "strings are written in double quotes"),
    ('x = "abc', 1, 5, "unterminated string"),
    ("x = 1 /* never closed", 1, 7, "unterminated comment"),
    ("x = $ + 1", 1, 5, "'$' must be followed by a variable name"),
    ("x = 12abc", 1, 5, "malformed number '12a'"),
    ("x = 1.2.3", 1, 5, "malformed number"),
    ("x = #", 1, 5, "unexpected character '#'"),
    ("\n\n   x = (1 + 2", 3, 14, "expected ')' to close '(', found the end of the formula"),
    ("x = max(1, 2", 1, 13, "expected ')' to close the arguments of 'max'"),
    ("x = 1 ? 2", 1, 10, "expected ':' in 'condition ? value : value'"),
    ("= 3", 1, 1, "expected a variable name before '='"),
    ("x = $y(1)", 1, 5, "'$y' is a variable, not a function"),
    ("x = time().", 1, 12, "expected a member name after '.', found the end of the formula"),
    ("x = 1 + \t\n\t$Pending", 2, 2, "'$Pending' is not defined"),
    ("x = y = 1", 1, 7, "expected ';' or a line break after the statement, found '='"),
])
def test_syntax_errors_name_line_and_column(formula: str, line: int, column: int, complaint: str) -> None:
    error = syntax_error(formula)
    assert complaint in error.message
    assert error.message.startswith(f"line {line}, column {column}: ")
    assert error.values[:2] == [{"name": "Line", "value": str(line)}, {"name": "Column", "value": str(column)}]
    assert error.position is not None
    lines = formula.split("\n")
    assert error.position == sum(len(x) + 1 for x in lines[:line - 1]) + column - 1


def test_a_program_parses_once_and_evaluates_many_times() -> None:
    program = parse(PENDING_TASKS)
    assert evaluate(program, metrics(PendingTasks=[2] * 6), current_dedicated=0,
                    current_low_priority=0).target_dedicated == 2
    assert evaluate(program, metrics(PendingTasks=[5] * 6), current_dedicated=0,
                    current_low_priority=0).target_dedicated == 5


# --- properties -------------------------------------------------------------------------------------------------
def assert_positioned(error: FormulaError, text: str) -> None:
    assert error.code in (SYNTAX_ERROR, EVALUATION_ERROR)
    assert error.position is None or 0 <= error.position <= len(text)
    assert error.message


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=200))
def test_parse_raises_only_positioned_formula_errors_for_any_text(text: str) -> None:
    try:
        parse(text)
    except FormulaError as error:
        assert_positioned(error, text)


TOKENS = ["$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption", "$PendingTasks",
          "$CPUPercent", "$TaskSlotsPerNode", "$CurrentDedicatedNodes", "$myVar", "myVar", "x", "requeue",
          "taskcompletion", "TimeInterval_Minute", "TimeInterval_Second", "avg", "len", "lg", "ln", "log", "max",
          "min", "norm", "percentile", "rand", "range", "std", "stop", "sum", "time", "val", "ceil", "GetSample",
          "GetSamplePercent", "GetSamplePeriod", "Count", "HistoryBeginTime", "year", "hour", "weekday", "0", "1",
          "2.5", "180", "1e308", '"2024-01-01"', '""', '"a"', "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*",
          "/", "!", "&&", "||", "?", ":", "(", ")", ",", ";", ".", "\n", "// c\n", "/* c */"]


@FAST
@given(st.sampled_from(["", "x = ", "$TargetDedicatedNodes = "]), st.lists(st.sampled_from(TOKENS), max_size=40),
       st.sampled_from(["", " "]))
def test_parse_and_evaluate_raise_only_formula_errors_for_any_token_sequence(start: str, tokens: list[str],
                                                                             sep: str) -> None:
    text = start + sep.join(tokens)
    try:
        program = parse(text)
        evaluate(program, metrics(PendingTasks=[1, 2, 3], CPUPercent=[0.5] * 10), current_dedicated=1,
                 current_low_priority=0, rng=random.Random(0))
    except FormulaError as error:
        assert_positioned(error, text)


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(0, 1000).map(str), st.sampled_from(["0", "0.5", "1e308", "1e-300", "2.5", "100"]),
                     st.sampled_from(["$TaskSlotsPerNode", "$CurrentDedicatedNodes", "$TargetDedicatedNodes",
                                      "rand()"]))


@functools.lru_cache
def typed(kind: str, depth: int) -> st.SearchStrategy[str]:
    """Random well-typed expressions of one type ("d", "v", "s", "ts", "ti")."""
    leaves = {
        "d": _numbers(),
        "v": st.sampled_from(["$PendingTasks.GetSample(3)", "$PendingTasks.GetSample(TimeInterval_Minute * 2)",
                              "$CPUPercent.GetSample(TimeInterval_Minute, TimeInterval_Minute * 5)",
                              "$FailedTasks.GetSample(2)"]),
        "s": st.sampled_from(['"a"', '"b"', "requeue", "$NodeDeallocationOption"]),
        "ts": st.sampled_from(["time()", 'time("2024-01-01T00:00:00Z")', "$PendingTasks.HistoryBeginTime()",
                               'time("Tue, 14 Apr 2020 10:00:00 GMT")']),
        "ti": st.sampled_from(["TimeInterval_Minute", "TimeInterval_100ns", "TimeInterval_Year", "TimeInterval_Zero",
                               "$CPUPercent.GetSamplePeriod()"]),
    }[kind]
    if depth == 0:
        return leaves

    def sub(k: str) -> st.SearchStrategy[str]:
        return typed(k, depth - 1)

    def binary(left: str, ops: str | list[str], right: str) -> st.SearchStrategy[str]:
        return st.tuples(sub(left), st.sampled_from(list(ops) if isinstance(ops, str) else ops), sub(right)).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})")

    def ternary(k: str) -> st.SearchStrategy[str]:
        return st.tuples(sub("d"), sub(k), sub(k)).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})")

    def call(name: str, *kinds: str) -> st.SearchStrategy[str]:
        return st.tuples(*(sub(k) for k in kinds)).map(lambda args: f"{name}({', '.join(args)})")

    compare = ["<", "<=", ">", ">=", "==", "!="]
    options = {
        "d": [binary("d", "+-*/", "d"), binary("d", compare, "d"), binary("s", compare, "s"),
              binary("ts", compare, "ts"), binary("ti", compare, "ti"), binary("d", ["&&", "||"], "d"),
              sub("d").map(lambda e: f"-{e}"), sub("d").map(lambda e: f"!{e}"), ternary("d"),
              st.tuples(st.sampled_from(["avg", "len", "max", "min", "norm", "range", "std", "sum"]),
                        st.lists(st.one_of(sub("d"), sub("v")), min_size=0, max_size=3)).map(
                  lambda t: f"{t[0]}({', '.join(t[1])})"),
              st.tuples(st.sampled_from(["lg", "ln", "log", "ceil", "floor", "round"]), sub("d")).map(
                  lambda t: f"{t[0]}({t[1]})"),
              call("val", "v", "d"), call("percentile", "v", "d"),
              st.tuples(sub("ts"), st.sampled_from(["year", "month", "day", "weekday", "hour", "minute",
                                                   "second"])).map(lambda t: f"{t[0]}.{t[1]}"),
              sub("ti").map(lambda e: f"$PendingTasks.GetSamplePercent({e})"),
              st.just("$PendingTasks.Count()")],
        "v": [binary("v", "+-*/", "d"), binary("v", "+-*/", "v"), ternary("v"),
              st.tuples(st.sampled_from(["lg", "ln", "log", "ceil", "floor", "round"]), sub("v")).map(
                  lambda t: f"{t[0]}({t[1]})"),
              sub("d").map(lambda e: f"$PendingTasks.GetSample({e})"),
              st.tuples(sub("ti"), sub("ti"), sub("d")).map(
                  lambda t: f"$CPUPercent.GetSample({t[0]}, {t[1]}, {t[2]})")],
        "s": [ternary("s")],
        "ts": [binary("ts", "+", "ti"), binary("ti", "+", "ts"), ternary("ts")],
        "ti": [binary("d", "*", "ti"), binary("ti", "*/", "d"), binary("ti", "+-", "ti"), binary("ts", "-", "ts"),
               sub("ti").map(lambda e: f"-{e}"), ternary("ti")],
    }[kind]
    return st.one_of(leaves, *options)


@FAST
@given(st.sampled_from(["d", "v", "s", "ts", "ti"]).flatmap(lambda k: st.tuples(st.just(k), typed(k, 3))))
def test_well_typed_expressions_parse_and_evaluate_without_unexpected_exceptions(case: tuple[str, str]) -> None:
    kind, expression = case
    text = f"result = {expression};"
    program = parse(text)  # well-typed: always accepted
    try:
        result = evaluate(program, metrics(PendingTasks=[1, 0, 3], CPUPercent=[0.25] * 12), current_dedicated=2,
                          current_low_priority=1, rng=random.Random(0))
    except FormulaError as error:
        assert error.code == EVALUATION_ERROR
        assert_positioned(error, text)
    else:
        shown = result.results.split(";result=", 1)[1]
        if kind == "v":
            assert shown.startswith("[") and shown.endswith("]")
        elif kind == "ts":
            assert shown.endswith("Z")
        assert "nan" not in shown.lower() and "inf" not in shown.lower()


@FAST
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_targets_from_any_double_are_whole_non_negative_numbers(x: float) -> None:
    try:
        literal = f"0 - {abs(x)!r}" if math.copysign(1, x) < 0 else repr(x)
        result = run(f"$TargetDedicatedNodes = {literal};")
    except FormulaError as error:
        assert "more nodes than a pool can have" in error.message
    else:
        assert result.target_dedicated == max(0, int(x))


# --- explain: why a formula did what it did (the portal's autoscale editor) -----------------------------------
def test_explain_shows_every_variable_and_each_sample_read() -> None:
    from shoal.domain.batch.autoscale import explain

    m = metrics(PendingTasks=[100, 100, 4, 6, 8, 10, 12, 14])
    out = explain(PENDING_TASKS, m, current_dedicated=3, current_low_priority=0, rng=random.Random(1))
    assert out["error"] is None
    assert out["results"] == run(PENDING_TASKS, m, dedicated=3).results  # the same run as Azure's results
    variables = out["variables"]
    assert variables["$TargetDedicatedNodes"] == "9" and variables["$CurrentDedicatedNodes"] == "3"
    assert variables["pendingTaskSamples"] == "9" and variables["$NodeDeallocationOption"] == "taskcompletion"
    reads = out["reads"]
    assert [(r["metric"], r["call"].split("(")[0]) for r in reads] == [
        ("$PendingTasks", "GetSamplePercent"), ("$PendingTasks", "GetSample")]
    assert reads[0]["result"] == "100" and reads[1]["result"] == "[4,6,8,10,12,14]"
    assert out["series"]["$PendingTasks"]["samples"] == 8


def test_explain_keeps_the_state_up_to_a_failing_statement() -> None:
    from shoal.domain.batch.autoscale import explain

    out = explain("a = 5;\n$TargetDedicatedNodes = avg($PendingTasks.GetSample(1));", metrics(), current_dedicated=2,
                  current_low_priority=0)
    assert out["error"]["code"] == EVALUATION_ERROR and out["results"] is None
    assert out["variables"]["a"] == "5" and out["variables"]["$TargetDedicatedNodes"] == "2"
    bad = explain("$TargetDedicatedNodes = ;", metrics(), current_dedicated=0, current_low_priority=0)
    assert bad["error"]["code"] == SYNTAX_ERROR and bad["variables"] == {}
