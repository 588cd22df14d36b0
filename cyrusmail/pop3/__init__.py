"""POP3 (RFC 1939, 2449, 2595, 5034) over the shared store: the maildrop is INBOX.

``wire`` parses and formats bytes, ``session`` is the Twisted protocol and its
command table, ``maildrop`` is the snapshot a session works on, ``locks``
keeps one POP3 session per maildrop, ``sasl`` decodes PLAIN and LOGIN, and
``server`` builds the factory the service registry names.
"""
