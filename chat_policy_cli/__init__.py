"""The `chat-policy` command: starts the service, the adapter or both, and the operator commands,
which are clients of both deployables. Neither deployable imports it."""
