"""The lab's keys: a lab CA with DNS-only host certificates (as PE's CA issues them), and the SSH keys,
known_hosts and sshd configuration of every host."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from lab.config import LAB_DIR, LabConfig
from lab.core import sh


def pki(cfg: LabConfig) -> None:
    pki = LAB_DIR / "pki"
    pki.mkdir(parents=True)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.pem"), "-days", "30",
       "-subj", "/CN=Puppet CA (pe-ha lab simulator)")
    all_hosts = [*cfg.hosts]

    def issue(name: str, sans: str) -> None:
        key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.pem"
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        ext = pki / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
        sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.pem"), "-CAkey", str(pki / "ca.key"),
           "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-out", str(crt), "-days", "30", "-extfile", str(ext))

    with ThreadPoolExecutor(4) as pool:
        # DNS names only: PE's CA issues no IP SANs by default, so a connection by address must not verify.
        jobs = [pool.submit(issue, h.fqdn, f"DNS:{h.fqdn},DNS:{h.short}") for h in all_hosts]
        jobs.append(pool.submit(issue, "pe-ha-worker", "DNS:pe-ha-worker"))
        for j in jobs:
            j.result()


def ssh_keys(cfg: LabConfig) -> dict[str, str]:
    ssh = LAB_DIR / "ssh"
    ssh.mkdir(parents=True)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pe-ha-controller", "-f", str(ssh / "id_ed25519"))
    host_keys: dict[str, str] = {}
    for h in cfg.hosts:
        etc_ssh = h.path("/etc/ssh")
        etc_ssh.mkdir(parents=True, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"host@{h.fqdn}", "-f", str(etc_ssh / "ssh_host_ed25519_key"))
        dot_ssh = h.path("/root/.ssh")
        dot_ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.fqdn}", "-f", str(dot_ssh / "id_ed25519"))
        host_keys[h.short] = " ".join((etc_ssh / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    authorized = [(ssh / "id_ed25519.pub").read_text().strip()]
    authorized += [h.path("/root/.ssh/id_ed25519.pub").read_text().strip() for h in cfg.hosts]
    known = [f"{h.fqdn},{h.short},{h.address} {host_keys[h.short]}" for h in cfg.hosts]
    (ssh / "known_hosts").write_text("\n".join(known) + "\n")
    (ssh / "ssh_config").write_text(
        "".join(f"Host {h.short} {h.fqdn}\n  HostName {h.address}\n  User root\n" for h in cfg.hosts)
        + f"Host *\n  IdentityFile {ssh}/id_ed25519\n  UserKnownHostsFile {ssh}/known_hosts\n"
        "  StrictHostKeyChecking yes\n  ConnectTimeout 5\n  BatchMode yes\n")
    for h in cfg.hosts:
        dot_ssh = h.path("/root/.ssh")
        (dot_ssh / "authorized_keys").write_text("\n".join(authorized) + "\n")
        (dot_ssh / "known_hosts").write_text("\n".join(known) + "\n")
        (dot_ssh / "config").write_text("Host *\n  StrictHostKeyChecking yes\n  ConnectTimeout 5\n  BatchMode yes\n")
        for f in dot_ssh.iterdir():
            f.chmod(0o600 if not f.name.endswith(".pub") else 0o644)
        (h.path("/etc/ssh") / "sshd_config").write_text(
            f"ListenAddress {h.address}\nPort 22\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPidFile none\nStrictModes yes\nSubsystem sftp internal-sftp\nAcceptEnv LANG\n"
            "ClientAliveInterval 10\nMaxStartups 100:30:200\nMaxSessions 50\n")
        (h.path("/etc/ssh") / "ssh_config").write_text("Host *\n  SendEnv LANG\n")
    return host_keys
