"""What happens to the running tasks of a node that leaves its pool or restarts: the deallocation option.

``requeue``/``retaineddata`` put them back in the queue, ``terminate`` ends them as failed, and
``taskcompletion`` leaves them running (the node waits until they end).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shoal.core.clock import Clock
from shoal.core.timefmt import format_timestamp
from shoal.domain.batch import multi_instance
from shoal.domain.batch import tasks as tasks_rules
from shoal.domain.batch.nodes import BULK_CHUNK, NODES
from shoal.store import models

TASK_ENDED = {"category": "usererror", "code": "TaskEnded",
              "message": "The task was terminated because its node left the pool or restarted."}


def release_tasks(s: Session, clock: Clock, node_keys: Sequence[str], option: str) -> list[str]:
    """Take running tasks off nodes that are leaving or restarting, per the deallocation option ``option``.
    Clearing the attempt makes the scheduler ignore the killed process's exit. Returns the nodes that may go
    now (with ``taskcompletion``, only those that run nothing). A few statements for all the nodes."""
    now = clock.now()
    running: dict[str, list[models.Task]] = {}
    for i in range(0, len(node_keys), BULK_CHUNK):
        for task in s.scalars(select(models.Task).where(models.Task.node_key.in_(node_keys[i:i + BULK_CHUNK]),
                                                        models.Task.attempt.is_not(None))):
            running.setdefault(str(task.node_key), []).append(task)
    ready = [key for key in node_keys if not (running.get(key) and option == "taskcompletion")]
    for key in ready:
        for task in running.get(key, []):
            info = dict(task.execution_info)
            task.attempt, task.pid = None, None
            if option == "terminate":
                info.update({"result": "failure", "endTime": format_timestamp(now), "failureInfo": dict(TASK_ENDED)})
                task.execution_info = info
                tasks_rules.set_state(task, clock, "completed")
            else:
                tasks_rules.requeue(task, clock)
            multi_instance.end_subtasks(s, task, None, clock)  # a multi-instance task frees its other nodes
    s.flush()  # the tasks' changes first: they are ORM writes, the nodes' counts below are not
    for i in range(0, len(ready), BULK_CHUNK):
        s.execute(update(NODES).where(NODES.c.key.in_(ready[i:i + BULK_CHUNK]))
                  .values(running_tasks=0, running_slots=0, version=NODES.c.version + 1))
    return ready
