"""Egress policy, runtime changes, secret injection and private ports, through the SDK."""

import base64
import os
import secrets
import time
import urllib.error
import urllib.request

import pytest
from conftest import CA, DNS, ROGUE_DNS, requests_seen, sh, unique, wait_for
from e2b import ALL_TRAFFIC, Sandbox, Secret
from e2b.exceptions import SandboxException

PROBE = open(os.path.join(os.path.dirname(__file__), "probe.py")).read()
CURL = "curl -s -m 5 --cacert /tmp/testnet-ca.pem"


def probe(sbx, *args):
    sbx.files.write("/tmp/probe.py", PROBE)
    code, out = sh(sbx, "python3 /tmp/probe.py " + " ".join(args))
    assert code == 0, out
    return out.strip()


def read(sbx, path):
    try:
        return sbx.files.read(path)
    except Exception:
        return ""


def only_names(*names):
    return {"allow_out": list(names), "deny_out": [ALL_TRAFFIC], "dns_servers": [DNS]}


def test_names_and_wildcards_are_allowed_and_nothing_else(make):
    sbx = make(network=only_names("allowed.test", "*.wild.test"))
    assert sh(sbx, f"{CURL} http://allowed.test/")[1] == "hello 198.51.100.10 host=allowed.test\n"
    assert sh(sbx, f"{CURL} https://allowed.test/")[1] == "hello 198.51.100.10 host=allowed.test\n"
    assert sh(sbx, f"{CURL} https://a.wild.test/")[1].startswith("hello 198.51.100.12")
    # Not allowed: another name, the wildcard's apex, an address, a port other than 80/443.
    code, out = sh(sbx, f"{CURL} http://other.test/")
    assert "not allowed by the sandbox's network policy" in out, out
    assert sh(sbx, f"{CURL} https://other.test/")[0] != 0
    assert "not allowed" in sh(sbx, f"{CURL} http://wild.test/")[1]
    assert "not allowed" in sh(sbx, f"{CURL} http://198.51.100.11/")[1]
    assert probe(sbx, "tcp", "198.51.100.11", "2222").startswith("blocked")
    assert sh(sbx, f"{CURL} http://198.51.100.10:8080/")[0] != 0
    # The listed resolver answers; the sandbox's resolv.conf names it.
    assert probe(sbx, "dns", DNS, "allowed.test", "udp") == "answer"
    assert DNS in sbx.files.read("/etc/resolv.conf")


def test_a_named_host_is_reached_at_its_own_address_whatever_was_dialled(make):
    sbx = make(network=only_names("allowed.test"))
    seen = len(requests_seen())
    # TLS: the allowed name at a denied address (curl --resolve), and SNI/Host mismatch.
    out = sh(sbx, f"{CURL} --resolve allowed.test:443:198.51.100.13 https://allowed.test/")[1]
    assert out.startswith("hello 198.51.100.10"), out
    out = sh(sbx, f"{CURL} --resolve allowed.test:443:198.51.100.13 -H 'Host: deny.test' https://allowed.test/")[1]
    assert out.startswith("hello 198.51.100.10 host=deny.test"), out
    # Plain HTTP: Host names the allowed host, the connection was to a denied address.
    out = sh(sbx, f"{CURL} -H 'Host: allowed.test' http://198.51.100.13/")[1]
    assert out.startswith("hello 198.51.100.10"), out
    # No SNI at all (an IP URL): decided by address, which is denied.
    assert sh(sbx, f"{CURL} -k https://198.51.100.13/")[0] != 0
    new = requests_seen()[seen:]
    assert new and all(r["local"].startswith("198.51.100.10:") for r in new), new


def test_dns_goes_to_the_listed_resolvers_only(make):
    sbx = make(network=only_names("allowed.test"))
    assert probe(sbx, "dns", DNS, "allowed.test", "tcp") == "answer"
    # Another resolver, over UDP and TCP, even one answering for an allowed name.
    assert probe(sbx, "dns", ROGUE_DNS, "allowed.test", "udp").startswith("blocked")
    assert probe(sbx, "dns", ROGUE_DNS, "allowed.test", "tcp").startswith("blocked")
    # The host's own resolver, which sandboxes without a policy may use.
    host_dns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
    for d in host_dns:
        if d.count(".") == 3 and not d.startswith("127."):
            assert probe(sbx, "dns", d, "allowed.test", "udp").startswith("blocked")


def test_udp_icmp_ipv6_and_raw_sockets_do_not_get_around_it(make):
    sbx = make(network=only_names("allowed.test"))
    assert probe(sbx, "udp", "198.51.100.10", "5353").startswith("blocked")
    assert sh(sbx, "ping -c1 -W2 198.51.100.10")[0] != 0
    assert probe(sbx, "tcp", "2001:db8:51::10", "80").startswith("blocked")
    assert probe(sbx, "raw") == "denied"
    # A sandbox without a policy reaches them (the probes can succeed).
    free = make()
    assert probe(free, "udp", "198.51.100.10", "5353") == "reply"
    assert probe(free, "tcp", "198.51.100.11", "2222") == "banner"


