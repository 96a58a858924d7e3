"""The chat-policy webhook adapter: Tencent Cloud Chat webhooks in, one gRPC call each, JSON out."""
