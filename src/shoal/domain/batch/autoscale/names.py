"""The names a formula can use besides its own variables: service-defined variables, constants, functions."""

from __future__ import annotations

from enum import Enum


class Type(Enum):
    DOUBLE = "double"
    VEC = "doubleVec"
    STRING = "string"
    TIMESTAMP = "timestamp"
    INTERVAL = "timeinterval"
    METRIC = "metric"  # a sampled service-defined variable: only its sample methods can be used
    NEVER = "nothing"  # stop(): evaluation ends there, so it fits wherever a value is expected

    def __str__(self) -> str:
        return self.value


# Read-write service-defined variables. The aliases are separate variables; a formula that sets both a name
# and its alias gets the fully named variable's value (Azure's rule).
TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
DEALLOCATION = "$NodeDeallocationOption"
ALIASES = {"$TargetDedicated": TARGET_DEDICATED, "$TargetLowPriority": TARGET_LOW_PRIORITY}
TARGETS = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, *ALIASES)

DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
DEFAULT_DEALLOCATION = "requeue"

# Read-only service-defined variables sampled every 30 seconds: ``$CPUPercent.GetSample(...)`` and friends.
SAMPLED = frozenset({
    "$CPUPercent", "$WallClockSeconds", "$MemoryBytes", "$DiskBytes", "$DiskReadBytes", "$DiskWriteBytes",
    "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes", "$NetworkOutBytes", "$SampleNodeCount", "$ActiveTasks",
    "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks", "$PreemptedNodeCount",
})
# Read-only service-defined variables that are plain doubles, read when the formula is evaluated
# ($CurrentDedicated and $CurrentLowPriority are the older names, still in Test-AzBatchAutoScale's example).
PLAIN = frozenset({"$TaskSlotsPerNode", "$CurrentDedicatedNodes", "$CurrentLowPriorityNodes", "$UsableNodeCount",
                   "$CurrentDedicated", "$CurrentLowPriority"})

TICKS_PER_SECOND = 10_000_000  # time is counted in 100 ns ticks, like .NET's TimeSpan
INTERVALS = {
    "TimeInterval_Zero": 0,
    "TimeInterval_100ns": 1,
    "TimeInterval_Microsecond": 10,
    "TimeInterval_Millisecond": 10_000,
    "TimeInterval_Second": TICKS_PER_SECOND,
    "TimeInterval_Minute": 60 * TICKS_PER_SECOND,
    "TimeInterval_Hour": 3600 * TICKS_PER_SECOND,
    "TimeInterval_Day": 86400 * TICKS_PER_SECOND,
    "TimeInterval_Week": 7 * 86400 * TICKS_PER_SECOND,
    "TimeInterval_Year": 365 * 86400 * TICKS_PER_SECOND,
}

TIMESTAMP_FIELDS = ("year", "month", "day", "weekday", "hour", "minute", "second")

# Functions over a doubleVecList (any mix of doubles and doubleVecs, flattened) returning a double.
LIST_FUNCTIONS = frozenset({"avg", "len", "max", "min", "norm", "range", "std", "sum"})
# Component-wise functions: f(double) -> double; f(doubleVecList) -> doubleVec.
ELEMENTWISE_FUNCTIONS = frozenset({"lg", "ln", "log", "ceil", "floor", "round"})
OTHER_FUNCTIONS = frozenset({"percentile", "rand", "stop", "time", "val"})
FUNCTIONS = LIST_FUNCTIONS | ELEMENTWISE_FUNCTIONS | OTHER_FUNCTIONS

SAMPLE_METHODS = ("GetSample", "GetSamplePercent", "GetSamplePeriod", "Count", "HistoryBeginTime")


def is_constant(name: str) -> bool:
    return name in INTERVALS or name.lower() in DEALLOCATION_OPTIONS
