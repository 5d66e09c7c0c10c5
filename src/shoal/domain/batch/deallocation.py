"""What happens to the running tasks of a node that leaves its pool or restarts: the deallocation option.

``requeue``/``retaineddata`` put them back in the queue, ``terminate`` ends them as failed, and
``taskcompletion`` leaves them running (the node waits until they end).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.core.timefmt import format_timestamp
from shoal.domain.batch import multi_instance
from shoal.domain.batch import nodes as node_rules
from shoal.domain.batch import tasks as tasks_rules
from shoal.domain.batch.nodes import BULK_CHUNK, NODES
from shoal.store import models

TASK_ENDED = {"category": "usererror", "code": "TaskEnded",
              "message": "The task was terminated because its node left the pool or restarted."}


def release_tasks(s: Session, clock: Clock, node_keys: Sequence[str], option: str) -> list[str]:
    """Take running tasks off nodes that are leaving or restarting, per the deallocation option ``option``.
    Clearing the attempt makes the scheduler ignore the killed process's exit (and its sweep kills what still
    runs of it elsewhere). Returns the nodes that may go now (with ``taskcompletion``, only those that run
    nothing). A few statements for all the nodes.

    A multi-instance task runs as a whole: losing any of its nodes (its primary's or a subtask's) takes the whole
    attempt off, and every node it held gets its slot back."""
    now = clock.now()
    # The nodes' rows are locked first (PostgreSQL; SQLite has one writer anyway): the task loop writes nodes,
    # then tasks, and taking the tasks first here deadlocked with it (seen as a host's nodes left their pool).
    for i in range(0, len(node_keys), BULK_CHUNK):
        s.execute(select(NODES.c.key).where(NODES.c.key.in_(node_keys[i:i + BULK_CHUNK])).with_for_update())
    running = _running_on(s, node_keys)
    ready = [key for key in node_keys if not (running.get(key) and option == "taskcompletion")]
    going = set(ready)
    done: set[str] = set()
    for key in ready:
        for task in running.get(key, []):
            if task.key in done:  # a multi-instance task with several of these nodes
                continue
            done.add(task.key)
            primary = s.get(models.Node, task.node_key) if task.node_key not in going and task.node_key else None
            if primary is not None:  # a subtask's node is lost: the primary's node stays, and is freed
                tasks_rules.free_slot(primary, task, clock)
            multi_instance.end_subtasks(s, task, None, clock)  # a multi-instance task frees its other nodes
            _take_off(task, clock, option, now)
    s.flush()  # the tasks' changes first: they are ORM writes, the nodes' counts below are not
    for i in range(0, len(ready), BULK_CHUNK):
        s.execute(update(NODES).where(NODES.c.key.in_(ready[i:i + BULK_CHUNK]))
                  .values(running_tasks=0, running_slots=0, version=NODES.c.version + 1))
    return ready


def disable_scheduling(s: Session, clock: Clock, node: models.Node, option: str | None) -> None:
    """``disablescheduling``: the node takes no new task, and its running tasks are requeued (the default) or
    terminated now, or left to finish (``taskcompletion``), as on Azure."""
    running = node.state == "running"
    option = node_rules.disable_scheduling(node, clock, option)
    if running and option != "taskcompletion":
        s.flush()  # the node's own changes first: releasing its tasks writes its counts in bulk
        release_tasks(s, clock, [node.key], option)


def _running_on(s: Session, node_keys: Sequence[str]) -> dict[str, list[models.Task]]:
    """The tasks with an attempt on each of these nodes: those whose (primary) node it is, and multi-instance
    tasks with a subtask there."""
    running: dict[str, list[models.Task]] = {}
    for i in range(0, len(node_keys), BULK_CHUNK):
        for task in s.scalars(select(models.Task).where(models.Task.node_key.in_(node_keys[i:i + BULK_CHUNK]),
                                                        models.Task.attempt.is_not(None))):
            running.setdefault(str(task.node_key), []).append(task)
    for key, tasks in multi_instance.running_on(s, node_keys).items():
        running.setdefault(key, []).extend(tasks)
    return running


def _take_off(task: models.Task, clock: Clock, option: str, now: datetime) -> None:
    """``terminate`` ends the task as failed; anything else requeues it (not a retry)."""
    if option != "terminate":
        tasks_rules.requeue(task, clock)
        return
    task.attempt, task.pid = None, None
    task.execution_info = {**task.execution_info, "result": "failure", "endTime": format_timestamp(now),
                           "failureInfo": dict(TASK_ENDED)}
    tasks_rules.set_state(task, clock, "completed")
