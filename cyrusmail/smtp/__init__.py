"""SMTP submission (RFC 6409) and LMTP (RFC 2033): one engine for both.

``codes`` is the table of replies, ``wire`` the sans-IO parser that turns
client bytes into commands, message data and protocol errors.
"""
