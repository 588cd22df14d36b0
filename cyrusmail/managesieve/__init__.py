"""ManageSieve (RFC 5804): users upload, check, list and activate their Sieve scripts."""
