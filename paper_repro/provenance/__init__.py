"""What makes a result trustworthy: the results layout, atomic writes, sha256 manifests,
verified reads, stage identities and code versions, and the one-writer stage lock."""
