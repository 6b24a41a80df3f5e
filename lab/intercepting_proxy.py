"""A TLS-intercepting egress proxy for the lab: what hosts behind a corporate proxy live with.

    .venv/bin/python lab/intercepting_proxy.py --ca-dir DIR --listen 10.77.0.1 \
        --upstream 10.77.0.1:3128 --log DIR/proxy.log

Every CONNECT is answered, and the client's TLS is terminated with a certificate for the host
it asked for, signed by the proxy's own CA (made in --ca-dir on first start; DIR/ca.pem is
what hosts must trust). The proxy then opens its own TLS connection to the real server
(through --upstream, the lab's plain proxy, or directly for --direct addresses), verified
against the system's CAs and its own, and relays the decrypted bytes between the two. Plain
HTTP requests are passed to the upstream proxy unchanged. Each CONNECT is logged as one JSON
line: {"host", "port", "intercepted": true} when the client trusted the proxy's certificate,
{"host", "port", "intercepted": false, "error"} when it refused it.

Prints {"port": N, "ca": PATH} on stdout once it listens; runs until killed. Python 3.11 or
later (StreamWriter.start_tls).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


class CertificateAuthority:
    """A CA kept in a directory (ca.pem, ca.key), and leaf certificates it signs on demand."""

    def __init__(self, directory: Path, name: str = "flowerbed lab intercepting proxy CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if not self.cert_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            cert = (
                self._builder(subject, subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            key_path.write_bytes(_private_bytes(key))
            key_path.chmod(0o600)
            self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @staticmethod
    def _builder(subject, issuer, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
        )

    def leaf(self, host: str) -> tuple[Path, Path]:
        """(cert, key) files for `host` (a name or an IP address), signed by this CA."""
        safe = host.replace(":", "_")
        cert_path, key_path = self.directory / f"{safe}.pem", self.directory / f"{safe}.key"
        if cert_path.exists():
            return cert_path, key_path
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        cert = (
            self._builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # what Python 3.13's strict verification (Debian 13's pip) requires of a leaf
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_path.write_bytes(_private_bytes(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def _private_bytes(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class InterceptingProxy:
    def __init__(self, ca: CertificateAuthority, upstream: tuple[str, int], direct: set[str], log):
        self.ca, self.upstream, self.direct, self.log = ca, upstream, direct, log
        self.verify_upstream = ssl.create_default_context()
        self.verify_upstream.load_verify_locations(cafile=str(ca.cert_path))

    def record(self, **fields) -> None:
        self.log.write(json.dumps(fields) + "\n")
        self.log.flush()

    async def handle(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method == "CONNECT":
                await self.intercept(reader, writer, target)
            else:
                await self.forward_plain(reader, writer, head)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or spoke no HTTP: nothing to relay
        finally:
            writer.close()

    async def intercept(self, reader, writer, target: str) -> None:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        as_server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        as_server.load_cert_chain(*map(str, self.ca.leaf(host)))
        try:
            await writer.start_tls(as_server)
        except (ssl.SSLError, OSError) as error:  # the client refused the proxy's certificate
            self.record(host=host, port=int(port), intercepted=False, error=str(error))
            return
        self.record(host=host, port=int(port), intercepted=True)
        up_reader, up_writer = await self.open_upstream(host, int(port))
        await up_writer.start_tls(self.verify_upstream, server_hostname=host)
        await relay(reader, writer, up_reader, up_writer)

    async def open_upstream(self, host: str, port: int):
        if host in self.direct:
            return await asyncio.open_connection(host, port)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        answer = await up_reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in answer.split(b"\r\n", 1)[0]:
            raise OSError(f"upstream proxy refused CONNECT {host}:{port}")
        return up_reader, up_writer

    async def forward_plain(self, reader, writer, head: bytes) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(head)
        await relay(reader, writer, up_reader, up_writer)


async def relay(reader_a, writer_a, reader_b, writer_b) -> None:
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    await asyncio.gather(pipe(reader_a, writer_b), pipe(reader_b, writer_a))


async def serve(arguments) -> None:
    ca = CertificateAuthority(Path(arguments.ca_dir))
    host, port = arguments.upstream.rsplit(":", 1)
    with open(arguments.log, "a") as log:
        proxy = InterceptingProxy(ca, (host, int(port)), set(arguments.direct), log)
        server = await asyncio.start_server(proxy.handle, arguments.listen, arguments.port)
        bound = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": bound, "ca": str(ca.cert_path)}), flush=True)
        async with server:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ca-dir", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="the plain proxy, HOST:PORT")
    parser.add_argument("--direct", action="append", default=[], help="reached without it")
    parser.add_argument("--log", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
