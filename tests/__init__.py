"""cyrusmail's tests (pytest and trial both collect them).

Hypothesis runs without a per-example deadline: CI machines are shared and
slow at times, and speed is shown by ``make bench``, never by a test.
"""

from hypothesis import settings

settings.register_profile("cyrusmail", deadline=None)
settings.load_profile("cyrusmail")
