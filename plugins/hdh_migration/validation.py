"""Great Expectations suites, evaluated batch by batch, with results redacted before they leave the worker.

GX is the authority on what a suite means: it loads and checks each suite (an unknown expectation
type is refused), substitutes the partition parameters and defines every expectation's semantics.
Running GX's pandas machinery on every record batch, though, was 87% of a
transfer's time (8.4 s per 65,536-row batch of ER_PRS_F, ~100 expectations). So the expectation
types our suites use are evaluated here natively in Arrow, vectorised with ``pyarrow.compute``,
with GX's semantics (nulls and NaN as missing, ``mostly``, vacuous success on empty input,
``ignore_row_if``) and GX's result shape. Any expectation this module does not cover (another type,
an unusual kwarg, a column type it does not handle) falls back to GX's own validator on the same
batch. ``tests/unit/test_native_validation.py`` runs both evaluators on clean and on broken batches
of every suite and requires the same success and counts for every expectation.

The per-expectation counts are summed over the batches of an object, then over the objects of a
partition. ``redact`` is the one place where a result becomes something that may be logged, stored
or sent: names and counts only, never a data value.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from hdh_migration.errors import ConfigurationError, StructuralError

log = logging.getLogger(__name__)

# Kwargs that come from the suite (names, bounds, formats), never from the data; any other kwarg is dropped.
_SAFE_KWARGS = (
    "column",
    "column_list",
    "column_A",
    "column_B",
    "min_value",
    "max_value",
    "strict_min",
    "strict_max",
    "value",
    "regex",
    "value_set",
    "or_equal",
    "ignore_row_if",
    "mostly",
)
_SAFE_RESULT_FIELDS = ("element_count", "unexpected_count", "missing_count")


def redact(expectation_result: dict) -> dict:
    """Keep the expectation's identity and the counts; drop observed and unexpected values."""
    config = expectation_result.get("expectation_config") or {}
    kwargs = config.get("kwargs") or {}
    result = expectation_result.get("result") or {}
    exception = expectation_result.get("exception_info") or {}
    redacted = {
        "type": config.get("type"),
        "kwargs": {k: kwargs[k] for k in _SAFE_KWARGS if k in kwargs},
        "success": bool(expectation_result.get("success")),
        "result": {k: int(result[k]) for k in _SAFE_RESULT_FIELDS if isinstance(result.get(k), int | float)},
    }
    if exception.get("raised_exception"):
        # The message of a failed metric may quote values: keep only that it failed.
        redacted["result"]["raised_exception"] = True
    return redacted


def merge_results(totals: dict[str, dict], results: list[dict]) -> dict[str, dict]:
    """Sum redacted per-expectation results (from batches or objects) keyed by expectation identity."""
    for result in results:
        key = _identity_key(result)
        current = totals.get(key)
        if current is None:
            totals[key] = {**result, "result": dict(result["result"])}
            continue
        current["success"] = current["success"] and result["success"]
        for field, value in result["result"].items():
            if isinstance(value, bool):
                current["result"][field] = current["result"].get(field, False) or value
            else:
                current["result"][field] = current["result"].get(field, 0) + value
    return totals


PRIVACY_EXPECTATION = "expect_column_values_to_not_contain_raw_nir"
PRIVACY_EXPECTATIONS = frozenset({PRIVACY_EXPECTATION})
# The failure of a check that raised on a batch, when no one expectation can be named (GX's own run).
UNCHECKED_BATCH = "expect_batch_checks_to_complete"
# Checks whose failure means the copy itself is wrong: a bug or a fault, never a waivable data issue.
INTEGRITY_CHECKS = frozenset(
    {"expect_table_row_count_to_equal_source", "expect_partition_content_fingerprint_to_match_source"}
)


def expectation_id(result: dict) -> str:
    """A stable, value-free name of an expectation: ``type(column)``, used in errors and waivers."""
    kwargs = result.get("kwargs") or {}
    columns = (
        kwargs.get("column")
        or ",".join(kwargs.get("column_list") or ())
        or ",".join(c for c in (kwargs.get("column_A"), kwargs.get("column_B")) if c)
    )
    return f"{result['type']}({columns})"


