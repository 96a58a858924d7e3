"""Tests of what both deployables share (chat_policy_shared)."""
