"""Who may call what: the callers the access file names, how each is recognised (bearer token,
client certificate), the permissions each holds, and the caller of the call being served."""
