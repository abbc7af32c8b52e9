"""OS mechanisms that know nothing of sandboxes.

Namespaces and spawn, cgroups (v1 and v2), btrfs and overlay storage, capabilities and seccomp,
rootfs builds. Imports only localsb.api (errors). Every privileged call goes through this package,
so unit tests can replace it with a fake and integration tests run it for real as root.
"""
