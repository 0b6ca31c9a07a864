"""The Nomad HTTP API: the client, diagnosis of connection and TLS failures, job lookups."""
