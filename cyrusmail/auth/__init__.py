"""Who may log in: the user database, password hashes and twisted.cred checkers."""
