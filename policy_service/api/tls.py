"""TLS and mutual TLS for the gRPC port, with certificates that rotate without a restart.

The files are checked with Python's ssl module when the service starts, so a wrong path, a key
that does not match its certificate or a file that is not PEM stops the start with a clear
message. grpc asks for the certificates again on each new connection; when the files changed
(and still form a valid pair) the new ones are served from then on, so a renewed certificate
needs no restart. Connections already open keep the certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from policy_service.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Files:
    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[tuple[int, int], ...]
    config: grpc.ServerCertificateConfiguration


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials: None for plaintext, TLS with a certificate, mutual TLS when
    a client CA is set. SettingsError names the file that cannot be used."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    files = _Files(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    rotation = _Rotation(files, _load(files))
    return grpc.dynamic_ssl_server_credentials(
        rotation.initial.config,
        rotation.fetch,
        require_client_authentication=files.client_ca is not None,
    )


class _Rotation:
    """Serves the loaded certificates, and new ones once the files change."""

    def __init__(self, files: _Files, initial: _Loaded) -> None:
        self._files = files
        self.initial = initial
        self._current = initial
        self._lock = threading.Lock()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's callback on a new connection: a new configuration, or None to keep the
        current one."""
        with self._lock:
            try:
                if _stamp(self._files) == self._current.stamp:
                    return None
                loaded = _load(self._files)
            except (OSError, SettingsError) as error:
                log.warning("TLS files changed but cannot be used, keeping the old ones: %s", error)
                return None
            self._current = loaded
        log.info("TLS certificate reloaded from %s", self._files.cert)
        return loaded.config


def _stamp(files: _Files) -> tuple[tuple[int, int], ...]:
    paths = [files.cert, files.key] + ([files.client_ca] if files.client_ca else [])
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in (path.stat() for path in paths))


def _load(files: _Files) -> _Loaded:
    """Read and check the files (stamp first: a file replaced while reading shows next time)."""
    try:
        stamp = _stamp(files)
    except OSError as error:
        raise SettingsError(f"TLS file {error.filename!r}: {error.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as error:
        raise SettingsError(
            f"CHAT_POLICY_GRPC_TLS_CERT={str(files.cert)!r} and CHAT_POLICY_GRPC_TLS_KEY="
            f"{str(files.key)!r} are not a PEM certificate and its private key: {error}"
        ) from None
    client_ca = None
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as error:
            raise SettingsError(
                f"CHAT_POLICY_GRPC_TLS_CLIENT_CA={str(files.client_ca)!r} is not a PEM CA bundle:"
                f" {error}"
            ) from None
        client_ca = files.client_ca.read_bytes()
    config = grpc.ssl_server_certificate_configuration(
        [(files.key.read_bytes(), files.cert.read_bytes())], root_certificates=client_ca
    )
    return _Loaded(stamp, config)
