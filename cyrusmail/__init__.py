"""cyrusmail: an enterprise mail store in the spirit of Cyrus IMAP, on Twisted."""

__version__ = "0.1.0"