def test_addresses_allow_beats_deny(make):
    sbx = make(network={"allow_out": ["198.51.100.11", "198.51.100.10/32"], "deny_out": ["198.51.100.0/24"]})
    assert probe(sbx, "tcp", "198.51.100.11", "2222") == "banner"
    assert probe(sbx, "udp", "198.51.100.10", "5353") == "reply"
    assert probe(sbx, "tcp", "198.51.100.13", "2222").startswith("blocked")
    assert probe(sbx, "udp", "198.51.100.13", "5353").startswith("blocked")
    assert sh(sbx, "curl -s -m 5 http://198.51.100.13/")[0] != 0
    # Outside the denied range: allowed (an address in neither list is) …
    assert probe(sbx, "tcp", "203.0.113.66", "2222") == "banner"
    # … but DNS only to the resolvers (none listed: the operator's), not to any address.
    assert probe(sbx, "dns", ROGUE_DNS, "allowed.test", "udp").startswith("blocked")
    # allow_internet_access=False with an allow list: only that list.
    only = make(allow_internet_access=False, network={"allow_out": ["198.51.100.11"]})
    assert probe(only, "tcp", "198.51.100.11", "2222") == "banner"
    assert probe(only, "udp", "198.51.100.10", "5353").startswith("blocked")


def test_a_policy_change_applies_at_once_and_cuts_what_it_refuses(make):
    sbx = make(network=only_names("allowed.test", "other.test"))
    # An open connection through the proxy (a stream of lines) …
    sbx.commands.run("curl -sN http://allowed.test/slow > /tmp/slow 2>&1; echo done >> /tmp/slow", background=True)
    assert wait_for(lambda: read(sbx, "/tmp/slow").count("\n") >= 2)
    sbx.update_network(only_names("other.test"))
    # … is cut, and new ones are refused.
    assert wait_for(lambda: "done" in read(sbx, "/tmp/slow"), 5), read(sbx, "/tmp/slow")
    assert "not allowed" in sh(sbx, f"{CURL} http://allowed.test/")[1]
    assert sh(sbx, f"{CURL} http://other.test/")[1].startswith("hello 198.51.100.11")
    # A direct connection the firewall passed (by address) is cut by the firewall.
    direct = make(network={"allow_out": ["198.51.100.10"], "deny_out": [ALL_TRAFFIC]})
    direct.commands.run("curl -sN http://198.51.100.10/slow > /tmp/slow 2>&1; echo done $? >> /tmp/slow", background=True)
    assert wait_for(lambda: read(direct, "/tmp/slow").count("\n") >= 2)
    direct.update_network({"allow_out": ["198.51.100.11"], "deny_out": [ALL_TRAFFIC]})
    assert wait_for(lambda: "done" in read(direct, "/tmp/slow"), 10), read(direct, "/tmp/slow")
    # Everything cleared (an empty update): the baseline again.
    direct.update_network({})
    assert probe(direct, "udp", "198.51.100.13", "5353") == "reply"
    info = Sandbox.get_info(direct.sandbox_id)
    assert info.sandbox_id == direct.sandbox_id


def test_a_policy_survives_a_pause(make):
    sbx = make(network=only_names("allowed.test"))
    sbx.pause()
    sbx.connect()
    assert sh(sbx, f"{CURL} http://allowed.test/")[1].startswith("hello 198.51.100.10")
    assert "not allowed" in sh(sbx, f"{CURL} http://other.test/")[1]
    assert probe(sbx, "udp", "198.51.100.13", "5353").startswith("blocked")


