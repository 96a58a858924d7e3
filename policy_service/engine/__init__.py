"""The group-creation policy: rules, their conditions, the policy file, hot reload, rate limits
and the decision log."""
