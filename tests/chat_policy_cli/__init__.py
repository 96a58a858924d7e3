"""Tests of the chat-policy command and its operator commands (chat_policy_cli)."""
