from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from proxy.calendar.slots import is_free, open_slots, parse_time, within_working_hours
from proxy.calendar.speech import Voice, join_words
from proxy.config.calendar import CalendarSettings, WorkingHours

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
HALF_HOUR = timedelta(minutes=30)
HOUR = timedelta(hours=1)


def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def slots(
    busy: list[tuple[datetime, datetime]] | None = None,
    *,
    tz: ZoneInfo = NY,
    hours: WorkingHours | None = None,
    start: datetime,
    length: timedelta = HALF_HOUR,
    count: int = 3,
    buffer: timedelta = timedelta(0),
    horizon: timedelta = timedelta(days=7),
) -> list[tuple[datetime, datetime]]:
    return open_slots(
        busy or [],
        tz=tz,
        hours=hours or WorkingHours.default(),
        start=start,
        length=length,
        count=count,
        buffer=buffer,
        horizon=horizon,
    )


def starts(found: list[tuple[datetime, datetime]]) -> list[datetime]:
    return [s.astimezone(UTC) for s, _ in found]


def walls(found: list[tuple[datetime, datetime]], tz: ZoneInfo) -> list[str]:
    return [s.astimezone(tz).strftime("%a %H:%M %Z") for s, _ in found]


# --- working hours ---------------------------------------------------------------------------


def test_default_hours_are_weekdays_nine_to_five() -> None:
    hours = WorkingHours.default()
    assert hours.days[:5] == (((time(9), time(17)),),) * 5
    assert hours.days[5:] == ((), ())


def test_parse_the_documented_example() -> None:
    hours = WorkingHours.parse({"mon": ["09:00-12:00", "13:00-17:00"], "sat": [], "default": ["09:00-17:00"]})
    assert hours.days[0] == ((time(9), time(12)), (time(13), time(17)))
    assert hours.days[5] == ()
    assert hours.days[6] == ((time(9), time(17)),)  # unlisted sunday takes the default
    assert hours.days[1] == ((time(9), time(17)),)


def test_parse_without_default_keeps_builtin_for_unlisted_days() -> None:
    hours = WorkingHours.parse({"sat": "10:00-14:00"})
    assert hours.days[5] == ((time(10), time(14)),)
    assert hours.days[6] == ()
    assert hours.days[0] == ((time(9), time(17)),)


def test_parse_sorts_ranges_accepts_24_00_and_empty_values() -> None:
    hours = WorkingHours.parse({"mon": ["13:00-24:00", "00:00-08:00"], "tue": None})
    assert hours.days[0] == ((time(0), time(8)), (time(13), time.max))
    assert hours.days[1] == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"monday": ["09:00-17:00"]}, "unknown working_hours key(s) monday"),
        ({"mon": ["9-17"]}, "working_hours.mon: '9-17' is not a range"),
        ({"tue": ["17:00-09:00"]}, "working_hours.tue: '17:00-09:00' ends before it starts"),
        ({"wed": ["09:00-12:00", "11:00-13:00"]}, "working_hours.wed: ranges starting 09:00 and 11:00 overlap"),
        ({"thu": ["25:00-26:00"]}, "working_hours.thu: '25:00-26:00' has an impossible time"),
        ({"fri": ["09:00-24:30"]}, "working_hours.fri: '09:00-24:30' has an impossible time"),
        ({"default": [9]}, "working_hours.default: expected a list"),
        ({"sun": {"from": "09:00"}}, "working_hours.sun: expected a list"),
    ],
)
def test_parse_rejects_bad_input_with_the_key_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        WorkingHours.parse(raw)


def test_working_hours_need_seven_days() -> None:
    with pytest.raises(ValueError, match="7 weekdays"):
        WorkingHours(((),) * 6)


def test_calendar_settings_defaults_and_validation() -> None:
    settings_ = CalendarSettings()
    assert (settings_.mode, settings_.calendar_id, settings_.slot_minutes, settings_.max_slots) == (
        "native",
        "primary",
        30,
        3,
    )
    assert settings_.working_hours == WorkingHours.default()
    with pytest.raises(ValueError, match="slot_minutes"):
        CalendarSettings(slot_minutes=0)
    with pytest.raises(ValueError, match="mode"):
        CalendarSettings(mode="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_slots"):
        CalendarSettings(max_slots=True)


# --- open slots ------------------------------------------------------------------------------


