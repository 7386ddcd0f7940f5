"""The pe-ha lab: real hosts in network namespaces, running a *simulator* of PE's CLI and HTTPS APIs.

It is never PE. Everything except PE itself is real: sshd per host, PostgreSQL 15 on master and
replica, the 198.18.0.0/24 network (no route out, no forwarding, no NAT), TLS, and the files on each
host. Production code never imports this package.
"""
