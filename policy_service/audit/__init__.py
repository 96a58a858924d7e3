"""The audit trail: who changed what, when and why (every change of group state that is not
the adapter relaying Chat, and every reload of the policy or access file)."""
