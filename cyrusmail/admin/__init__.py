"""The ``cyrusmail-admin`` command: users, mailboxes, import and reconstruct."""
