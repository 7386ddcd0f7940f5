"""What still points at a former master after a promotion, judged from facts already read (no I/O here).

PE's guide leaves step 3 of "Promote a replica" to the operator: "update any systems or settings that refer to
the old master". peadm's recovery procedure adds `puppet node purge <failed primary>`. Each finding names
where it is and the command or console change that clears it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Leftover:
    where: str
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.where}: {self.what}. Fix: {self.fix}"


def _names(certname: str) -> re.Pattern[str]:
    """The certname as a whole host name: alone, or in a URL or a ``host:port`` entry; never a longer name."""
    return re.compile(r"(?<![\w.-])" + re.escape(certname) + r"(?![\w-]|\.[\w-])")


def _strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """Every string inside a parameter value, with where it sits (``[0]``, ``.key``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _strings(inner, f"{path}[{i}]")


def _pinned(rule: Any, certname: str) -> bool:
    """Is ``["=", "name", certname]`` one of the rule's terms (how the console pins a node)?"""
    if not isinstance(rule, list):
        return False
    if len(rule) == 3 and rule[0] == "=" and rule[1] == "name" and rule[2] == certname:
        return True
    return any(_pinned(term, certname) for term in rule[1:])


def in_classifier(groups: Iterable[Mapping[str, Any]], old: str, new: str) -> list[Leftover]:
    """Node groups whose rules pin, or whose class parameters or data name, the old master."""
    found: list[Leftover] = []
    names = _names(old)
    for group in groups:
        where = f"classifier group {group.get('name')!r} (on {new})"
        rule = group.get("rule")
        if _pinned(rule, old):
            found.append(Leftover(where, f"{old} is pinned to it", (
                f"unpin it: POST https://{new}:4433/classifier-api/v1/commands/unpin-from-all with "
                f'{{"nodes": ["{old}"]}} (or remove the pin in the console), then run Puppet on {new}')))
        elif any(names.search(text) for _, text in _strings(rule)):
            found.append(Leftover(where, f"its rule names {old}", "edit the rule in the console (Node groups > "
                                                                    f"{group.get('name')} > Rules)"))
        for kind, section in (("class", "classes"), ("data", "config_data")):
            for owner, params in sorted((group.get(section) or {}).items()):
                for param, value in sorted((params or {}).items()):
                    for at, text in _strings(value):
                        if names.search(text):
                            found.append(Leftover(where, f"{kind} {owner} parameter {param}{at} is {text!r}", (
                                f"in the console (Node groups > {group.get('name')} > "
                                f"{'Classes' if kind == 'class' else 'Configuration data'}), set {param} to name "
                                f"{new}, commit, then run Puppet on {new} (puppet agent -t)")))
    return found


def first_server(server_list: str) -> str:
    """The host of the first entry of a ``server_list`` value (``host[:port],...``); empty when unset."""
    return server_list.split(",")[0].strip().split(":")[0]


def in_agents(server_lists: Mapping[str, str], unreadable: Mapping[str, str], old: str, new: str) -> list[Leftover]:
    """Agents whose ``server_list`` still starts with the old master, and agents whose setting could not be read."""
    found = [Leftover(f"agent {node}", f"server_list starts with {old} ({value})",
                      f"once the classifier names {new}, run Puppet on {node} (puppet agent -t), or set it "
                      f"there: puppet config set server_list {new}:8140 --section main")
             for node, value in sorted(server_lists.items()) if first_server(value) == old]
    found += [Leftover(f"agent {node}", f"its server_list could not be read ({reason})",
                       "check it there: puppet config print server_list --section agent")
              for node, reason in sorted(unreadable.items())]
    return found


def in_puppetdb(active: bool, old: str, new: str) -> list[Leftover]:
    """The old master still an active node in the new master's PuppetDB."""
    if not active:
        return []
    return [Leftover(f"PuppetDB on {new}", f"{old} is still an active node",
                     f"on {new}, as root: puppet node purge {old} (deactivates it in PuppetDB, and revokes and "
                     "deletes its certificate, which pe-ha does not read)")]
