"""Certificate authorities and certificates for the TLS tests, written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    """A CA for the service, one for its callers, and PEM files signed by them."""

    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA

    @classmethod
    def make(cls, directory: Path) -> Pki:
        """Two fresh CAs, a server certificate for localhost and 127.0.0.1, a client one."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory, trustme.CA(), trustme.CA())
        pki.server_ca.cert_pem.write_to_path(str(pki.path("server-ca.pem")))
        pki.client_ca.cert_pem.write_to_path(str(pki.path("client-ca.pem")))
        pki.issue(pki.server_ca, "server", "localhost", "127.0.0.1")
        pki.issue(pki.client_ca, "client", "chat-policy-adapter")
        return pki

    def path(self, name: str) -> Path:
        """A file of this PKI."""
        return self.directory / name

    def issue(self, ca: trustme.CA, name: str, *identities: str) -> None:
        """Write NAME.pem (the chain) and NAME-key.pem, issued by `ca` for `identities`."""
        cert = ca.issue_cert(*identities)
        self.path(f"{name}.pem").write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(self.path(f"{name}-key.pem")))

    def service_env(self, mutual: bool) -> dict[str, str]:
        """The policy service's TLS variables (and mutual TLS's)."""
        env = {
            "CHAT_POLICY_GRPC_TLS_CERT": str(self.path("server.pem")),
            "CHAT_POLICY_GRPC_TLS_KEY": str(self.path("server-key.pem")),
        }
        if mutual:
            env["CHAT_POLICY_GRPC_TLS_CLIENT_CA"] = str(self.path("client-ca.pem"))
        return env

    def client_env(self, mutual: bool) -> dict[str, str]:
        """A caller's TLS variables (and its certificate for mutual TLS)."""
        env = {"CHAT_POLICY_GRPC_TLS_CA": str(self.path("server-ca.pem"))}
        if mutual:
            env["CHAT_POLICY_GRPC_TLS_CLIENT_CERT"] = str(self.path("client.pem"))
            env["CHAT_POLICY_GRPC_TLS_CLIENT_KEY"] = str(self.path("client-key.pem"))
        return env
