"""The ``twistd cyrusmail`` plugin.

Kept light on purpose: twistd imports every plugin module to list them, so
cyrusmail itself is imported only when the service is made.
"""

from twisted.application.service import ServiceMaker

cyrusmail = ServiceMaker(
    "cyrusmail",
    "cyrusmail.service",
    "cyrusmail mail store: IMAP4, POP3, submission and LMTP over one sealed store",
    "cyrusmail",
)
