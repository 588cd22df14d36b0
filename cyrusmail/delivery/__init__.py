"""Mail in and out: local delivery into the store, the outbound queue, DSNs."""
