"""IMAP4rev1 server: the sans-IO wire layer and, on top of it, the session."""