def test_first_slots_of_a_working_day() -> None:
    found = slots(start=at(NY, 2026, 3, 2, 7, 12))  # a Monday, before opening
    assert walls(found, NY) == ["Mon 09:00 EST", "Mon 09:30 EST", "Mon 10:00 EST"]
    assert all(e - s == HALF_HOUR for s, e in found)
    assert all(s.tzinfo == UTC for s, _ in found)  # instants: safe to subtract across DST


def test_starts_align_to_the_local_quarter_hour() -> None:
    found = slots(start=at(NY, 2026, 3, 2, 9, 7), count=2)
    assert walls(found, NY) == ["Mon 09:15 EST", "Mon 09:45 EST"]


def test_quarter_hour_is_local_in_a_zone_with_a_45_minute_offset() -> None:
    kathmandu = ZoneInfo("Asia/Kathmandu")
    found = slots(tz=kathmandu, start=at(kathmandu, 2026, 3, 2, 9, 1), count=1)
    assert walls(found, kathmandu) == ["Mon 09:15 +0545"]


def test_busy_time_and_buffer_are_avoided() -> None:
    busy = [(at(NY, 2026, 3, 2, 10), at(NY, 2026, 3, 2, 10, 10))]
    found = slots(busy, start=at(NY, 2026, 3, 2, 9), buffer=timedelta(minutes=10))
    # 09:30-10:00 would end inside the buffer before the meeting; after it, 10:20 rounds up to 10:30.
    assert walls(found, NY) == ["Mon 09:00 EST", "Mon 10:30 EST", "Mon 11:00 EST"]


def test_busy_intervals_given_in_utc_and_overlapping_are_merged() -> None:
    busy = [(utc(2026, 3, 2, 14), utc(2026, 3, 2, 15)), (utc(2026, 3, 2, 14, 30), utc(2026, 3, 2, 16))]
    found = slots(busy, start=at(NY, 2026, 3, 2, 9), count=1)
    assert walls(found, NY) == ["Mon 11:00 EST"]


def test_slot_must_end_by_closing_time() -> None:
    assert walls(slots(start=at(NY, 2026, 3, 2, 16, 30), count=1), NY) == ["Mon 16:30 EST"]
    assert walls(slots(start=at(NY, 2026, 3, 2, 16, 31), count=1), NY) == ["Tue 09:00 EST"]


def test_friday_afternoon_rolls_over_the_weekend() -> None:
    found = slots(start=at(NY, 2026, 2, 27, 16, 45), count=1)
    assert found[0][0] == at(NY, 2026, 3, 2, 9)


def test_horizon_cuts_off_and_can_leave_nothing() -> None:
    assert slots(start=at(NY, 2026, 3, 6, 16, 45), horizon=timedelta(days=2)) == []
    found = slots(start=at(NY, 2026, 3, 2, 9), horizon=timedelta(hours=1), count=5)
    assert walls(found, NY) == ["Mon 09:00 EST", "Mon 09:30 EST"]


def test_start_is_the_earliest_moment_so_min_notice_is_respected() -> None:
    now = at(NY, 2026, 3, 2, 10, 50)
    found = slots(start=now + timedelta(minutes=60), count=1)
    assert walls(found, NY) == ["Mon 12:00 EST"]


def test_multiple_intervals_per_day_do_not_bridge_lunch() -> None:
    hours = WorkingHours.parse({"default": ["09:00-12:00", "13:00-17:00"]})
    found = slots(hours=hours, start=at(NY, 2026, 3, 2, 11, 30), length=HOUR, count=2)
    assert walls(found, NY) == ["Mon 13:00 EST", "Mon 14:00 EST"]


def test_adjacent_days_join_across_midnight() -> None:
    hours = WorkingHours.parse({"default": ["00:00-24:00"]})
    found = slots(hours=hours, start=at(NY, 2026, 3, 2, 23, 30), length=HOUR, count=1)
    assert found == [(at(NY, 2026, 3, 2, 23, 30), at(NY, 2026, 3, 3, 0, 30))]


def test_count_and_length_validation() -> None:
    assert slots(start=at(NY, 2026, 3, 2, 9), count=0) == []
    with pytest.raises(ValueError, match="positive"):
        slots(start=at(NY, 2026, 3, 2, 9), length=timedelta(0))
    with pytest.raises(ValueError, match="naive"):
        slots(start=datetime(2026, 3, 2, 9))


# --- DST -------------------------------------------------------------------------------------


def test_new_york_weekdays_keep_local_nine_across_spring_forward() -> None:
    found = slots(start=at(NY, 2026, 3, 6, 16, 30), count=2)  # Friday before the change, Monday after
    assert walls(found, NY) == ["Fri 16:30 EST", "Mon 09:00 EDT"]
    assert starts(found) == [utc(2026, 3, 6, 21, 30), utc(2026, 3, 9, 13)]


