"""The failures the pipeline tells apart, because each calls for a different response.

Only this light module is imported by DAG files (for the retry policy); network faults are not
listed here: they fall through to Airflow's standard retries with exponential backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Where:
    """A location: a domain, and within it a table, a partition, an object, as far as known (an object
    outside any domain's knowledge, such as a store key, has no domain).

    Made once per task or object and passed along. An error carries it as data (``MigrationError.ref``),
    and its label (``domain=... table=... partition=... object=...``) starts the error's message, the log
    lines and the problems listed in a report: no reader parses a location out of a text.
    """

    domain: str | None = None
    table: str | None = None
    partition: str | None = None
    obj: str | None = None

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields().items())

    def __str__(self) -> str:
        return self.label

    def fields(self) -> dict[str, str]:
        """The parts known, by name (``object`` for the object), in order."""
        parts = {"domain": self.domain, "table": self.table, "partition": self.partition, "object": self.obj}
        return {k: v for k, v in parts.items() if v}

    def with_table(self, table: str) -> Where:
        return replace(self, table=table)

    def with_object(self, obj: str) -> Where:
        return replace(self, obj=obj)


class MigrationError(Exception):
    """A failure that retrying cannot fix; the message says what to do next.

    ``ref``: where it failed, as data (alerts, the ledger and reports read it); the message starts with its label.
    """

    def __init__(self, message: str, *, ref: Where | None = None):
        super().__init__(message)
        self.ref = ref

    def location(self) -> dict[str, str]:
        """Where it failed, from ``ref`` (empty if the error names no location)."""
        return self.ref.fields() if self.ref is not None else {}


class ConfigurationError(MigrationError):
    """The project's own configuration is wrong (the catalogue, a schema file, a suite): retrying the same
    files cannot help. The message names the file and the setting to fix."""


class DataError(MigrationError):
    """The source data breaks a rule (format, schema, expectation, key, count, checksum)."""


class StructuralError(DataError):
    """One source object cannot be read as the table's schema says: its partition is quarantined.

    ``expectation`` names the broken rule in GX's vocabulary, so the report reads like the suite's.
    Its message is the package's own: never the text of a library exception, which may quote a value.
    """

    def __init__(self, message: str, expectation: str, *, ref: Where | None = None, **kwargs):
        super().__init__(message, ref=ref)
        self.expectation = expectation
        self.kwargs = kwargs


class QuarantinedError(DataError):
    """The partition failed expectations: it is quarantined, with a redacted report, and not promoted."""


class PrivacyIncident(QuarantinedError):
    """A raw NIR was found: a privacy incident. Never retried, never waivable, alerted apart."""

    severity = "privacy"


class IntegrityError(DataError):
    """What landed in the sovereign store is not provably equal to what left Azure."""


class MissingPartitionError(DataError):
    """A planned partition has no source objects in Azure."""


class SovereigntyError(MigrationError):
    """The target is not an allowed sovereign host; no byte was moved."""


class PartitionLeaseLost(MigrationError):
    """Another run took the partition's write lease (this run's had expired): this run stops writing."""


class FrozenDomainError(MigrationError):
    """The domain is cut over: the French copy is the data, and writes are refused."""


class StateTransitionError(MigrationError):
    """The ledger refused a state change its transition table does not allow (``states.py``): another run
    or an operator moved the partition or domain meanwhile, or a bug. Never retried: look first."""


class PartitionBusyError(Exception):
    """Another run holds the partition's write lease: retried with backoff, like a network fault."""
