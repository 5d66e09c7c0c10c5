"""Database rows. Wire models (``schemas``) and domain objects never mix with these; converters join them.

Every mutable row has a ``version`` column used by SQLAlchemy as an optimistic-concurrency counter: an
UPDATE whose version no longer matches raises ``StaleDataError`` instead of silently overwriting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from shoal.core.clock import utc


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        """As the default (UTC, then the dialect's own conversion), remembering the last value: a bulk write
        binds the same time in every row (a collection of tasks, a batch of ends), and SQLite's conversion to
        text is the costliest part of binding a row."""
        convert = super().bind_processor(dialect)
        last: list[tuple[Any, Any]] = [(None, None)]  # one tuple, swapped whole: safe to share between threads

        def process(value: Any) -> Any:
            seen, bound = last[0]
            if value is seen:
                return bound
            bound = convert(value) if convert is not None else self.process_bind_param(value, dialect)
            last[0] = (value, bound)
            return bound

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Versioned:
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    __mapper_args__ = {"version_id_col": version}


class Setting(Base):
    """Small process-wide facts decided on first start (dev tenant, subscription...)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    default_domain: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    display_name: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(32), default="Enabled")
    created_at: Mapped[datetime]


class SigningKey(Base):
    """RS256 keys that sign access tokens. Kept in the database so replicas share them."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class Principal(Versioned, Base):
    """A service principal: an application (client id) with hashed client secrets."""

    __tablename__ = "principals"
    client_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    display_name: Mapped[str] = mapped_column(String(256))
    secret_hashes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    name: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    scope_key: Mapped[str] = mapped_column(String(1024), index=True)
    role_definition_id: Mapped[str] = mapped_column(String(36))
    principal_id: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(String(32), default="ServicePrincipal")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]


class ResourceGroup(Versioned, Base):
    __tablename__ = "resource_groups"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)  # lower-cased id
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    name: Mapped[str] = mapped_column(String(90))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    managed_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    provisioning_state: Mapped[str] = mapped_column(String(32), default="Succeeded")
    created_at: Mapped[datetime]
    changed_at: Mapped[datetime]


class Resource(Versioned, Base):
    """Any ARM-tracked resource below a resource group (disks, images, pools...).

    Type-specific rules live in ``domain``; this row keeps what ARM itself shows: id, type, location,
    tags, the ``properties`` document, and the provisioning state.
    """

    __tablename__ = "resources"
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)  # lower-cased id
    id: Mapped[str] = mapped_column(Text)
    subscription_id: Mapped[str] = mapped_column(String(36))
    group_key: Mapped[str] = mapped_column(String(512), index=True)
    parent_key: Mapped[str | None] = mapped_column(String(1024), nullable=True, index=True)
    type: Mapped[str] = mapped_column(String(256))
    type_key: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(256))
    location: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sku: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Shoal-only facts never shown on the wire: layer stacks, lineage, machine ids, disk upper dirs...
    internal: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provisioning_state: Mapped[str] = mapped_column(String(32), default="Succeeded")
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    changed_at: Mapped[datetime]

    __table_args__ = (Index("ix_resources_sub_type", "subscription_id", "type_key"),)


class Operation(Versioned, Base):
    """A long-running operation: the record clients poll and the work item reconcilers claim."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    location: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    target_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # InProgress|Succeeded|Failed|Canceled
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lock_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Pool(Versioned, Base):
    """A Batch pool in its canonical form; both planes render it through converters."""

    __tablename__ = "pools"
    key: Mapped[str] = mapped_column(String(600), primary_key=True)  # <account key>/<pool id lower>
    account_key: Mapped[str] = mapped_column(String(512), index=True)
    pool_id: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the pool's nodes are made from (base, layers, data disks), resolved from its image.
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="active")
    state_transition_time: Mapped[datetime]
    allocation_state: Mapped[str] = mapped_column(String(16), default="resizing")
    allocation_state_transition_time: Mapped[datetime]
    target_dedicated: Mapped[int] = mapped_column(Integer, default=0)
    target_low_priority: Mapped[int] = mapped_column(Integer, default=0)
    resize_timeout_s: Mapped[int] = mapped_column(Integer, default=900)
    deallocation_option: Mapped[str] = mapped_column(String(32), default="requeue")
    resize_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resize_errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    autoscale: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The pool's private subnet in the server's node address space: its own (given when its first nodes are
    # made), or the one a virtual network's subnet maps to (``networkConfiguration.subnetId``; pools may share it).
    subnet: Mapped[str | None] = mapped_column(String(18), nullable=True, index=True)
    # Where the inbound NAT endpoints of a pool in a virtual network's subnet listen (its own public address;
    # None: the one its own subnet implies, ``domain.network.public_address``).
    public_address: Mapped[str | None] = mapped_column(String(15), nullable=True)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_modified: Mapped[datetime]
    lock_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Node(Versioned, Base):
    """A compute node of a pool: a machine on a host, with its Batch state."""

    __tablename__ = "nodes"
    key: Mapped[str] = mapped_column(String(700), primary_key=True)  # <pool key>/<node id>
    pool_key: Mapped[str] = mapped_column(String(600), index=True)
    node_id: Mapped[str] = mapped_column(String(80))
    machine_id: Mapped[str] = mapped_column(String(64), unique=True)
    is_dedicated: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str] = mapped_column(String(24), default="creating", index=True)
    scheduling_state: Mapped[str] = mapped_column(String(16), default="enabled")
    state_transition_time: Mapped[datetime]
    allocation_time: Mapped[datetime]
    last_boot_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ip_address: Mapped[str] = mapped_column(String(45))
    # Work the reconciler must do: "", "remove", "reboot", "reimage" (with the option chosen).
    pending: Mapped[str] = mapped_column(String(24), default="")
    pending_option: Mapped[str] = mapped_column(String(24), default="")
    start_task_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    endpoints: Mapped[list[Any]] = mapped_column(JSON, default=list)
    total_tasks_run: Mapped[int] = mapped_column(Integer, default=0)
    total_tasks_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)
    running_slots: Mapped[int] = mapped_column(Integer, default=0)