def test_new_york_spring_forward_night_skips_the_missing_hour() -> None:
    hours = WorkingHours.parse({"default": [], "sun": ["01:00-04:00"]})
    found = slots(hours=hours, start=at(NY, 2026, 3, 7), count=10)
    # 01:00 EST to 04:00 EDT is two real hours: four half-hour slots, the second ending at the jump.
    assert starts(found) == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 30)]
    assert walls(found, NY) == ["Sun 01:00 EST", "Sun 01:30 EST", "Sun 03:00 EDT", "Sun 03:30 EDT"]


def test_new_york_fall_back_night_offers_the_repeated_hour_twice() -> None:
    hours = WorkingHours.parse({"default": [], "sun": ["00:00-03:00"]})
    found = slots(hours=hours, start=at(NY, 2026, 10, 31), length=HOUR, count=10)
    assert starts(found) == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]
    assert walls(found, NY) == ["Sun 00:00 EDT", "Sun 01:00 EDT", "Sun 01:00 EST", "Sun 02:00 EST"]


def test_london_bounds_inside_the_spring_gap_become_the_jump() -> None:
    ends_in_gap = WorkingHours.parse({"default": [], "sun": ["00:00-01:30"]})
    found = slots(tz=LONDON, hours=ends_in_gap, start=at(LONDON, 2026, 3, 28), count=10)
    assert walls(found, LONDON) == ["Sun 00:00 GMT", "Sun 00:30 GMT"]
    starts_in_gap = WorkingHours.parse({"default": [], "sun": ["01:30-03:00"]})
    found = slots(tz=LONDON, hours=starts_in_gap, start=at(LONDON, 2026, 3, 28), count=10)
    assert walls(found, LONDON) == ["Sun 02:00 BST", "Sun 02:30 BST"]


def test_london_ambiguous_bounds_mean_their_first_occurrence() -> None:
    hours = WorkingHours.parse({"default": [], "sun": ["01:00-02:00"]})
    found = slots(tz=LONDON, hours=hours, start=at(LONDON, 2026, 10, 24), count=10)
    # From the first 01:00 (BST) to 02:00 (GMT): two real hours.
    assert walls(found, LONDON) == ["Sun 01:00 BST", "Sun 01:30 BST", "Sun 01:00 GMT", "Sun 01:30 GMT"]
    assert starts(found)[0] == utc(2026, 10, 25, 0)


def test_london_weekday_slots_keep_local_nine_across_fall_back() -> None:
    found = slots(tz=LONDON, start=at(LONDON, 2026, 10, 23, 16, 30), count=2)
    assert starts(found) == [utc(2026, 10, 23, 15, 30), utc(2026, 10, 26, 9)]


# --- checks and parsing ----------------------------------------------------------------------


def test_within_working_hours_and_is_free() -> None:
    hours = WorkingHours.default()
    assert within_working_hours(at(NY, 2026, 3, 2, 9), at(NY, 2026, 3, 2, 17), tz=NY, hours=hours)
    assert not within_working_hours(at(NY, 2026, 3, 2, 16, 45), at(NY, 2026, 3, 2, 17, 15), tz=NY, hours=hours)
    assert not within_working_hours(at(NY, 2026, 3, 7, 10), at(NY, 2026, 3, 7, 11), tz=NY, hours=hours)
    busy = [(at(NY, 2026, 3, 2, 10), at(NY, 2026, 3, 2, 11))]
    assert is_free(busy, at(NY, 2026, 3, 2, 11), at(NY, 2026, 3, 2, 12), buffer=timedelta(0))
    assert not is_free(busy, at(NY, 2026, 3, 2, 11), at(NY, 2026, 3, 2, 12), buffer=timedelta(minutes=5))
    assert not is_free(busy, at(NY, 2026, 3, 2, 10, 30), at(NY, 2026, 3, 2, 10, 45), buffer=timedelta(0))


def test_parse_time_with_offset_or_z() -> None:
    parsed = parse_time("2026-03-10T14:30:00-04:00", NY)
    assert parsed.value == utc(2026, 3, 10, 18, 30) and not parsed.assumed_zone
    assert parsed.value.tzinfo == UTC
    assert parse_time("2026-03-10T18:30:00Z", NY).value == utc(2026, 3, 10, 18, 30)
    assert parse_time("2026-03-10T18:30:00z", NY).value == utc(2026, 3, 10, 18, 30)


