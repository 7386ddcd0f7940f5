"""Real Puppet Server and the real agent in the lab: Debian's ``puppetserver`` 7.9.5 behind the simulated PE
Puppet Server's TLS front on 8140, and Debian's ``puppet-agent`` 7.23.0 on the agent hosts.

PE's status API on 8140 also reports Code Manager and file sync, which only PE has, so the simulator keeps
8140 and terminates TLS there; it hands the agent's own requests (``/puppet/v3/...``) to the host's real Puppet
Server on ``127.0.0.1:8141``, with the client certificate in the headers Puppet Server documents for external
SSL termination (``X-Client-Verify``, ``X-Client-DN``, ``X-Client-Cert``). Puppet Server classifies each node
through an ENC that asks the host's simulated classifier (PE's node terminus asks PE's classifier), and its
catalog applies the classification's ``puppet_enterprise::profile::agent`` parameters (``server_list`` in the
agent's ``puppet.conf``, ``pcp_broker_list`` in pxp-agent's). Puppet Server stores facts, catalogs and reports
through the PuppetDB terminus at ``https://<host>:8081``, which the simulator's 8081 hands to the real PuppetDB.
So an agent run, its ``server_list`` failover, its exit code, its ``last_run_summary.yaml`` and what PuppetDB
stores of it are Puppet's own. docs/simulator.md has what is real and what is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab import jvmservice
from lab.config import Host, LabConfig
from lab.core import node_run

JAR = "/usr/share/puppetserver/puppetserver.jar"
PACKAGE_CONF = "/etc/puppet/puppetserver/conf.d"  # Debian's defaults, copied and adapted per host
CONF_D = "/etc/puppetlabs/puppetserver/conf.d"  # PE's path, inside each lab host
BOOTSTRAP = "/etc/puppetlabs/puppetserver/bootstrap.cfg"
CONFDIR = "/etc/puppetlabs/puppetserver/puppet"  # the server's puppet.conf, apart from the agent's
CODEDIR = "/etc/puppetlabs/code"
VARDIR = "/opt/puppetlabs/server/data/puppetserver"
LOGDIR = "/var/log/puppetlabs/puppetserver"
LOG = f"{LOGDIR}/puppetserver.log"
SSLDIR = "/etc/puppetlabs/puppet/ssl"  # the lab CA's certificates, where the simulator keeps them
PORT = 8141  # cleartext, loopback only: the simulator's 8140 front is the only way in
HEAP = "-Xmx512m"
ENC = "/opt/puppetlabs/sim/enc.py"
SERVICE_SCRIPT = "/opt/puppetlabs/sim/real-puppetserver.sh"
REAL_AGENT = "/opt/puppetlabs/sim/real-agent"  # present on hosts whose `puppet agent` is the real one
AGENT_CLASS = "pe_ha_lab::agent"

# Debian's bootstrap (services.d/bootstrap.cfg) with the CA disabled: the lab's CA issued every certificate.
SERVICES = """\
puppetlabs.services.request-handler.request-handler-service/request-handler-service
puppetlabs.services.jruby.jruby-puppet-service/jruby-puppet-pooled-service
puppetlabs.services.jruby-pool-manager.jruby-pool-manager-service/jruby-pool-manager-service
puppetlabs.services.puppet-profiler.puppet-profiler-service/puppet-profiler-service
puppetlabs.trapperkeeper.services.webserver.jetty9-service/jetty9-service
puppetlabs.trapperkeeper.services.webrouting.webrouting-service/webrouting-service
puppetlabs.services.config.puppet-server-config-service/puppet-server-config-service
puppetlabs.services.master.master-service/master-service
puppetlabs.services.puppet-admin.puppet-admin-service/puppet-admin-service
puppetlabs.trapperkeeper.services.authorization.authorization-service/authorization-service
puppetlabs.services.versioned-code-service.versioned-code-service/versioned-code-service
puppetlabs.trapperkeeper.services.scheduler.scheduler-service/scheduler-service
puppetlabs.trapperkeeper.services.status.status-service/status-service
puppetlabs.trapperkeeper.services.metrics.metrics-service/metrics-service
puppetlabs.trapperkeeper.services.metrics.metrics-service/metrics-webservice
puppetlabs.services.jruby.jruby-metrics-service/jruby-metrics-service
puppetlabs.services.ca.certificate-authority-disabled-service/certificate-authority-disabled-service
"""

# The class the ENC assigns, as PE's puppet_enterprise::profile::agent applies the classification: ``server_list``
# in the agent's puppet.conf (PE: pe_ini_setting; here Puppet's own `puppet config`), and ``pcp_broker_list`` as
# pxp-agent's ``broker-ws-uris`` in pxp-agent.conf (pcp_broker_list is no puppet.conf setting).
AGENT_MANIFEST = """\
class pe_ha_lab::agent(Hash[String, String] $puppet_settings = {}, String $pxp_agent_conf = '') {
  $puppet_settings.each |$key, $value| {
    exec { "puppet.conf ${key}":
      command  => "/usr/bin/puppet config set ${key} '${value}' --section main --confdir /etc/puppetlabs/puppet",
      unless   => "/usr/bin/test \\"$(/usr/bin/puppet config print ${key} --section main --confdir /etc/puppetlabs/puppet)\\" = '${value}'",
      provider => shell,
    }
  }
  if $pxp_agent_conf != '' {
    file { '/etc/puppetlabs/pxp-agent': ensure => directory }
    file { '/etc/puppetlabs/pxp-agent/pxp-agent.conf': ensure => file, content => $pxp_agent_conf, mode => '0640' }
  }
}
"""

# Asks the host's simulated classifier (through the simulator's 8140, with the host's certificate) for the
# node's agent settings, and answers Puppet's ENC format (YAML; JSON is YAML).
ENC_SCRIPT = """\
#!/usr/bin/python3
# pe-ha lab: the real Puppet Server's ENC, asking the simulated PE classifier (not PE's node terminus).
import json, socket, ssl, sys, urllib.error, urllib.request
node = sys.argv[1]
ssldir = "/etc/puppetlabs/puppet/ssl"
me = socket.getfqdn()
ctx = ssl.create_default_context(cafile=ssldir + "/certs/ca.pem")
ctx.load_cert_chain(ssldir + "/certs/%s.pem" % me, ssldir + "/private_keys/%s.pem" % me)
req = urllib.request.Request("https://%s:8140/sim/v1/catalog" % me, method="POST",
                             data=json.dumps({"trusted": {"certname": node}, "facts": {}}).encode(),
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=20, context=ctx) as resp:
        catalog = json.loads(resp.read())
