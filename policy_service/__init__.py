"""The chat-policy gRPC policy service: group-creation decisions and group-full state."""