def test_parse_time_naive_is_read_in_the_user_zone_and_says_so() -> None:
    parsed = parse_time("2026-03-10T14:30", NY)
    assert parsed.value == utc(2026, 3, 10, 18, 30) and parsed.assumed_zone
    day = parse_time("2026-03-10", NY)
    assert day.value == at(NY, 2026, 3, 10) and not day.assumed_zone
    # 02:30 does not exist on spring-forward day: it reads as the jump to 03:00 EDT.
    assert parse_time("2026-03-08T02:30", NY).value == utc(2026, 3, 8, 7)


@pytest.mark.parametrize("bad", ["", "tomorrow at 3", "2026-13-01T10:00:00Z", None, 1700000000])
def test_parse_time_rejects_what_is_not_iso(bad: object) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time(bad, NY)


VOICE = Voice(NY, date(2026, 3, 2))


def test_speakable_times() -> None:
    assert VOICE.when(utc(2026, 3, 10, 18, 30)) == "Tuesday, March 10 at 2:30 PM"
    assert VOICE.time(at(NY, 2026, 3, 10, 14)) == "2 PM"
    assert VOICE.time(at(NY, 2026, 3, 10, 0, 5)) == "12:05 AM"
    assert VOICE.time(at(NY, 2026, 3, 10, 12)) == "12 PM"
    assert VOICE.span(at(NY, 2026, 3, 10, 14), at(NY, 2026, 3, 10, 15, 30)) == (
        "on Tuesday, March 10 from 2 PM to 3:30 PM"
    )
    assert VOICE.span(at(NY, 2026, 3, 10, 23), at(NY, 2026, 3, 11, 1)) == (
        "from Tuesday, March 10 at 11 PM to Wednesday, March 11 at 1 AM"
    )


def test_speakable_lists_name_each_day_once() -> None:
    starts = [at(NY, 2026, 3, 2, 16), at(NY, 2026, 3, 3, 9), at(NY, 2026, 3, 3, 9, 30)]
    assert VOICE.choices(starts) == "Monday, March 2 at 4 PM or Tuesday, March 3 at 9 AM or 9:30 AM"
    assert VOICE.choices(starts[1:]) == "Tuesday, March 3 at 9 AM or 9:30 AM"
    ranges = [
        (at(NY, 2026, 3, 2, 10), at(NY, 2026, 3, 2, 11)),
        (at(NY, 2026, 3, 2, 14), at(NY, 2026, 3, 2, 15)),
        (at(NY, 2026, 3, 2, 23), at(NY, 2026, 3, 3, 1)),
    ]
    assert VOICE.ranges(ranges) == (
        "on Monday, March 2 from 10 AM to 11 AM, from 2 PM to 3 PM, "
        "and from Monday, March 2 at 11 PM to Tuesday, March 3 at 1 AM"
    )
    assert join_words(["a"], "or") == "a" and join_words(["a", "b", "c"], "and") == "a, b, and c"


def test_the_hour_the_clocks_go_back_is_said_with_its_zone() -> None:
    """Issue 20 finding 2: on the fall-back night the same wall time happens twice."""
    voice = Voice(NY, date(2026, 10, 30))
    first, second = utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)  # 1 AM EDT, then 1 AM EST
    starts = [first, first + HALF_HOUR, second, second + HALF_HOUR, second + HOUR]
    assert voice.choices(starts) == ("Sunday, November 1 at 1 AM EDT, 1:30 AM EDT, 1 AM EST, 1:30 AM EST, or 2 AM")
    assert voice.span(first + HALF_HOUR, second) == "on Sunday, November 1 from 1:30 AM EDT to 1 AM EST"
    assert voice.time(utc(2026, 11, 1, 4, 30)) == "12:30 AM"  # once only: said plainly
    london = Voice(LONDON, date(2026, 10, 20))
    assert london.time(utc(2026, 10, 25, 0, 30)) == "1:30 AM BST"
    assert london.time(utc(2026, 10, 25, 1, 30)) == "1:30 AM GMT"
    # A zone without letters for its offsets says which 1 AM in words.
    sao_paulo = Voice(ZoneInfo("America/Sao_Paulo"), date(2018, 2, 10))
    assert sao_paulo.time(utc(2018, 2, 18, 1, 30)) == "11:30 PM before the clocks go back"
    assert sao_paulo.time(utc(2018, 2, 18, 2, 30)) == "11:30 PM after the clocks go back"


