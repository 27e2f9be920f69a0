"""Makes the certificates docker-compose.yml mounts: `python tools/make_certs.py [FOLDER]` (default deploy/tls).

A new private CA (its key is not kept), one server certificate for every service's compose name,
`localhost` and 127.0.0.1, and one client certificate for the gateway and the other clients, all
from `ragline.dev_certificates` (trustme). For a trial deployment or development: in production,
issue them from your own CA (cert-manager, Vault) under the same file names. Run it again to renew;
the services pick the new files up without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ragline.dev_certificates import write_certificates

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    """Writes ca.pem, server.pem, server-key.pem, client.pem and client-key.pem into the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT / "deploy" / "tls")
    args = parser.parse_args(argv)
    files = write_certificates(args.folder)
    print(f"wrote {files.ca}, {files.server_cert}, {files.client_cert} and their keys")


if __name__ == "__main__":
    main()
