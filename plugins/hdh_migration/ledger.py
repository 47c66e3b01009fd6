"""The ledger: the state of every partition and domain, in SQLAlchemy (SQLite or PostgreSQL).

The ledger is a convenience index, not the truth: the manifests and cutover records in the
sovereign store are. It can be rebuilt from them at any time (``python -m hdh_migration reindex``),
so losing it loses nothing. The one thing it adds is an anchor: the cutover history's entry hashes,
kept here as well as in ``_cutover/<domain>.json``, so an edit of the record is detectable.
It never holds data values: only names, counts, sizes, hashes, states and redacted error text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa

from hdh_migration.errors import StateTransitionError, Where
from hdh_migration.states import DOMAIN_TRANSITIONS, PARTITION_TRANSITIONS, DomainState, PartitionState, sources

log = logging.getLogger(__name__)

CUTOVER_ACTIONS = ("cutover", "rollback")

metadata = sa.MetaData()

partitions_table = sa.Table(
    "hdh_partition",
    metadata,
    sa.Column("domain", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rows", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("duration_s", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("run_id", sa.String(250)),
    sa.Column("manifest_sha256", sa.String(64)),
    sa.Column("source_etags", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # The source bytes listed when the partition was last planned (its latest ``planned`` event), kept
    # here by the ledger itself so the status adds sizes in one pass over this table.
    sa.Column("source_bytes", sa.BigInteger),
)

domains_table = sa.Table(
    "hdh_domain",
    metadata,
    sa.Column("domain", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

events_table = sa.Table(
    "hdh_event",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("domain", sa.String(64), nullable=False),
    sa.Column("table_name", sa.String(64)),
    sa.Column("partition", sa.String(32)),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("run_id", sa.String(250)),
)


waivers_table = sa.Table(
    "hdh_waiver",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(64), nullable=False),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("expectations", sa.Text, nullable=False),
    sa.Column("accepted_by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# Append-only: rows are inserted, never updated or deleted. Each row mirrors one sealed entry of the
# history in ``_cutover/<domain>.json``; its entry hash anchors the record outside the store.
cutover_history_table = sa.Table(
    "hdh_cutover_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("root_sha256", sa.String(64)),
    sa.Column("entry_sha256", sa.String(64), nullable=False, unique=True),
)

# One row per gap scan (``hdh_gap_scan`` DAG or CLI): what was checked, what was missing, which
# backfills were asked for. ``report`` is the scan's JSON report (names, partitions and counts only).
gap_scans_table = sa.Table(
    "hdh_gap_scan",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("partitions_checked", sa.Integer, nullable=False),
    sa.Column("gaps", sa.Integer, nullable=False),
    sa.Column("backfills", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("report", sa.Text, nullable=False),
)

# The write lease of one domain partition: at most one DAG run plans, stages, validates and commits it
# at a time. It expires, so a run that crashed without releasing it blocks the partition only that long.
# ``expires_at`` is written and compared with the database's clock only: workers' clocks may disagree.
leases_table = sa.Table(
    "hdh_partition_lease",
    metadata,
    sa.Column("domain", sa.String(64), primary_key=True),
    sa.Column("partition", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


# The indexes of the board's and the status's queries (``status``): the latest event of a kind per
# partition, a domain's latest event of some kinds, the partitions in some states. ``Ledger`` creates
# them on a ledger made before they existed too (``create_all`` skips the tables that exist).
INDEXES = (
    sa.Index("ix_hdh_event_kind_key", events_table.c.kind, events_table.c.domain, events_table.c.table_name,
             events_table.c.partition, events_table.c.id),
    sa.Index("ix_hdh_event_key_kind", events_table.c.domain, events_table.c.table_name, events_table.c.partition,
             events_table.c.kind, events_table.c.run_id),
    sa.Index("ix_hdh_event_domain_kind", events_table.c.domain, events_table.c.kind, events_table.c.id),
    sa.Index("ix_hdh_partition_state", partitions_table.c.state, partitions_table.c.updated_at),
    sa.Index("ix_hdh_cutover_history_domain", cutover_history_table.c.domain, cutover_history_table.c.id),
)  # fmt: skip


@dataclass(frozen=True)
class PartitionRecord:
    domain: str
    table_name: str
    partition: str
    state: str
    rows: int | None
    bytes: int | None
    duration_s: float | None
    attempts: int
    last_error: str | None
    run_id: str | None
    manifest_sha256: str | None
    source_etags: dict[str, str]
    updated_at: dt.datetime
    source_bytes: int | None = None


@dataclass(frozen=True)
class PartitionLease:
    run_id: str
    expires_at: dt.datetime
    database_now: dt.datetime


class LeaseRenewer:
    """Renews one run's partition lease every ``every`` seconds, in a thread of its own, until stopped.

    Bound to a task (see ``leases.renews_lease``): while the task runs, its lease keeps moving
    ``ttl`` ahead of the database's clock; once the task returns or its process dies, renewal stops and
    the lease expires ``ttl`` later. A lease found taken over or released is never taken back: renewal
    stops and ``lost`` says so; the task's next write checks the lease in the ledger and refuses.
    """

    def __init__(self, ledger: Ledger, domain: str, partition: str, run_id: str, ttl: dt.timedelta, every: float):
        self.ledger, self.domain, self.partition, self.run_id = ledger, domain, partition, run_id
        self.ttl, self.every = ttl, every
        self.renewals = 0
        self.lost = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"hdh-lease-{domain}-{partition}", daemon=True)

    def __enter__(self) -> LeaseRenewer:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop renewing (idempotent); returns once no renewal is in flight."""
        self._stopped.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stopped.wait(self.every):
            try:
                renewed = self.ledger.renew_partition(self.domain, self.partition, self.run_id, self.ttl)
            except Exception as error:  # noqa: BLE001 - a ledger outage: try again at the next beat
                log.warning(
                    "%s/%s: lease not renewed (%s); retrying", self.domain, self.partition, type(error).__name__
                )
                continue
            if not renewed:
                self.lost = True
                log.warning("%s/%s: run %s no longer holds the write lease", self.domain, self.partition, self.run_id)
                return
            self.renewals += 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A ledger time made timezone-aware: SQLite hands timezone-aware columns back naive; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def engine_url_from_connection(conn_id: str = "hdh_ledger") -> str:
    """The SQLAlchemy URL of the ledger, from its Airflow connection (sqlite or postgres)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type in ("postgres", "postgresql"):
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or "127.0.0.1",
            port=conn.port or 5432,
            database=conn.schema or "hdh_ledger",
        ).render_as_string(hide_password=False)
    raise ValueError(f"ledger connection {conn_id!r} has type {conn.conn_type!r}; use sqlite or postgres")


class Ledger:
    def __init__(self, url: str):
        self.engine = sa.create_engine(url, pool_pre_ping=True, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self._add_source_bytes()
        self._create_indexes()

    def _create_indexes(self) -> None:
        """The board's indexes, on a ledger made before them too; several processes may start at once."""
        for index in INDEXES:
            try:
                index.create(self.engine, checkfirst=True)
            except sa.exc.DBAPIError:  # another process created it between the check and the create
                tables = {i.table.name for i in INDEXES}
                existing = {x["name"] for t in tables for x in sa.inspect(self.engine).get_indexes(t)}
                if index.name not in existing:
                    raise

    def _add_source_bytes(self) -> None:
        """A ledger made before ``hdh_partition.source_bytes`` existed: add it, filled from the latest plans
        (idempotent: several processes may start on it at once)."""
        if "source_bytes" in {c["name"] for c in sa.inspect(self.engine).get_columns("hdh_partition")}:
            return
        postgres = self.engine.dialect.name == "postgresql"
        try:
            with self._begin() as conn:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE hdh_partition ADD COLUMN {'IF NOT EXISTS ' if postgres else ''}source_bytes BIGINT"
                    )
                )
        except sa.exc.OperationalError as error:  # SQLite: another process added it first
            if "duplicate column" not in str(error):
                raise
        with self._begin() as conn:
            conn.execute(
                sa.update(partitions_table)
                .where(partitions_table.c.source_bytes.is_(None))
                .values(source_bytes=self._planned_bytes())
            )

    def _planned_bytes(self):
        """A partition's source bytes by its latest ``planned`` event: a subquery correlated with ``hdh_partition``
        (one descending step of ``ix_hdh_event_kind_key``)."""
        e, p = events_table.c, partitions_table.c
        return (
            sa.select(self._json_int(e.detail, "source_bytes"))
            .where(e.kind == "planned", e.domain == p.domain, e.table_name == p.table_name, e.partition == p.partition)
            .order_by(e.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    @classmethod
    def from_connection(cls, conn_id: str = "hdh_ledger") -> Ledger:
        return _ledger_for_url(engine_url_from_connection(conn_id))

    @contextmanager
    def _begin(self):
        with self.engine.begin() as conn:
            yield conn

    def get(self, domain: str, table_name: str, partition: str) -> PartitionRecord | None:
        with self._begin() as conn:
            row = conn.execute(
                sa.select(partitions_table).where(
                    partitions_table.c.domain == domain,
                    partitions_table.c.table_name == table_name,
                    partitions_table.c.partition == partition,
                )
            ).first()
        return _record(row) if row else None

    def partitions(self, domain: str | None = None) -> list[PartitionRecord]:
        query = sa.select(partitions_table).order_by(
            partitions_table.c.domain, partitions_table.c.table_name, partitions_table.c.partition
        )
        if domain:
            query = query.where(partitions_table.c.domain == domain)
        with self._begin() as conn:
            return [_record(row) for row in conn.execute(query)]

    def set_state(
        self,
        domain: str,
        table_name: str,
        partition: str,
        state: PartitionState,
        *,
        run_id: str | None = None,
        new_attempt: bool = False,
        rebuild: bool = False,
        **fields,
    ) -> None:
        """Move a partition to ``state``; ``fields`` are rows, bytes, duration_s, last_error, ...

        Only as ``PARTITION_TRANSITIONS`` allows from its state now (read in the same transaction):
        else ``StateTransitionError``, and nothing is written. With ``rebuild`` (``reindex``), the state is
        read back from the store's manifest, the truth: it replaces whatever the ledger said.
        The ``partition_<state>`` event keeps the error text, or else the counts given (rows, bytes,
        duration_s) as JSON: the board's throughput comes from the ``partition_committed`` ones.
        """
        state = PartitionState(state)
        if "source_etags" in fields and fields["source_etags"] is not None:
            fields["source_etags"] = json.dumps(fields["source_etags"], sort_keys=True)
        values = {"updated_at": _now(), **fields}
        if run_id is not None:
            values["run_id"] = run_id
        if new_attempt:
            values["attempts"] = partitions_table.c.attempts + 1
        key = {"domain": domain, "table_name": table_name, "partition": partition}
        with self._begin() as conn:
            if not _transition(conn, partitions_table, key, state, values, PARTITION_TRANSITIONS, rebuild=rebuild):
                values["attempts"] = 1 if new_attempt else 0
                values.setdefault("source_bytes", self._latest_planned_bytes(conn, **key))
                conn.execute(sa.insert(partitions_table).values(**key, state=state, **values))
            conn.execute(
                sa.insert(events_table).values(
                    at=_now(),
                    domain=domain,
                    table_name=table_name,
                    partition=partition,
                    kind=f"partition_{state}",
                    detail=fields.get("last_error") or _counts_detail(fields),
                    run_id=run_id,
                )
            )

    def _database_time(self, offset: dt.timedelta = dt.timedelta(0)):
        """The database's clock plus ``offset``, as an SQL expression: the one clock that judges leases."""
        if self.engine.dialect.name == "sqlite":
            # SQLAlchemy's own storage format for SQLite datetimes, so stored times compare as text.
            return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now", f"{offset.total_seconds():+.6f} seconds")
        return sa.func.now() + sa.literal(offset, sa.Interval)

    def claim_partition(
        self, domain: str, partition: str, run_id: str, ttl: dt.timedelta, stale_holder: str | None = None
    ) -> str | None:
        """Take or renew a partition's write lease for a run; returns the holding run's id if another holds it.

        Atomic on SQLite and PostgreSQL: the insert does nothing on a conflict, and the update only takes
        a lease that this run already holds, that has expired by the database's clock, or whose holder is
        ``stale_holder`` (a run known to have finished).
        """
        from sqlalchemy.dialects import postgresql, sqlite

        lease = {"domain": domain, "partition": partition}
        dialect_insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        expires_at = self._database_time(ttl)
        with self._begin() as conn:
            inserted = conn.execute(
                dialect_insert(leases_table)
                .values(**lease, run_id=run_id, expires_at=expires_at)
                .on_conflict_do_nothing()
            ).rowcount
            if inserted:
                return None
            taken = conn.execute(
                sa.update(leases_table)
                .where(
                    leases_table.c.domain == domain,
                    leases_table.c.partition == partition,
                    sa.or_(
                        leases_table.c.run_id.in_([run_id, stale_holder or run_id]),
                        leases_table.c.expires_at < self._database_time(),
                    ),
                )
                .values(run_id=run_id, expires_at=expires_at)
            ).rowcount
            if taken:
                return None
            holder = conn.execute(
                sa.select(leases_table.c.run_id).where(
                    leases_table.c.domain == domain, leases_table.c.partition == partition
                )
            ).scalar()
        return holder

    def renew_partition(self, domain: str, partition: str, run_id: str, ttl: dt.timedelta) -> bool:
        """Move the expiry of a lease this run holds to ``ttl`` from now (database clock); False if it does not.

        Never takes a lease: one released, or taken over by another run, stays so.
        """
        with self._begin() as conn:
            renewed = conn.execute(
                sa.update(leases_table)
                .where(
                    leases_table.c.domain == domain,
                    leases_table.c.partition == partition,
                    leases_table.c.run_id == run_id,
                )
                .values(expires_at=self._database_time(ttl))
            ).rowcount
        return bool(renewed)

    def partition_lease(self, domain: str, partition: str) -> PartitionLease | None:
        """Who holds a partition's write lease, until when, and the database's time now; None if free."""
        query = sa.select(
            leases_table.c.run_id, leases_table.c.expires_at, self._database_time().label("database_now")
        ).where(leases_table.c.domain == domain, leases_table.c.partition == partition)
        with self._begin() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        now = row.database_now
        if isinstance(now, str):  # SQLite returns the expression's text as is
            now = dt.datetime.fromisoformat(now)
        return PartitionLease(row.run_id, as_utc(row.expires_at), as_utc(now))

    def release_partition(self, domain: str, partition: str, run_id: str) -> None:
        """Give a partition's write lease back, if this run holds it."""
        with self._begin() as conn:
            conn.execute(
                sa.delete(leases_table).where(
                    leases_table.c.domain == domain,
                    leases_table.c.partition == partition,
                    leases_table.c.run_id == run_id,
                )
            )

    def record_event(self, domain: str, kind: str, detail: dict | str | None = None, **where) -> None:
        """Append an event; a ``planned`` one also sets its partition's ``source_bytes`` (its row, if any yet)."""
        text = json.dumps(detail, sort_keys=True) if isinstance(detail, dict) else detail
        with self._begin() as conn:
            conn.execute(sa.insert(events_table).values(at=_now(), domain=domain, kind=kind, detail=text, **where))
            if kind == "planned" and isinstance(detail, dict) and where.get("table_name") and where.get("partition"):
                p = partitions_table.c
                conn.execute(
                    sa.update(partitions_table)
                    .where(p.domain == domain, p.table_name == where["table_name"], p.partition == where["partition"])
                    .values(source_bytes=detail.get("source_bytes"))
                )

    @staticmethod
    def _latest_planned_bytes(conn, domain: str, table_name: str, partition: str) -> int | None:
        e = events_table.c
        detail = conn.execute(
            sa.select(e.detail)
            .where(e.kind == "planned", e.domain == domain, e.table_name == table_name, e.partition == partition)
            .order_by(e.id.desc())
            .limit(1)
        ).scalar()
        return json.loads(detail).get("source_bytes") if detail else None

    def events(self, domain: str | None = None, kinds: tuple[str, ...] | None = None) -> list[dict]:
        query = sa.select(events_table).order_by(events_table.c.id)
        if domain:
            query = query.where(events_table.c.domain == domain)
        if kinds:
            query = query.where(events_table.c.kind.in_(kinds))
        with self._begin() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # -----------------------------------------------------------------------------------------
    # the status's and the board's queries: aggregated in the database, bounded in size

    def _json_int(self, column, key: str):
        """An integer field of a JSON text column, as an SQL expression (SQLite or PostgreSQL)."""
        if self.engine.dialect.name == "sqlite":
            return sa.func.json_extract(column, f"$.{key}")
        return sa.cast(sa.cast(column, sa.JSON)[key].as_string(), sa.BigInteger)

    def _epoch(self, column):
        """A time column as seconds since the epoch, as an SQL expression."""
        if self.engine.dialect.name == "sqlite":
            return sa.cast(sa.func.strftime("%s", column), sa.Integer)
        return sa.cast(sa.extract("epoch", column), sa.BigInteger)

    @staticmethod
    def _expected(ranges: dict[str, tuple[list[str], str, str]]):
        """The partitions a catalogue expects: per domain, its tables and its first and last partition values.

        Partition values of one grain compare as text in their order (``2023``, ``2024-01-01``).
        """
        p = partitions_table.c
        return sa.or_(
            sa.false(),
            *(
                sa.and_(p.domain == domain, p.table_name.in_(tables), p.partition >= first, p.partition <= last)
                for domain, (tables, first, last) in ranges.items()
            ),
        )

    def _grouped(self, ranges: dict[str, tuple[list[str], str, str]], bucket_s: int | None) -> dict[tuple, dict]:
        """Per (domain, state, time bucket of a committed partition's last change, or None): how many partitions,
        their rows and stored bytes, and the source bytes of those whose size is known, with how many.

        A partition's source size is its latest plan's (``source_bytes``), else, committed without a plan kept
        (a ledger rebuilt by ``reindex``), its stored bytes. One pass over ``hdh_partition``.
        """
        p = partitions_table.c
        bucket = (
            sa.case((p.state == PartitionState.COMMITTED, self._epoch(p.updated_at) // bucket_s), else_=None)
            if bucket_s
            else sa.null()
        ).label("bucket")
        size = sa.func.coalesce(p.source_bytes, sa.case((p.state == PartitionState.COMMITTED, p.bytes), else_=None))
        query = (
            sa.select(p.domain, p.state, bucket, sa.func.count().label("partitions"), sa.func.sum(p.rows).label("rows"),
                      sa.func.sum(p.bytes).label("bytes"), sa.func.sum(size).label("source_bytes"),
                      sa.func.count(size).label("sized"))
            .where(self._expected(ranges))
            .group_by(p.domain, p.state, bucket)
        )  # fmt: skip
        with self._begin() as conn:
            return {
                (row.domain, row.state, row.bucket): {
                    "partitions": row.partitions,
                    "rows": int(row.rows or 0),
                    "bytes": int(row.bytes or 0),
                    "source_bytes": int(row.source_bytes or 0),
                    "sized": row.sized,
                }
                for row in conn.execute(query)
            }

    def partition_summary(self, ranges: dict[str, tuple[list[str], str, str]]) -> dict[str, dict[str, dict]]:
        """Per domain, per partition state: how many partitions, their rows, stored bytes, source bytes (of
        those whose size is known) and how many have a known size. Only the partitions ``ranges`` expects
        (domain -> tables, first and last partition value)."""
        return self.summary_and_commits(ranges, None)[0]

    def summary_and_commits(
        self, ranges: dict[str, tuple[list[str], str, str]], bucket_s: int | None
    ) -> tuple[dict[str, dict[str, dict]], list[tuple[str, int, int, int]]]:
        """``partition_summary``, and the committed partitions per domain and time bucket of their commit
        (their last change): (domain, bucket start in epoch seconds, stored bytes, source bytes), oldest first.
        Bounded by the buckets, whatever the partition count."""
        summary: dict[str, dict[str, dict]] = {}
        commits = []
        for (domain, state, bucket), group in self._grouped(ranges, bucket_s).items():
            states = summary.setdefault(domain, {})
            total = states.setdefault(state, {"partitions": 0, "rows": 0, "bytes": 0, "source_bytes": 0, "sized": 0})
            for key in total:
                total[key] += group[key]
            if bucket is not None:
                commits.append((domain, int(bucket) * bucket_s, group["bytes"], group["source_bytes"]))
        return summary, sorted(commits, key=lambda c: c[1])

    def first_commit_at(self) -> dt.datetime | None:
        """When the earliest committed partition was last written (one step of ``ix_hdh_partition_state``)."""
        p = partitions_table.c
        query = sa.select(sa.func.min(p.updated_at)).where(p.state == PartitionState.COMMITTED)
        with self._begin() as conn:
            first = conn.execute(query).scalar()
        return None if first is None else as_utc(first)

    def partitions_in(self, states: tuple[str, ...], limit: int | None = None) -> list[PartitionRecord]:
        """The partitions in these states, most recently changed first (at most ``limit``)."""
        query = (
            sa.select(partitions_table)
            .where(partitions_table.c.state.in_(states))
            .order_by(partitions_table.c.updated_at.desc())
            .limit(limit)
        )
        with self._begin() as conn:
            return [_record(row) for row in conn.execute(query)]

    def count_in(self, states: tuple[str, ...]) -> dict[str, int]:
        """How many partitions each domain has in these states."""
        p = partitions_table.c
        query = sa.select(p.domain, sa.func.count()).where(p.state.in_(states)).group_by(p.domain)
        with self._begin() as conn:
            return dict(conn.execute(query).all())

    def latest_details(
        self, kind: str, keys: list[tuple[str, str, str]] | None = None
    ) -> dict[tuple[str, str, str], dict]:
        """Per (domain, table, partition), the JSON detail of its latest event of this kind (only ``keys``)."""
        e = events_table.c
        latest = sa.select(sa.func.max(e.id)).where(e.kind == kind).group_by(e.domain, e.table_name, e.partition)
        if keys is not None:
            if not keys:
                return {}
            latest = latest.where(sa.tuple_(e.domain, e.table_name, e.partition).in_(keys))
        query = sa.select(e.domain, e.table_name, e.partition, e.detail).where(e.id.in_(latest.scalar_subquery()))
        with self._begin() as conn:
            return {
                (row.domain, row.table_name, row.partition): json.loads(row.detail or "{}")
                for row in conn.execute(query)
            }

    def flight_progress(self, states: tuple[str, ...], kinds: tuple[str, ...]) -> dict[tuple, dict]:
        """For the partitions in these states: per (domain, table, partition), the first and last of its current
        run's events of these kinds (planning, progress) and the bytes its ``transfer_progress`` events counted.
        From ``ix_hdh_partition_state`` to ``ix_hdh_event_key_kind``: a few index steps per partition."""
        e, p = events_table.c, partitions_table.c
        moved = sa.case((e.kind == "transfer_progress", self._json_int(e.detail, "bytes")), else_=0)
        # The kinds are picked in the aggregates, not the WHERE clause: SQLite would otherwise start from the
        # events of these kinds (all of them) rather than from the few partitions in flight.
        at = sa.case((e.kind.in_(kinds), e.at), else_=None)
        query = (
            sa.select(p.domain, p.table_name, p.partition, sa.func.min(at).label("first"),
                      sa.func.max(at).label("last"), sa.func.sum(moved).label("bytes"))
            .select_from(
                partitions_table.join(events_table, sa.and_(e.domain == p.domain, e.table_name == p.table_name,
                                                            e.partition == p.partition, e.run_id == p.run_id))
            )
            .where(p.state.in_(states))
            .group_by(p.domain, p.table_name, p.partition)
        )  # fmt: skip
        with self._begin() as conn:
            return {
                (row.domain, row.table_name, row.partition): {
                    "first": as_utc(row.first),
                    "last": as_utc(row.last),
                    "bytes": int(row.bytes or 0),
                }
                for row in conn.execute(query)
                if row.first is not None
            }

    def add_waiver(
        self, domain: str, table_name: str, partition: str, expectations: list[str], accepted_by: str, reason: str
    ) -> None:
        """Accept named failing expectations of one partition: who, why, when and which are kept."""
        detail = {"expectations": sorted(expectations), "accepted_by": accepted_by, "reason": reason}
        with self._begin() as conn:
            conn.execute(
                sa.insert(waivers_table).values(
                    domain=domain,
                    table_name=table_name,
                    partition=partition,
                    expectations=json.dumps(sorted(expectations)),
                    accepted_by=accepted_by,
                    reason=reason,
                    at=_now(),
                )
            )
            conn.execute(
                sa.insert(events_table).values(
                    at=_now(),
                    domain=domain,
                    table_name=table_name,
                    partition=partition,
                    kind="waiver",
                    detail=json.dumps(detail, sort_keys=True),
                )
            )

    def waivers(self, domain: str, table_name: str, partition: str) -> list[dict]:
        query = (
            sa.select(waivers_table)
            .where(
                waivers_table.c.domain == domain,
                waivers_table.c.table_name == table_name,
                waivers_table.c.partition == partition,
            )
            .order_by(waivers_table.c.id)
        )
        with self._begin() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row["expectations"] = json.loads(row["expectations"])
            row["at"] = row["at"].isoformat()
        return rows

    def waived(self, domain: str, table_name: str, partition: str) -> set[str]:
        return {e for w in self.waivers(domain, table_name, partition) for e in w["expectations"]}

    def domain_state(self, domain: str) -> DomainState:
        with self._begin() as conn:
            row = conn.execute(sa.select(domains_table.c.state).where(domains_table.c.domain == domain)).first()
        return DomainState(row.state) if row else DomainState.PLANNED

    def set_domain_state(
        self, domain: str, state: DomainState, detail: dict | None = None, *, rebuild: bool = False
    ) -> None:
        """Move a domain to ``state``, as ``DOMAIN_TRANSITIONS`` allows (see ``set_state``, and its ``rebuild``)."""
        with self._begin() as conn:
            _set_domain_state(conn, domain, state, detail, rebuild=rebuild)

    def last_event(self, domain: str, kinds: tuple[str, ...]) -> dict | None:
        """The domain's most recent event of one of these kinds."""
        query = (
            sa.select(events_table)
            .where(events_table.c.domain == domain, events_table.c.kind.in_(kinds))
            .order_by(events_table.c.id.desc())
            .limit(1)
        )
        with self._begin() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def append_cutover_history(self, domain: str, entry: dict, state: DomainState, *, rebuild: bool = False) -> bool:
        """Append one sealed cutover or rollback entry and move the domain's state, in one transaction.

        ``entry`` is a history entry of the cutover record (action, at, by, reason, dag_id, run_id,
        root_sha256, entry_sha256). Appending the same entry twice (a retried task) is a no-op;
        returns whether it was appended. ``rebuild``: replayed from the record by ``reindex`` (see ``set_state``).
        """
        if entry["action"] not in CUTOVER_ACTIONS:
            raise ValueError(f"unknown cutover action {entry['action']!r}")
        with self._begin() as conn:
            known = conn.execute(
                sa.select(cutover_history_table.c.id).where(
                    cutover_history_table.c.entry_sha256 == entry["entry_sha256"]
                )
            ).first()
            if known:
                return False
            conn.execute(
                sa.insert(cutover_history_table).values(
                    domain=domain,
                    action=entry["action"],
                    at=dt.datetime.fromisoformat(entry["at"]),
                    by=entry["by"],
                    reason=entry.get("reason"),
                    dag_id=entry.get("dag_id"),
                    run_id=entry.get("run_id"),
                    root_sha256=entry.get("root_sha256"),
                    entry_sha256=entry["entry_sha256"],
                )
            )
            _set_domain_state(
                conn,
                domain,
                state,
                {k: entry.get(k) for k in ("action", "by", "reason", "run_id", "root_sha256") if entry.get(k)},
                rebuild=rebuild,
            )
        return True

    def cutover_history(self, domain: str) -> list[dict]:
        """Every cutover and rollback of the domain, oldest first."""
        query = (
            sa.select(cutover_history_table)
            .where(cutover_history_table.c.domain == domain)
            .order_by(cutover_history_table.c.id)
        )
        with self._begin() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def record_gap_scan(
        self,
        *,
        started_at: dt.datetime,
        dry_run: bool,
        partitions_checked: int,
        gaps: int,
        backfills: int,
        report: dict,
        run_id: str | None = None,
    ) -> int:
        """Keep one gap scan's outcome; returns its id. ``report`` must hold no data values."""
        with self._begin() as conn:
            result = conn.execute(
                sa.insert(gap_scans_table).values(
                    started_at=started_at,
                    finished_at=_now(),
                    dry_run=dry_run,
                    partitions_checked=partitions_checked,
                    gaps=gaps,
                    backfills=backfills,
                    run_id=run_id,
                    report=json.dumps(report, sort_keys=True, default=str),
                )
            )
            return result.inserted_primary_key[0]

    def last_gap_scan(self) -> dict | None:
        """The most recent gap scan, its report decoded, or None if none ran yet."""
        with self._begin() as conn:
            row = conn.execute(sa.select(gap_scans_table).order_by(gap_scans_table.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        scan = dict(row._mapping)
        scan["report"] = json.loads(scan["report"])
        return scan


def _counts_detail(fields: dict) -> str | None:
    counts = {k: fields[k] for k in ("rows", "bytes", "duration_s") if fields.get(k) is not None}
    return json.dumps(counts, sort_keys=True) if counts else None


def _set_domain_state(conn, domain: str, state: DomainState, detail: dict | None, *, rebuild: bool = False) -> None:
    state = DomainState(state)
    key = {"domain": domain}
    if not _transition(conn, domains_table, key, state, {"updated_at": _now()}, DOMAIN_TRANSITIONS, rebuild=rebuild):
        conn.execute(sa.insert(domains_table).values(**key, state=state, updated_at=_now()))
    conn.execute(
        sa.insert(events_table).values(
            at=_now(), domain=domain, kind=f"domain_{state}", detail=json.dumps(detail or {}, sort_keys=True)
        )
    )


def _transition(
    conn, table: sa.Table, key: dict, state: str, values: dict, transitions: dict, *, rebuild: bool
) -> bool:
    """Move the row at ``key`` to ``state`` if ``transitions`` allows it from the row's state now; False if the
    ledger holds no row there yet and a new one may start in ``state`` (a row not held is ``planned``, in both
    tables): the caller inserts it.

    Atomic on SQLite and PostgreSQL: the update changes the row only if it is in a state the change is allowed
    from, and holds the write lock (SQLite) or the row's lock (PostgreSQL) until the transaction ends. With
    ``rebuild`` any state gives way. A refused change raises ``StateTransitionError``.
    """
    c = table.c
    match = [c[k] == v for k, v in key.items()]
    allowed = sources(transitions, state)
    update = sa.update(table).where(*match).values(state=state, **values)
    if conn.execute(update if rebuild else update.where(c.state.in_(allowed))).rowcount:
        return True
    row = conn.execute(sa.select(c.state).where(*match).with_for_update()).first()
    current = row.state if row else PartitionState.PLANNED  # the same text as DomainState.PLANNED
    if not rebuild and current not in allowed:
        ref = Where(key["domain"], key.get("table_name"), key.get("partition"))
        subject = "partition" if ref.partition else "domain"
        held = "" if row else " (not in the ledger yet)"
        onward = ", ".join(sorted(transitions[current]))
        rule = f"from {current} only to {onward}" if onward else f"{current} is final"
        raise StateTransitionError(
            f"{ref}: the ledger refuses to move the {subject} from {current}{held} to {state} (rule: "
            f"{rule}); nothing was written. "
            "Another run or an operator changed it meanwhile, or this is a bug: check python -m hdh_migration "
            "status and the ledger's events, wait until nothing else acts on it, then re-run (python -m "
            "hdh_migration reindex first if the ledger lags the store); report a bug if nothing else did",
            ref=ref,
        )
    if row is None:
        return False
    conn.execute(update)  # a concurrent writer inserted the row after the update above: it is locked now
    return True


@lru_cache(maxsize=8)
def _ledger_for_url(url: str) -> Ledger:
    # One engine (and connection pool) per database per process, created with its tables once.
    return Ledger(url)


def _record(row) -> PartitionRecord:
    data = dict(row._mapping)
    data["source_etags"] = json.loads(data["source_etags"]) if data["source_etags"] else {}
    return PartitionRecord(**data)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets mapped tasks in several processes write the ledger without "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
