"""Ragline's shared library: everything the services have in common, and nothing service-specific.

Services depend on this package and never on each other; they talk only through the
generated stubs in `ragline.v1`.
"""

import os

# grpcio 1.80 and later restart their poller in a forked child while other threads use gRPC, and the
# child can abort before it execs (grpc/grpc#43055). The retriever forks to exec pg_ctl for the
# embedded PostgreSQL (as another user, so without vfork), and about one such fork in seven died
# with SIGABRT under load. Ragline's processes fork only to exec, which needs no fork support.
# Set before anything imports grpc: every service's entry point imports `ragline` first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