def test_a_date_outside_the_coming_months_is_said_with_its_year() -> None:
    """Issue 20 finding 3."""
    assert VOICE.when(at(NY, 2026, 8, 31, 10)) == "Monday, August 31 at 10 AM"  # within six months
    assert VOICE.when(at(NY, 2026, 9, 10, 10)) == "Thursday, September 10, 2026 at 10 AM"
    assert VOICE.when(at(NY, 2027, 3, 2, 10)) == "Tuesday, March 2, 2027 at 10 AM"
    assert VOICE.when(at(NY, 2025, 3, 2, 10)) == "Sunday, March 2, 2025 at 10 AM"
    new_year = Voice(NY, date(2026, 12, 28))
    assert new_year.day(at(NY, 2027, 1, 4)) == "Monday, January 4"  # next year, but the coming weeks
    # A year-long range says both years, so it cannot sound like one day.
    assert VOICE.period(at(NY, 2026, 3, 2), at(NY, 2027, 3, 2)) == (
        "between Monday, March 2, 2026 and Monday, March 1, 2027"
    )
    assert VOICE.span(at(NY, 2027, 3, 2, 10), at(NY, 2027, 3, 2, 11)) == (
        "on Tuesday, March 2, 2027 from 10 AM to 11 AM"
    )
    assert VOICE.choices([at(NY, 2027, 3, 2, 10)]) == "Tuesday, March 2, 2027 at 10 AM"


# --- properties ------------------------------------------------------------------------------

ZONES = [
    ZoneInfo(name) for name in ("UTC", "America/New_York", "Europe/London", "Asia/Kathmandu", "Australia/Lord_Howe")
]


def _quarter(index: int) -> time:
    return time.max if index == 96 else time(index // 4, index % 4 * 15)


@st.composite
def working_hours(draw: st.DrawFn) -> WorkingHours:
    days = []
    for _ in range(7):
        bounds = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
        bounds = bounds[: len(bounds) // 2 * 2]
        days.append(tuple((_quarter(a), _quarter(b)) for a, b in zip(bounds[::2], bounds[1::2], strict=True)))
    return WorkingHours(tuple(days))


# Around 2026's DST changes in the zones above, so transitions are hit often.
instants = st.sampled_from(
    [utc(2026, 3, 7), utc(2026, 3, 27), utc(2026, 4, 4), utc(2026, 9, 26), utc(2026, 10, 24), utc(2026, 10, 31)]
).flatmap(lambda base: st.integers(0, 4 * 24 * 60).map(lambda minutes: base + timedelta(minutes=minutes, seconds=7)))


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    hours=working_hours(),
    start=instants,
    busy_raw=st.lists(st.tuples(st.integers(0, 6 * 24 * 60), st.integers(1, 300)), max_size=12),
    length_min=st.sampled_from([15, 20, 30, 45, 60, 90]),
    buffer_min=st.sampled_from([0, 5, 10, 30]),
    count=st.integers(1, 8),
    horizon_h=st.integers(1, 6 * 24),
)
def test_slots_never_touch_busy_time_and_lie_in_working_hours(
    tz: ZoneInfo,
    hours: WorkingHours,
    start: datetime,
    busy_raw: list[tuple[int, int]],
    length_min: int,
    buffer_min: int,
    count: int,
    horizon_h: int,
) -> None:
    busy = [(start + timedelta(minutes=a), start + timedelta(minutes=a + d)) for a, d in busy_raw]
    length, buffer, horizon = timedelta(minutes=length_min), timedelta(minutes=buffer_min), timedelta(hours=horizon_h)
    found = open_slots(
        busy, tz=tz, hours=hours, start=start, length=length, count=count, buffer=buffer, horizon=horizon
    )
    assert len(found) <= count
    event("slots found" if found else "no slots")
    for index, (s, e) in enumerate(found):
        following = found[index + 1] if index + 1 < len(found) else None
        assert e - s == length
        assert start <= s and e <= start + horizon
        local = s.astimezone(tz)
        assert local.minute % 15 == 0 and local.second == 0 and local.microsecond == 0
        if following is not None:
            assert e <= following[0]
        for b_start, b_end in busy:
            assert e <= b_start - buffer or s >= b_end + buffer
        moment = s
        while moment < e:
            wall = moment.astimezone(tz)
            naive = wall.replace(tzinfo=None)
            ambiguous = naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()
            if not ambiguous:  # a repeated wall hour is judged by instants, tested explicitly above
                day = hours.days[wall.weekday()]
                assert any(ws <= wall.time() and (we == time.max or wall.time() < we) for ws, we in day), (
                    f"{wall} outside working hours {day}"
                )
            moment += timedelta(minutes=5)