def test_a_secret_is_added_outside_and_never_enters_the_sandbox(make):
    name, value = unique("api-key"), "sk-" + secrets.token_hex(16)
    info = Secret.create(name, value, metadata={"for": "compat"})
    try:
        assert info.version == 1 and info.metadata == {"for": "compat"}
        assert value not in repr(Secret.get_info(name)) and value not in repr(Secret.list().next_items())
        rules = {"api.test": [{"transform": {"headers": {"Authorization": f"Bearer {Secret.fill(name)}", "X-Plain": "yes"}}}]}
        sbx = make(network={**only_names("api.test"), "rules": rules})
        seen = len(requests_seen())
        # HTTPS through the sandbox's own CA (in its system trust store: no --cacert), the
        # sandbox's own Authorization overwritten; plain HTTP too.
        out = sh(sbx, "curl -s -m 5 -H 'Authorization: mine' https://api.test/")[1]
        assert out == "hello 198.51.100.20 host=api.test\n", out
        assert sh(sbx, "curl -s -m 5 http://api.test/")[1].startswith("hello 198.51.100.20")
        new = [r for r in requests_seen()[seen:] if r["host"] == "api.test"]
        assert len(new) == 2 and {r["tls"] for r in new} == {True, False}, new
        assert all(r["headers"]["authorization"] == f"Bearer {value}" and r["headers"]["x-plain"] == "yes" for r in new)
        # A new version is used from the next request on.
        Secret.update(name, value + "-v2")
        sh(sbx, "curl -s -m 5 https://api.test/")
        assert requests_seen()[-1]["headers"]["authorization"] == f"Bearer {value}-v2"
        # The rule removed (the host still allowed): sent on as it is, without the header.
        sbx.update_network(only_names("api.test"))
        assert sh(sbx, f"{CURL} https://api.test/")[1].startswith("hello 198.51.100.20")
        assert "authorization" not in requests_seen()[-1]["headers"]
        sbx.update_network({**only_names("api.test"), "rules": rules})
        # Nowhere in the sandbox: env, every process's environment, files, memory.
        assert value not in sh(sbx, "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")[1]
        # (Files: everywhere a process could have written, the whole writable layer's reach.)
        dirs = "/etc /root /home /tmp /var /run /opt /srv /usr/local /dev/shm"
        code, out = sh(sbx, f"grep -rlsF -- '{value[:12]}' {dirs} 2>/dev/null; echo searched", timeout=120)
        assert out.strip() == "searched", out
        assert probe(sbx, "memory", base64.b64encode(value.encode()).decode()) == "clean 0"
        # The sandbox trusts its own CA only for what the proxy shows it: another sandbox's
        # proxy certificate is not trusted by this one (their CAs differ).
        other = make(network={**only_names("api.test"), "rules": rules})
        assert sbx.files.read("/etc/ssl/certs/soulbox-egress-ca.pem") != other.files.read("/etc/ssl/certs/soulbox-egress-ca.pem")
    finally:
        Secret.destroy(name)
    # A deleted secret is not resolved: the request is refused at the proxy, nothing sent.
    seen = len(requests_seen())
    out = sh(sbx, "curl -s -m 5 https://api.test/")[1]
    assert "secret" in out and "not set" in out, out
    assert len(requests_seen()) == seen


def test_bad_network_input_is_refused_with_the_reason():
    for network, says in [
        ({"allow_out": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"allow_out": ["bad name.test"]}, "bad name.test"),
        ({"deny_out": ["example.com"]}, "domains can only be allowed"),
        ({"dns_servers": ["dns.google"]}, "dns.google"),
        ({"allow_out": ["api.test"], "rules": {"api.test": [{"transform": {"headers": {"A": "${e2b.secrets.no-such-secret}"}}}]}}, "no-such-secret"),
    ]:
        with pytest.raises(SandboxException) as e:
            Sandbox.create("base", network=network, timeout=30)
        assert "400" in str(e.value) and says in str(e.value), e.value


def test_another_teams_secret_cannot_be_named(make):
    other_key = os.environ["SOULBOX_OTHER_TEAM_KEY"]
    name = unique("theirs")
    Secret.create(name, "their-value", api_key=other_key)
    try:
        with pytest.raises(SandboxException) as e:
            make(network={**only_names("api.test"), "rules": {"api.test": [{"transform": {"headers": {"A": Secret.fill(name)}}}]}})
        assert "400" in str(e.value) and name in str(e.value)
        assert not Secret.exists(name)
    finally:
        Secret.destroy(name, api_key=other_key)


def test_private_ports_need_the_traffic_token(make):
    sbx = make(network={"allow_public_traffic": False})
    assert sbx.traffic_access_token
    sbx.commands.run("mkdir -p /tmp/www && echo private > /tmp/www/i && cd /tmp/www && python3 -m http.server 8080", background=True)
    url = os.environ["E2B_API_URL"] + "/i"
    host = sbx.get_host(8080)

    def get(headers):
        req = urllib.request.Request(url, headers={"Host": host, **headers})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert wait_for(lambda: get({"e2b-traffic-access-token": sbx.traffic_access_token})[0] == 200)
    assert get({})[0] == 403
    assert get({"e2b-traffic-access-token": "tt_wrong"})[0] == 403
    # envd itself still answers the SDK (its own token).
    assert sbx.commands.run("echo ok").stdout == "ok\n"
    # A public sandbox's port needs nothing.
    pub = make()
    pub.commands.run("mkdir -p /tmp/www && echo public > /tmp/www/i && cd /tmp/www && python3 -m http.server 8080", background=True)
    host = pub.get_host(8080)
    assert wait_for(lambda: get({})[0] == 200)
