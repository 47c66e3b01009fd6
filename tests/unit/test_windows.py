"""Transfer windows (DST, midnight, weekend), bandwidth shares and the token bucket: pure arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest

from hdh_migration.throttle import MB, TokenBucket, bandwidth_share
from hdh_migration.windows import TransferWindow, parse_day_spec

UTC = dt.UTC

# Production shape: weekday nights 20:00-06:00 Paris time plus the whole weekend.
NIGHTS = TransferWindow("Europe/Paris", parse_day_spec("20:00-06:00"), parse_day_spec("all"))


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2027, 1, 13, 12, 0), False),  # Wednesday 13:00 CET
        (utc(2027, 1, 13, 18, 59), False),  # Wednesday 19:59 CET
        (utc(2027, 1, 13, 19, 0), True),  # Wednesday 20:00 CET: opens
        (utc(2027, 1, 13, 23, 30), True),  # past local midnight, Thursday 00:30
        (utc(2027, 1, 14, 4, 59), True),  # Thursday 05:59 CET
        (utc(2027, 1, 14, 5, 0), False),  # Thursday 06:00 CET: closed
        (utc(2027, 1, 16, 12, 0), True),  # Saturday noon: the whole weekend
        (utc(2027, 1, 18, 4, 0), True),  # Monday 05:00: Sunday night runs on
        (utc(2027, 1, 18, 5, 0), False),  # Monday 06:00
    ],
)
def test_window_crossing_midnight_and_weekend(at, open_):
    assert NIGHTS.in_window(at) is open_


def test_next_open_on_a_weekday_is_the_same_evening_in_local_time():
    assert NIGHTS.next_open(utc(2027, 1, 13, 12, 0)) == utc(2027, 1, 13, 19, 0)  # 20:00 CET
    assert NIGHTS.next_open(utc(2027, 7, 14, 12, 0)) == utc(2027, 7, 14, 18, 0)  # 20:00 CEST
    inside = utc(2027, 1, 13, 21, 0)
    assert NIGHTS.next_open(inside) == inside


def test_spring_forward_keeps_wall_clock_times():
    # Paris, Sunday 28 March 2027: 02:00 CET becomes 03:00 CEST.
    weekend_nights = TransferWindow("Europe/Paris", (), parse_day_spec("20:00-06:00"))
    assert weekend_nights.in_window(utc(2027, 3, 27, 4, 59))  # Saturday 05:59 CET
    assert not weekend_nights.in_window(utc(2027, 3, 27, 5, 0))  # Saturday 06:00 CET
    assert weekend_nights.in_window(utc(2027, 3, 28, 3, 59))  # Sunday 05:59 CEST
    assert not weekend_nights.in_window(utc(2027, 3, 28, 4, 0))  # Sunday 06:00 CEST: an hour earlier in UTC
    assert weekend_nights.next_open(utc(2027, 3, 28, 10, 0)) == utc(2027, 3, 28, 18, 0)  # 20:00 CEST
    assert weekend_nights.next_open(utc(2027, 3, 27, 10, 0)) == utc(2027, 3, 27, 19, 0)  # 20:00 CET


def test_an_opening_the_clock_skips_opens_when_the_clock_jumps():
    skipped = TransferWindow("Europe/Paris", (), parse_day_spec("02:30-04:00"))
    # 02:30 does not exist on 28 March 2027: the window opens at the jump, 01:00 UTC (03:00 CEST).
    assert skipped.next_open(utc(2027, 3, 28, 0, 0)) == utc(2027, 3, 28, 1, 0)
    assert not skipped.in_window(utc(2027, 3, 28, 0, 59))


def test_fall_back_day_has_25_hours_and_the_window_follows_the_clock():
    # Paris, Sunday 31 October 2027: 03:00 CEST becomes 02:00 CET.
    weekend_nights = TransferWindow("Europe/Paris", (), parse_day_spec("20:00-06:00"))
    assert weekend_nights.in_window(utc(2027, 10, 31, 4, 59))  # 05:59 CET
    assert not weekend_nights.in_window(utc(2027, 10, 31, 5, 0))  # 06:00 CET
    assert weekend_nights.next_open(utc(2027, 10, 31, 12, 0)) == utc(2027, 10, 31, 19, 0)  # 20:00 CET
    # The repeated hour 02:00-03:00 is inside the window both times.
    assert weekend_nights.in_window(utc(2027, 10, 31, 0, 30)) and weekend_nights.in_window(utc(2027, 10, 31, 1, 30))


def test_friday_evening_to_monday_morning_and_weekdays_only_windows():
    weekdays_only = TransferWindow("Europe/Paris", parse_day_spec("20:00-06:00"), ())
    # Friday 15 January 2027, 23:00 CET is open; Saturday 00:00 is the weekend: closed.
    assert weekdays_only.in_window(utc(2027, 1, 15, 22, 0))
    assert not weekdays_only.in_window(utc(2027, 1, 15, 23, 0))
    # From Saturday, the next opening is Monday 00:00 (the early-morning part of Monday's range).
    assert weekdays_only.next_open(utc(2027, 1, 16, 9, 0)) == utc(2027, 1, 17, 23, 0)


def test_wave_start_comes_first_in_the_windows_timezone():
    wave = TransferWindow("Europe/Paris", parse_day_spec("all"), parse_day_spec("all"), start=dt.date(2026, 12, 1))
    assert wave.starts_at() == utc(2026, 11, 30, 23, 0)
    assert not wave.is_open(utc(2026, 11, 30, 22, 59))
    assert wave.next_open(utc(2026, 11, 29, 1, 0)) == utc(2026, 11, 30, 23, 0)
    night_wave = TransferWindow(
        "Europe/Paris", parse_day_spec("20:00-06:00"), parse_day_spec("none"), start=dt.date(2026, 12, 1)
    )
    # Tuesday 1 December 2026 00:00 Paris is inside the night range: open from the start.
    assert night_wave.next_open(utc(2026, 11, 1)) == utc(2026, 11, 30, 23, 0)
    assert night_wave.next_open(utc(2026, 12, 1, 6, 0)) == utc(2026, 12, 1, 19, 0)


def test_several_ranges_and_bad_specs():
    split = TransferWindow("UTC", parse_day_spec(["00:00-06:00", "12:00-13:00"]), ())
    assert split.next_open(utc(2027, 1, 13, 7, 0)) == utc(2027, 1, 13, 12, 0)
    assert split.next_open(utc(2027, 1, 13, 13, 0)) == utc(2027, 1, 14, 0, 0)
    for bad in ("8:00-9:00", "25:00-06:00", "10:00-10:00", [], 3):
        with pytest.raises(ValueError):
            parse_day_spec(bad)
    with pytest.raises(ValueError, match="never open"):
        TransferWindow("UTC", (), ()).next_open(utc(2027, 1, 1))


def test_bandwidth_share_is_the_tightest_cap_over_its_concurrency():
    share = bandwidth_share([("global", 200, 16), ("wave 2", None, 16), ("domain dcir", 80, 4)])
    assert share.bytes_per_s == 12.5 * MB  # 200/16 < 80/4
    assert "global 200 MB/s / 16 task(s)" in share.describe()
    assert bandwidth_share([("global", 200, 16), ("domain dcir", 40, 8)]).bytes_per_s == 5 * MB
    assert bandwidth_share([("global", None, 16)]).bytes_per_s is None


def test_token_bucket_paces_from_the_first_chunk_and_counts_time_on_the_wire():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    bucket = TokenBucket(10 * MB, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        bucket.acquire(10 * MB)
    assert now[0] == pytest.approx(3.0)  # 30 MB at 10 MB/s: the first chunk is paid for too
    now[0] += 0.4  # the last chunk spends 0.4 s on the wire...
    assert bucket.acquire(10 * MB) == pytest.approx(0.6)  # ...which counts towards the next wait
    now[0] += 60.0  # an idle minute earns at most two chunks of credit
    assert bucket.acquire(10 * MB) == bucket.acquire(10 * MB) == 0.0
    assert bucket.acquire(10 * MB) == pytest.approx(1.0)
    assert bucket.chunk_size(8 << 20) == 5 * MB  # half a second's worth
    assert TokenBucket(100 * MB).chunk_size(8 << 20) == 8 << 20
