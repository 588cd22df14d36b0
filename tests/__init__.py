"""cyrusmail's tests (pytest and trial both collect them).

Hypothesis runs without a per-example deadline or the too-slow health check:
CI machines are shared and slow at times, and speed is shown by ``make
bench``, never by a test. (The few wall-clock bounds left in the tests are
generous hang checks for inputs that must stay linear.)
"""

from hypothesis import HealthCheck, settings

settings.register_profile("cyrusmail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cyrusmail")