def _privacy_breach(result: dict) -> bool:
    """A privacy result that is not clean: any unexpected row or a failed evaluation, whatever its success says."""
    counts = result.get("result") or {}
    return not result["success"] or bool(counts.get("unexpected_count")) or bool(counts.get("raised_exception"))


def blocking_failures(results: list[dict], waived: set[str]) -> list[dict]:
    """The failed expectations that stop a partition: all but the waived ones.

    A privacy expectation is never waived, and it blocks on any unexpected row: no ``mostly`` applies.
    """
    return [
        r
        for r in results
        if (
            _privacy_breach(r)
            if r["type"] in PRIVACY_EXPECTATIONS
            else not r["success"] and expectation_id(r) not in waived
        )
    ]


def summary_shape(results: list[dict], suite_name: str) -> dict:
    """A GX-shaped validation summary (success, results, statistics) of redacted results."""
    evaluated = len(results)
    successful = sum(1 for r in results if r["success"])
    return {
        "suite_name": suite_name,
        "success": evaluated == successful,
        "results": results,
        "statistics": {
            "evaluated_expectations": evaluated,
            "successful_expectations": successful,
            "unsuccessful_expectations": evaluated - successful,
        },
    }


def partition_parameters(grain: str, partition: str) -> dict:
    """Suite parameters of a partition: its first and last day, and its year.

    Hand-written expectations refer to them as ``{"$PARAMETER": "partition_start"}`` and so on.
    ``partition_yearmonth_regex`` matches the ``YYYYMM`` texts of the partition's months, whatever its
    grain (``^2023(0[1-9]|1[0-2])$`` for 2023, ``^202402$`` for February 2024): it checks a
    year-month column, the only date some tables have, with ``expect_column_values_to_match_regex``.
    """
    import datetime as dt

    import pandas as pd

    from hdh_migration.catalogue import next_partition_start, partition_start

    start = partition_start(grain, partition)
    end = start if grain == "snapshot" else next_partition_start(grain, start) - dt.timedelta(days=1)
    months = "(0[1-9]|1[0-2])" if grain == "yearly" else f"{start.month:02d}"
    return {
        "partition_start": pd.Timestamp(start),
        "partition_end": pd.Timestamp(end),
        "partition_year": start.year,
        "partition_yearmonth_regex": f"^{start.year:04d}{months}$",
    }


# ---------------------------------------------------------------------------------------------
# The native evaluator: GX's semantics for the expectation types of our suites, in Arrow.


def _kind(arrow_type) -> str | None:
    """The family of an Arrow type for comparisons, or None when the evaluator leaves it to GX."""
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_date(arrow_type) or (pa.types.is_timestamp(arrow_type) and arrow_type.tz is None):
        return "datetime"
    return None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_datetime(value) -> bool:
    import pandas as pd

    return isinstance(value, dt.date | pd.Timestamp) and getattr(value, "tzinfo", None) is None


def _time_unit(arrow_type) -> str:
    """The unit datetimes of this type are compared in: a timestamp's own, milliseconds for a date.

    Never nanoseconds for a date: timestamp[ns] ends in 1677 and 2262, and SNDS sentinel dates
    (1600-01-01, 2999-12-31) lie beyond; every date32 fits in timestamp[ms].
    """
    import pyarrow as pa

    return arrow_type.unit if pa.types.is_timestamp(arrow_type) else "ms"


def _comparable(array, kind: str, unit: str | None = None):
    """Dates and timestamps as timestamps of ``unit`` (default: their own unit); other kinds unchanged."""
    import pyarrow as pa

    if kind != "datetime":
        return array
    wanted = pa.timestamp(unit or _time_unit(array.type))
    return array if array.type == wanted else array.cast(wanted)


def _datetime_bound(value, unit: str, upper: bool, strict: bool) -> tuple:
    """A datetime bound in ``unit``, exactly: ``(scalar, strict)`` for comparing values held in that unit.

    A bound finer than the unit is floored; the comparison stays exact because the values are whole
    units: ``v >= 10.5`` is ``v > 10``, ``v <= 10.5`` is ``v <= 10``.
    """
    import pandas as pd
    import pyarrow as pa

    stamp = pd.Timestamp(value).asm8
    floored = stamp.astype(f"datetime64[{unit}]")  # numpy floors, before 1970 too
    exact = floored.astype(stamp.dtype) == stamp
    return pa.scalar(floored), strict if exact else not upper