class NodeUser(Base):
    """A user account made on a compute node (``.../nodes/{node}/users``): what the node users loop needs to
    remove it from its node when it expires. Passwords and keys live only inside the node."""

    __tablename__ = "node_users"
    key: Mapped[str] = mapped_column(String(800), primary_key=True)  # <node key>/<user name lower>
    node_key: Mapped[str] = mapped_column(String(700), index=True)
    name: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(default=False)
    expiry_time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RetiredNode(Base):
    """A node that is gone (resized away, its pool deleted), remembered until its logs expire: the task and
    start-task logs it held stay readable through the file API (Azure loses them with the node)."""

    __tablename__ = "retired_nodes"
    key: Mapped[str] = mapped_column(String(700), primary_key=True)  # the node's key: <pool key>/<node id>
    pool_key: Mapped[str] = mapped_column(String(600), index=True)
    node_id: Mapped[str] = mapped_column(String(80))
    machine_id: Mapped[str] = mapped_column(String(64))
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    logs_expire_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class NodeUsage(Base):
    """A node's time in its pool, written as the node leaves (the pool usage metrics count it by VM size)."""

    __tablename__ = "node_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_key: Mapped[str] = mapped_column(String(512), index=True)
    pool_id: Mapped[str] = mapped_column(String(64))
    vm_size: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Job(Versioned, Base):
    """A Batch job: where its tasks run (pool), with what priority and constraints."""

    __tablename__ = "jobs"
    key: Mapped[str] = mapped_column(String(600), primary_key=True)  # <account key>/<job id lower>
    account_key: Mapped[str] = mapped_column(String(512), index=True)
    job_id: Mapped[str] = mapped_column(String(80))  # a schedule's jobs: <schedule id>:job-<n>
    pool_id: Mapped[str] = mapped_column(String(64), index=True)  # lower-cased
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    previous_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_transition_time: Mapped[datetime]
    previous_state_transition_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    execution_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_modified: Mapped[datetime]


class JobSchedule(Versioned, Base):
    """A Batch job schedule: when to make jobs (``spec["schedule"]``) and what job (``spec["jobSpecification"]``).

    ``next_run_at`` is the run due next (None once no run is left); its jobs are ``<schedule id>:job-<n>``, n
    counting ``jobs_made``."""

    __tablename__ = "job_schedules"
    key: Mapped[str] = mapped_column(String(600), primary_key=True)  # <account key>/<schedule id lower>
    account_key: Mapped[str] = mapped_column(String(512), index=True)
    schedule_id: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    previous_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_transition_time: Mapped[datetime]
    previous_state_transition_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    jobs_made: Mapped[int] = mapped_column(Integer, default=0)
    recent_job_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_modified: Mapped[datetime]


class Task(Versioned, Base):
    """A task of a job; ``seq`` orders tasks first-in first-out within a priority."""

    __tablename__ = "tasks"
    # The queue in order (a job's waiting tasks by age), and counts by state that read no row.
    __table_args__ = (Index("ix_tasks_queue", "job_key", "state", "seq"),
                      Index("ix_tasks_counts", "job_key", "state", "result", "slots"))
    key: Mapped[str] = mapped_column(String(700), primary_key=True)  # <job key>/<task id lower>
    job_key: Mapped[str] = mapped_column(String(600), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    # "success" / "failure" once completed (also in execution_info; a column so counts need no JSON).
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    previous_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_transition_time: Mapped[datetime]
    previous_state_transition_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    execution_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    node_key: Mapped[str | None] = mapped_column(String(700), nullable=True, index=True)
    node_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The attempt now running: its id (so a task never runs twice at once) and host process.
    attempt: Mapped[str | None] = mapped_column(String(36), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the completed task's directory on its node may be deleted (constraints.retentionTime).
    files_expire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # A multi-instance task's subtasks of its latest attempt (wire-shaped SubtaskInformation + "nodeKey").
    subtasks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    etag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_modified: Mapped[datetime]


class JobNodeTask(Base):
    """The job preparation and release task runs of one job on one node (their execution info, wire-shaped)."""

    __tablename__ = "job_node_tasks"
    key: Mapped[str] = mapped_column(String(1400), primary_key=True)  # <job key>|<node key>
    job_key: Mapped[str] = mapped_column(String(600), index=True)
    node_key: Mapped[str] = mapped_column(String(700))
    pool_id: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(128))
    node_url: Mapped[str] = mapped_column(String(1024))
    preparation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    release: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class PoolSample(Base):
    """One sample of a pool's metrics (task counts, node usage) for its autoscale formula."""

    __tablename__ = "pool_samples"
    __table_args__ = (Index("ix_pool_samples_pool_time", "pool_key", "taken_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_key: Mapped[str] = mapped_column(String(700))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoopClaim(Base):
    """The claim of a loop that runs on one replica at a time (``reconcilers/base.py`` LoopClaim): the task
    scheduler, autoscale, the machines loop."""

    __tablename__ = "loop_claims"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    lock_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
