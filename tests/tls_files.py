"""Certificate authorities and certificates for the TLS tests, written as PEM files."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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

    def issue_client(
        self, name: str, *, uris: tuple[str, ...] = (), dns: tuple[str, ...] = (), cn: str = ""
    ) -> None:
        """Write NAME.pem and NAME-key.pem, a client certificate of the client CA with these
        URI and DNS subject alternative names and subject common name (trustme makes no URI
        names, such as SPIFFE IDs)."""
        ca_key = serialization.load_pem_private_key(self.client_ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.client_ca.cert_pem.bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        self.path(f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self.path(f"{name}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def client_security_env(self, name: str) -> dict[str, str]:
        """A caller's TLS variables presenting the client certificate NAME."""
        return {
            "CHAT_POLICY_GRPC_TLS_CA": str(self.path("server-ca.pem")),
            "CHAT_POLICY_GRPC_TLS_CLIENT_CERT": str(self.path(f"{name}.pem")),
            "CHAT_POLICY_GRPC_TLS_CLIENT_KEY": str(self.path(f"{name}-key.pem")),
        }

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
