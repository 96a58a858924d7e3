"""What both deployables share: JSON log lines and request IDs, the client channel to the
policy service, the sizes of text every store keeps, listen addresses and the data directory.
Imports neither `adapter` nor `policy_service`."""