except urllib.error.HTTPError as e:
    sys.stderr.write("classification of %s failed: %s\\n" % (node, e.read().decode(errors="replace")))
    sys.exit(1)
params = {"puppet_settings": catalog.get("settings", {}),
          "pxp_agent_conf": catalog.get("files", {}).get("/etc/puppetlabs/pxp-agent/pxp-agent.conf", "")}
print(json.dumps({"environment": "production", "classes": {"@CLASS@": params}}))
""".replace("@CLASS@", AGENT_CLASS)


TERMINUS = "/usr/lib/ruby/vendor_ruby/puppet/indirector/catalog/puppetdb.rb"  # Debian's puppet-terminus-puppetdb


def installed() -> bool:
    from pathlib import Path

    return all(Path(p).exists() for p in (JAR, "/usr/bin/puppet", TERMINUS))


def write_config(cfg: LabConfig, h: Host) -> None:
    """Puppet Server's conf.d, bootstrap, puppet.conf, code and ENC on ``h``."""
    conf = h.path(CONF_D)
    conf.mkdir(parents=True, exist_ok=True)
    for d in (CONFDIR, VARDIR, LOGDIR, f"{CODEDIR}/environments/production/manifests",
              f"{CODEDIR}/environments/production/modules/pe_ha_lab/manifests"):
        h.path(d).mkdir(parents=True, exist_ok=True)
    h.path(BOOTSTRAP).write_text(SERVICES)
    (conf / "global.conf").write_text(f'global: {{\n  logging-config: "{CONF_D}/../logback.xml"\n}}\n')
    h.path(f"{CONF_D}/../logback.xml").write_text(
        '<configuration>\n  <appender name="F" class="ch.qos.logback.core.FileAppender">\n'
        f"    <file>{LOG}</file>\n    <append>true</append>\n"
        "    <encoder><pattern>%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%c{2}] %m%n</pattern></encoder>\n"
        '  </appender>\n  <root level="info"><appender-ref ref="F"/></root>\n</configuration>\n')
    (conf / "puppetserver.conf").write_text(f"""jruby-puppet: {{
  ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
  gem-home: {VARDIR}/jruby-gems
  gem-path: [{VARDIR}/jruby-gems, "/usr/lib/puppetserver/vendored-jruby-gems"]
  server-conf-dir: {CONFDIR}
  server-code-dir: {CODEDIR}
  server-var-dir: {VARDIR}
  server-run-dir: {VARDIR}/run
  server-log-dir: {LOGDIR}
  max-active-instances: 1
}}
http-client: {{}}
profiler: {{}}
""")
    (conf / "webserver.conf").write_text(f"webserver: {{\n  host: 127.0.0.1\n  port: {PORT}\n}}\n")
    (conf / "web-routes.conf").write_text("""web-router-service: {
  "puppetlabs.services.ca.certificate-authority-service/certificate-authority-service": "/puppet-ca"
  "puppetlabs.services.master.master-service/master-service": "/puppet"
  "puppetlabs.services.puppet-admin.puppet-admin-service/puppet-admin-service": "/puppet-admin-api"
  "puppetlabs.trapperkeeper.services.status.status-service/status-service": "/status"
  "puppetlabs.trapperkeeper.services.metrics.metrics-service/metrics-webservice": "/metrics"
}
""")
    (conf / "metrics.conf").write_text(open(f"{PACKAGE_CONF}/metrics.conf").read())
    (conf / "ca.conf").write_text("certificate-authority: {}\n")
    # Puppet Server's documented set-up behind an SSL-terminating proxy: trust the client certificate headers.
    auth = open(f"{PACKAGE_CONF}/auth.conf").read()
    (conf / "auth.conf").write_text(auth.replace("version: 1", "version: 1\n    allow-header-cert-info: true", 1))
    # PuppetDB as PE configures its terminus: facts, catalogs and reports to the host's PuppetDB on 8081.
    h.path(f"{CONFDIR}/puppet.conf").write_text(
        f"[main]\ncertname = {h.fqdn}\nssldir = {SSLDIR}\n\n"
        f"[server]\nnode_terminus = exec\nexternal_nodes = {ENC}\nreports = store,puppetdb\n"
        "storeconfigs = true\nstoreconfigs_backend = puppetdb\n")
    h.path(f"{CONFDIR}/puppetdb.conf").write_text(f"[main]\nserver_urls = https://{h.fqdn}:8081\n")
    h.path(f"{CONFDIR}/routes.yaml").write_text("---\nserver:\n  facts:\n    terminus: puppetdb\n    cache: yaml\n")
    h.path(f"{CODEDIR}/environments/production/manifests/site.pp").write_text("node default { }\n")
    h.path(f"{CODEDIR}/environments/production/modules/pe_ha_lab/manifests/agent.pp").write_text(AGENT_MANIFEST)
    h.path(ENC).write_text(ENC_SCRIPT)
    h.path(ENC).chmod(0o755)
    java = (f"exec /usr/bin/java {HEAP} -XX:+UseSerialGC -Djava.security.egd=file:/dev/urandom "
            "-Djruby.lib=/usr/share/jruby/lib -Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger "
            f"-jar {JAR} --config {CONF_D} --bootstrap-config {BOOTSTRAP} >> {LOG}.out 2>&1")
    h.path(SERVICE_SCRIPT).write_text(jvmservice.script(
        "Debian's real Puppet Server on this host, behind the simulated PE Puppet Server's 8140", java, VARDIR))