def _number_bound(value, kind: str):
    import pyarrow as pa

    return pa.scalar(float(value) if kind == "float" or isinstance(value, float) else int(value))


def _missing(array):
    """GX's missing on pandas: null, and NaN in a float column (pandas' isnull)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_null(array, nan_is_null=pa.types.is_floating(array.type))


def _count_true(mask) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    if considered == 0:
        return True  # vacuously true, as in GX
    return (considered - unexpected) / considered >= mostly


def _missing_count(array) -> int:
    """How many values are missing: the null count, plus the NaNs of a float column."""
    import pyarrow as pa

    return _count_true(_missing(array)) if pa.types.is_floating(array.type) else array.null_count


def _map_check(column: str, mostly: float, condition: Callable, accept: Callable | None = None) -> Callable:
    """A column map expectation: ``condition(non-null values)`` is True where a value is expected.

    ``accept(array)``: a cheap test, from the column's extremes, that every non-missing value is
    expected. When it holds, the counts are known without a per-row mask (unexpected 0); when it
    does not, the values are checked one by one. Most batches of clean data take the cheap path.
    """
    import pyarrow.compute as pc

    def evaluate(batch) -> tuple[bool, dict]:
        array = batch.column(column)
        rows = len(array)
        if accept is not None and accept(array):
            return True, {"element_count": rows, "unexpected_count": 0, "missing_count": _missing_count(array)}
        missing_mask = _missing(array)
        missing = _count_true(missing_mask)
        ok = pc.fill_null(condition(array), False)
        if missing:
            ok = pc.and_(ok, pc.invert(missing_mask))
        unexpected = rows - missing - _count_true(ok)
        result = {"element_count": rows, "unexpected_count": unexpected, "missing_count": missing}
        return _mostly(rows - missing, unexpected, mostly), result

    return evaluate


def _extremes_within(values, low, high, strict_min: bool, strict_max: bool) -> bool:
    """Whether the minimum and the maximum of ``values`` (nulls and NaN left out) lie within the bounds,
    compared as Arrow compares a column with a scalar: in floats unless both sides are integers. Then
    every non-missing value does, since the bounds are an interval. An all-NaN column answers False."""
    import pyarrow.compute as pc

    extremes = pc.min_max(values)
    least, most = extremes["min"].as_py(), extremes["max"].as_py()
    if least is None:
        return True  # every value is missing
    floats = not isinstance(least, int) or any(isinstance(b, float) for b in (low, high))

    def within(value, bound, strict: bool, above: bool) -> bool:
        if bound is None:
            return True
        value, bound = (float(value), float(bound)) if floats else (value, bound)
        if above:
            return value > bound if strict else value >= bound
        return value < bound if strict else value <= bound

    return within(least, low, strict_min, True) and within(most, high, strict_max, False)


def _lengths(array):
    """Each string's length in characters; read from the offsets when the data is ASCII (then a byte is a
    character), which costs a tenth of decoding UTF-8."""
    import numpy as np
    import pyarrow.compute as pc

    data = array.buffers()[2]
    if data is None or not len(data) or int(np.frombuffer(data, dtype=np.uint8).max()) < 0x80:
        return pc.binary_length(array)
    return pc.utf8_length(array)


def _between(values, low, high, strict_min, strict_max):
    import pyarrow.compute as pc

    conditions = []
    if low is not None:
        conditions.append((pc.greater if strict_min else pc.greater_equal)(values, low))
    if high is not None:
        conditions.append((pc.less if strict_max else pc.less_equal)(values, high))
    return conditions[0] if len(conditions) == 1 else pc.and_(*conditions)


def _native_not_null(kw, types):
    column, mostly = kw["column"], kw["mostly"]

    def evaluate(batch):
        rows = batch.num_rows
        unexpected = _missing_count(batch.column(column))
        success = rows == 0 or (rows - unexpected) / rows >= mostly
        return success, {"element_count": rows, "unexpected_count": unexpected}

    return evaluate


def _native_between(kw, types):
    kind = types[kw["column"]]
    low, high = kw.get("min_value"), kw.get("max_value")
    bounds = [b for b in (low, high) if b is not None]
    if not bounds or (low is not None and high is not None and low > high):
        return None  # GX raises here: let it say so
    if kind in ("integer", "float"):
        if not all(_is_number(b) for b in bounds):
            return None
    elif kind != "datetime" or not all(_is_datetime(b) for b in bounds):
        return None
    strict_min, strict_max = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
    if kind == "datetime":

        def condition(array):
            unit = _time_unit(array.type)
            lower = (None, strict_min) if low is None else _datetime_bound(low, unit, False, strict_min)
            upper = (None, strict_max) if high is None else _datetime_bound(high, unit, True, strict_max)
            return _between(_comparable(array, kind, unit), lower[0], upper[0], lower[1], upper[1])

        return _map_check(kw["column"], kw["mostly"], condition)
    lower = None if low is None else _number_bound(low, kind)
    upper = None if high is None else _number_bound(high, kind)
    bounds = tuple(None if b is None else b.as_py() for b in (lower, upper))
    return _map_check(
        kw["column"],
        kw["mostly"],
        lambda a: _between(a, lower, upper, strict_min, strict_max),
        accept=lambda a: _extremes_within(a, *bounds, strict_min, strict_max),
    )


def _native_in_set(kw, types):
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, values = types[kw["column"]], kw.get("value_set")
    if values is None:
        return _map_check(kw["column"], kw["mostly"], lambda a: pc.is_valid(a))
    if kind == "string" and all(isinstance(v, str) for v in values):
        value_set = pa.array(values, pa.string())
    elif kind == "integer" and all(_is_number(v) and float(v).is_integer() for v in values):
        value_set = pa.array([int(v) for v in values], pa.int64())
    elif kind == "float" and all(_is_number(v) for v in values):
        value_set = pa.array([float(v) for v in values], pa.float64())
    else:
        return None
    target = {"integer": pa.int64(), "float": pa.float64(), "string": pa.string()}[kind]
    return _map_check(kw["column"], kw["mostly"], lambda a: pc.is_in(a.cast(target), value_set=value_set))


def _native_lengths_between(kw, types):
    if types[kw["column"]] != "string":
        return None
    low, high = kw.get("min_value"), kw.get("max_value")
    if (low is None and high is None) or not all(_is_number(b) for b in (low, high) if b is not None):
        return None
    strict_min, strict_max = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
    return _map_check(
        kw["column"],
        kw["mostly"],
        lambda a: _between(_lengths(a), low, high, strict_min, strict_max),
        accept=lambda a: _extremes_within(_lengths(a), low, high, strict_min, strict_max),
    )


def _native_lengths_equal(kw, types):
    import pyarrow.compute as pc

    value = kw.get("value")
    if types[kw["column"]] != "string" or not _is_number(value):
        return None
    return _map_check(
        kw["column"],
        kw["mostly"],
        lambda a: pc.equal(_lengths(a), value),
        accept=lambda a: _extremes_within(_lengths(a), value, value, False, False),
    )


# Patterns RE2 reads as Python's ``re`` does: literals, classes, quantifiers, groups, anchors; no
# escapes (``\d`` is Unicode-aware in Python), no ``(?`` constructs.
_RE2_SAFE = re.compile(r"[A-Za-z0-9 _\-\[\]{}()^$.*+?|,:;/#@!%&=<>'\"]*")


def _native_match_regex(kw, types):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pattern = kw.get("regex")
    if types[kw["column"]] != "string" or not isinstance(pattern, str):
        return None
    python = re.compile(pattern)

    def by_python(array):
        return pa.array([v is not None and python.search(v) is not None for v in array.to_pylist()])

    if not _RE2_SAFE.fullmatch(pattern):
        return _map_check(kw["column"], kw["mostly"], by_python)

    def by_re2(array):
        matched = pc.match_substring_regex(array, pattern)
        # Python's ``$`` also matches before a final newline, RE2's does not: recheck those values.
        newline = np.flatnonzero(pc.fill_null(pc.match_substring(array, "\n"), False).to_numpy(zero_copy_only=False))
        if not len(newline):
            return matched
        values = np.asarray(pc.fill_null(matched, False).to_numpy(zero_copy_only=False), dtype=bool)
        values[newline] = by_python(array.take(pa.array(newline))).to_numpy(zero_copy_only=False)
        return pa.array(values)

    return _map_check(kw["column"], kw["mostly"], by_re2)


def privacy_guard(column: str) -> tuple[dict, Callable]:
    """The raw-NIR guard of one column: its identity and evaluator, whatever a suite says about it.

    A suite only names the column: ``mostly``, ``row_condition`` and any other kwarg are ignored, so
    one unexpected row fails it. A column absent from the batch fails it too (nothing was checked).
    """
    import numpy as np
    import pyarrow as pa

    from hdh_migration.nir import raw_nir_mask, too_short_for_nir

    # Most columns (codes, amounts, dates as numbers) are too short to hold a NIR: no per-value work.
    check = _map_check(column, 1.0, lambda a: pa.array(np.logical_not(raw_nir_mask(a))), accept=too_short_for_nir)

    def evaluate(batch):
        if batch.schema.get_field_index(column) < 0:
            return False, {"element_count": batch.num_rows, "raised_exception": True}
        return check(batch)

    return {"type": PRIVACY_EXPECTATION, "kwargs": {"column": column}}, evaluate


def _native_pair_greater(kw, types):
    import pyarrow.compute as pc

    column_a, column_b = kw["column_A"], kw["column_B"]
    kinds = {types.get(column_a), types.get(column_b)}
    if kw.get("ignore_row_if") != "either_value_is_missing" or not (
        kinds == {"datetime"} or kinds <= {"integer", "float"}
    ):
        return None
    kind = kinds.pop() if len(kinds) == 1 else "float"
    compare = pc.greater_equal if kw.get("or_equal") else pc.greater
    mostly = kw["mostly"]

    def evaluate(batch):
        a, b = batch.column(column_a), batch.column(column_b)
        rows = len(a)
        kept = pc.invert(pc.or_(_missing(a), _missing(b)))
        considered = _count_true(kept)
        unit = None
        if kind == "datetime":  # the finer of the two units: dates and ms timestamps compare in ms
            units = [_time_unit(a.type), _time_unit(b.type)]
            unit = max(units, key=("s", "ms", "us", "ns").index)
        ok = pc.and_(pc.fill_null(compare(_comparable(a, kind, unit), _comparable(b, kind, unit)), False), kept)
        unexpected = considered - _count_true(ok)
        result = {"element_count": rows, "unexpected_count": unexpected, "missing_count": rows - considered}
        return _mostly(considered, unexpected, mostly), result

    return evaluate


def _native_ordered_columns(kw, types):
    expected = kw.get("column_list")
    if expected is None:
        return None
    expected = list(expected)
    return lambda batch: (batch.schema.names == expected, {})


# type -> (builder, the kwargs it understands, the columns it reads)
_NATIVE: dict[str, tuple[Callable, frozenset, tuple]] = {
    "expect_column_values_to_not_be_null": (_native_not_null, frozenset({"column", "mostly"}), ("column",)),
    "expect_column_values_to_be_between": (
        _native_between,
        frozenset({"column", "mostly", "min_value", "max_value", "strict_min", "strict_max"}),
        ("column",),
    ),
    "expect_column_values_to_be_in_set": (_native_in_set, frozenset({"column", "mostly", "value_set"}), ("column",)),
    "expect_column_value_lengths_to_be_between": (
        _native_lengths_between,
        frozenset({"column", "mostly", "min_value", "max_value", "strict_min", "strict_max"}),
        ("column",),
    ),
    "expect_column_value_lengths_to_equal": (
        _native_lengths_equal,
        frozenset({"column", "mostly", "value"}),
        ("column",),
    ),
    "expect_column_values_to_match_regex": (_native_match_regex, frozenset({"column", "mostly", "regex"}), ("column",)),
    "expect_column_pair_values_a_to_be_greater_than_b": (
        _native_pair_greater,
        frozenset({"column_A", "column_B", "or_equal", "ignore_row_if", "mostly"}),
        ("column_A", "column_B"),
    ),
    "expect_table_columns_to_match_ordered_list": (_native_ordered_columns, frozenset({"column_list"}), ()),
}


def native_check(kind: str, kwargs: dict, schema) -> Callable | None:
    """A vectorised evaluator of one expectation on batches of ``schema``, or None: then GX evaluates it.

    ``kwargs`` are the expectation's kwargs after GX substituted the suite parameters. The evaluator
    returns ``(success, result)`` with the counts GX reports for that expectation type.
    """
    entry = _NATIVE.get(kind)
    if entry is None:
        return None
    build, understood, column_keys = entry
    given = {k: v for k, v in kwargs.items() if v is not None and k != "batch_id"}
    if set(given) - understood:
        return None  # row_condition and the like: GX's business
    types = {name: _kind(schema.field(name).type) for name in schema.names}
    if any(given.get(key) not in types or types[given[key]] is None for key in column_keys):
        return None  # a missing column or a type left to GX: GX reports it its own way
    mostly = given.get("mostly", 1.0)
    if not _is_number(mostly):
        return None
    return build({**given, "mostly": float(mostly)}, types)


class SuiteRunner:
    """One GX suite, validating Arrow record batches one at a time.

    Expectations ``native_check`` covers run in Arrow; the others (if any) through a GX ephemeral
    context on the same batch. ``native=False`` runs everything through GX (the reference the tests
    compare with). The raw-NIR guard is the runner's own (``privacy_guard``): it runs on every column
    the suite names and on every other column that can hold a NIR, so no suite can weaken it.

    A suite that cannot be used raises ``ConfigurationError`` (retrying cannot fix it); a check that
    raises on a batch raises ``StructuralError`` naming the expectation and the exception's class only.
    """

    def __init__(self, suite_path: Path, parameters: dict | None = None, native: bool = True):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        from hdh_migration import gx_expectations  # noqa: F401 - registers the project's expectations

        self.suite_path = Path(suite_path)
        fix = "Fix the file, or regenerate its generated part with `python -m hdh_migration suites`"
        try:
            document = json.loads(self.suite_path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigurationError(
                f"suite file {suite_path}: cannot be read ({type(err).__name__}). Check the table's 'suite' field in "
                "the catalogue, or generate it with `python -m hdh_migration suites`"
            ) from None
        except ValueError as err:  # the file is ours: its JSON error position helps
            raise ConfigurationError(f"suite file {suite_path}: not valid JSON ({err}). {fix}") from None
        if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
            raise ConfigurationError(f"suite file {suite_path}: no 'expectations' list. {fix}")
        self.suite_name = document.get("name") or self.suite_path.stem
        self._context = context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = {"globally": False}
        try:
            self.suite = context.suites.add(gx.ExpectationSuite(**document))
        except Exception as err:  # noqa: BLE001 - GX refuses a malformed suite with many classes
            raise ConfigurationError(f"suite file {suite_path}: GX refuses it ({type(err).__name__}). {fix}") from None
        known = {e.expectation_type for e in self.suite.expectations}
        unknown = sorted({str(e.get("type")) for e in document["expectations"] if e.get("type") not in known})
        if len(self.suite.expectations) != len(document["expectations"]) or unknown:
            # GX drops an expectation type it does not know with only a log line: refuse instead.
            raise ConfigurationError(
                f"suite file {suite_path}: unknown expectation type(s) {', '.join(unknown) or '(unnamed)'}: GX knows "
                f"{len(self.suite.expectations)} of the {len(document['expectations'])} expectations. Correct the "
                "type names (GX 1.x core types, or the project's in hdh_migration.gx_expectations)"
            )
        self.parameters = parameters or {}
        self.native = native
        self._plans: dict = {}
        self._configurations: list | None = None
        self.totals: dict[str, dict] = {}

    def _processed(self) -> list:
        """The suite's configurations with the parameters substituted, in GX's order (at first use:
        a suite with parameters loads without them, as in GX, and fails only when validated)."""
        if self._configurations is not None:
            return self._configurations
        # GX's own order and parameter substitution: what its validator does before it evaluates.
        configurations = []
        for expectation in self.suite.expectations:
            configuration = copy.deepcopy(expectation.configuration)
            try:
                configuration.process_suite_parameters(suite_parameters=self.parameters)
                # Through the expectation's model again, as GX's validator does: its types (17 -> 17.0).
                configurations.append((expectation, configuration.to_domain_obj().configuration))
            except Exception as err:  # noqa: BLE001 - a parameter the run does not define, a bad kwarg
                raise ConfigurationError(
                    f"suite file {self.suite_path}: expectation {expectation_id(configuration.to_json_dict())} "
                    f"cannot take this run's parameters ({type(err).__name__}; the run defines "
                    f"{', '.join(sorted(self.parameters)) or 'none'}). Fix its kwargs in the file"
                ) from None
        columns: dict[str, list] = {}
        for pair in configurations:
            column = pair[1].kwargs.get("column")
            columns.setdefault(column if isinstance(column, str) else "", []).append(pair)
        self._configurations = [pair for group in columns.values() for pair in group]
        return self._configurations

    def _plan(self, schema) -> tuple[list, object]:
        """Per expectation, its redacted identity and native evaluator (None: GX); and the GX fallback."""
        plan = self._plans.get(schema)
        if plan is not None:
            return plan
        import great_expectations as gx

        from hdh_migration.nir import can_hold_nir

        steps, fallback, guarded = [], [], set()
        for expectation, configuration in self._processed():
            if configuration.type in PRIVACY_EXPECTATIONS:
                column = configuration.kwargs.get("column")
                if column not in guarded:
                    guarded.add(column)
                    steps.append(privacy_guard(column))
                continue
            identity = redact({"expectation_config": configuration.to_json_dict()})
            check = native_check(configuration.type, configuration.kwargs, schema) if self.native else None
            steps.append((identity, check))
            if check is None:
                fallback.append(expectation)
        steps += [privacy_guard(f.name) for f in schema if f.name not in guarded and can_hold_nir(f.type)]
        batch_definition = None
        if fallback:
            name = f"{self.suite_name}.gx{len(self._plans)}"
            suite = self._context.suites.add(
                gx.ExpectationSuite(name=name, expectations=[copy.copy(e) for e in fallback])
            )
            asset = self._context.data_sources.add_pandas(f"hdh{len(self._plans)}").add_dataframe_asset("batch")
            batch_definition = (asset.add_batch_definition_whole_dataframe("whole"), suite)
        plan = self._plans[schema] = (steps, batch_definition)
        return plan

    def validate(self, record_batch) -> None:
        steps, fallback = self._plan(record_batch.schema)
        from_gx: dict[str, list[dict]] = {}
        if fallback is not None:
            batch_definition, suite = fallback
            try:
                frame = record_batch.to_pandas(date_as_object=False)
                batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
                outcome = batch.validate(
                    suite,
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
                    expectation_parameters=self.parameters,
                )
            except Exception as error:  # noqa: BLE001 - a library's message may quote a value
                raise _unchecked({"type": UNCHECKED_BATCH, "kwargs": {}}, error, record_batch.num_rows) from None
            for result in outcome.to_json_dict()["results"]:
                redacted = redact(result)
                from_gx.setdefault(_identity_key(redacted), []).append(redacted)
        results = []
        for identity, check in steps:
            if check is None:
                results.append(from_gx[_identity_key(identity)].pop(0))
                continue
            try:
                success, counts = check(record_batch)
            except Exception as error:  # noqa: BLE001 - a library's message may quote a value
                raise _unchecked(identity, error, record_batch.num_rows) from None
            results.append({**identity, "success": bool(success), "result": counts})
        merge_results(self.totals, results)

    def results(self) -> list[dict]:
        return list(self.totals.values())


def _unchecked(identity: dict, error: Exception, rows: int) -> StructuralError:
    """A check that raised on a batch, as a redacted error: the expectation, the column, the exception's
    class and the batch's row count; never the exception's text, which may quote a value."""
    return StructuralError(
        f"{expectation_id(identity)} could not be evaluated on a batch of {rows} rows ({type(error).__name__}), "
        f"so the object is not checked (rule: {identity['type']})",
        identity["type"],
        **identity["kwargs"],
    )


def _identity_key(result: dict) -> str:
    return json.dumps([result["type"], result["kwargs"]], sort_keys=True, default=str)
