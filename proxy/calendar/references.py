"""Booking references: the short secret a caller needs, beyond their phone number, to change a booking.

Caller ID is trivially spoofed, so the number alone must not let anyone cancel or move a booking, or hear
its times. At booking time the caller is told a six-digit reference (digits are the easiest thing to say
and hear on a phone line, and the model reads them back reliably); it is stored in the event's private
extended properties. A later call must give the number *and* the reference. Within the call that made the
booking no reference is needed (Vapi's call id cannot be spoofed by the caller).

Guessing is bounded: after `MAX_WRONG_PER_CALL` wrong references a call gets no more tries, so one guess
in a million per try, three tries per call (counted by `proxy.calendar.abuse.CallCounts`, across replicas
when they share a Redis), whichever replica answers.
"""

from __future__ import annotations

import re
import secrets

__all__ = [
    "MAX_WRONG_PER_CALL",
    "NEED_REFERENCE",
    "NO_MORE_TRIES",
    "WRONG_REFERENCE",
    "new_reference",
    "normalise",
    "speak_reference",
]

LENGTH = 6
MAX_WRONG_PER_CALL = 3
_SEPARATORS = re.compile(r"[\s\-.,#]+")
# What the caller hears: a reference is needed, it did not match, no more tries on this call.
NEED_REFERENCE = (
    "To change an appointment booked on an earlier call, I need its booking reference: the six-digit number "
    "given when it was booked. Ask the caller for it."
)
WRONG_REFERENCE = "That booking reference doesn't match an upcoming appointment booked from this phone number."
NO_MORE_TRIES = (
    "That booking reference didn't match again, so I can't change appointments on this call. "
    "Please contact the office directly."
)


def new_reference() -> str:
    """Six random digits; leading zeros kept (it is a string, said digit by digit)."""
    return f"{secrets.randbelow(10**LENGTH):0{LENGTH}d}"


def normalise(raw: object) -> str | None:
    """What the caller said, as the model passed it ("482 915", "48-29-15", 482915), or None if not six digits."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = _SEPARATORS.sub("", str(raw))
    if isinstance(raw, int):
        text = text.zfill(LENGTH)
    return text if len(text) == LENGTH and text.isascii() and text.isdigit() else None


def speak_reference(reference: str) -> str:
    """'4 8 2, 9 1 5': digit by digit, in two groups of three, as a person reads a code aloud."""
    return f"{' '.join(reference[:3])}, {' '.join(reference[3:])}"