def enable_agent(h: Host) -> None:
    """``puppet agent`` on ``h`` becomes the real agent (the simulator's `puppet` hands it over)."""
    h.path(REAL_AGENT).write_text("Debian's puppet agent 7.23.0 runs here (lab/realserver.py)\n")


class PuppetServerError(RuntimeError):
    """A real Puppet Server in the lab did not start."""


@dataclass
class RealPuppetServer:
    cfg: LabConfig
    host: Host

    def start(self, *, timeout_s: float = 240) -> float:
        """Start Puppet Server and wait until its status service answers ``running``; returns the seconds."""
        if self.running():
            return 0.0
        write_config(self.cfg, self.host)
        return jvmservice.start_and_wait(self.host, SERVICE_SCRIPT, VARDIR, ready=self.running, log_tail=self.log,
                                         what="Puppet Server", error=PuppetServerError, timeout_s=timeout_s)

    def stop(self) -> None:
        if self._pid() is not None:
            node_run(self.host, "sh", SERVICE_SCRIPT, "stop", timeout=60)

    def _pid(self) -> int | None:
        return jvmservice.pid(self.host, VARDIR)

    def _pid_alive(self) -> bool:
        return jvmservice.alive(self.host, VARDIR)

    def running(self) -> bool:
        if not self._pid_alive():
            return False
        out = node_run(self.host, "curl", "-sS", "-m", "5", f"http://127.0.0.1:{PORT}/status/v1/simple", check=False)
        return out.stdout.strip() == "running"

    def log(self) -> str:
        path = self.host.path(LOG)
        out = self.host.path(f"{LOG}.out")
        return "".join(p.read_text(errors="replace") for p in (path, out) if p.exists())


def start_all(cfg: LabConfig) -> dict[str, float]:
    """Puppet Server on the master and the replica (at once), and the real agent on every agent host."""
    from concurrent.futures import ThreadPoolExecutor

    for h in cfg.agent_hosts:
        enable_agent(h)
    with ThreadPoolExecutor(2) as pool:
        jobs = {h.short: pool.submit(RealPuppetServer(cfg, h).start) for h in (cfg.master, cfg.replica)}
        return {name: job.result() for name, job in jobs.items()}


def stop_all(cfg: LabConfig) -> None:
    for h in (cfg.master, cfg.replica):
        RealPuppetServer(cfg, h).stop()


def up(cfg: LabConfig, nodes: int) -> dict[str, float]:
    """The real profile's Puppet: the master's PuppetDB builds and fills pe-puppetdb while both Puppet Servers
    start (seconds for each part)."""
    from concurrent.futures import ThreadPoolExecutor

    from lab import realpuppet

    with ThreadPoolExecutor(1) as pool:
        servers = pool.submit(start_all, cfg)
        took = realpuppet.seed(cfg, nodes)
        took["puppetserver"] = max(servers.result().values())
    return took
