"""Group-full state: how events change it, the change log and the feed of changes, and the store
interface the domain needs."""
