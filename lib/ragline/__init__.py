"""Ragline's shared library: everything the services have in common, and nothing service-specific.

Services depend on this package and never on each other; they talk only through the
generated stubs in `ragline.v1`.
"""
