"""What every Kubernetes engine's manifest needs: names, resources, isolation, YAML. Pure.

* names: Kubernetes object names are DNS labels (`check_name`, `check_namespace`);
* resources (`container_resources`): memory request = limit, a CPU request and no CPU limit;
* isolation (`network_policy`): TF's gRPC servers are unauthenticated, so a job's pods accept
  its port only from the job's own pods;
* YAML (`to_yaml`): every string is written so that Kubernetes reads it back as that string.
  Its YAML reader (go-yaml, YAML 1.1 rules) types unquoted ``1e-3``, ``08``, ``0o17`` as
  numbers and ``y``/``n``/``on`` as booleans, and the API server then rejects a ``command``
  holding one.

>>> text = to_yaml([{"command": ["train.py", "--lr", "1e-3", "--flag", "y"]}], header="")
>>> [line for line in text.splitlines() if line.startswith("- ")]
['- train.py', '- --lr', '- "1e-3"', '- --flag', '- "y"']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tfps.emit import resources
from tfps.errors import ConfigError

__all__ = ["MAX_DNS_LABEL", "check_name", "check_namespace", "container_resources",
           "needs_quotes", "network_policy", "to_yaml"]

# Kubernetes object and Service names are DNS-1035 labels of at most 63 characters;
# namespaces are DNS-1123 labels.
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_DNS_LABEL = 63
# What a GPU is called in a container's limits (NVIDIA's device plugin).
_GPU_RESOURCE = "nvidia.com/gpu"


def check_name(name: Any) -> str:
    """`name` if it is a DNS-1035 label; else `ConfigError` naming the argument."""
    if not isinstance(name, str) or not _DNS1035.fullmatch(name):
        raise ConfigError(
            f"Argument `name` must be a DNS-1035 label (lower-case letters, digits and '-', "
            f"starting with a letter, not ending with '-'). Received: name={name!r}")
    return name


def check_namespace(namespace: Any) -> str | None:
    """`namespace` if it is None or a DNS-1123 label; else `ConfigError`."""
    if namespace is not None and (not isinstance(namespace, str)
                                  or not _DNS1123.fullmatch(namespace)
                                  or len(namespace) > MAX_DNS_LABEL):
        raise ConfigError(f"Argument `namespace` must be a DNS-1123 label (lower-case letters, "
                          f"digits and '-'). Received: namespace={namespace!r}")
    return namespace


def container_resources(res: resources.Resources, gpus: int = 0) -> dict:
    """A container's ``resources``: CPU and memory requests, the memory limit, GPUs.

    Memory: request = limit, so a ps is never evicted for using what it asked for, and a
    leak ends in its own OOM kill (137, retried) instead of the node's. CPU: a request only;
    a CPU limit throttles gRPC threads mid-step without protecting anyone.
    """
    memory = resources.k8s_memory(res.memory_mib)
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        limits[_GPU_RESOURCE] = gpus
    return {"requests": {"cpu": res.cpu, "memory": memory}, "limits": limits}


def network_policy(*, name: str, namespace: str | None, port: int, label: str) -> dict:
    """A NetworkPolicy: the pods labelled ``label: name`` accept `port` only from each other:
    TCP (TF's gRPC servers) and UDP (a launcher's request that another restart its hung task,
    `tfps.launch.run.relay`).

    TF's gRPC servers are unauthenticated and run any op they are sent; this keeps every other
    pod of the cluster (and anything outside it) away from them. It needs a network plugin
    that enforces NetworkPolicy (Calico, Cilium, ...); egress is left open.
    """
    selector = {"matchLabels": {label: name}}
    metadata: dict[str, Any] = {"name": f"{name}-tfps-isolation"}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": selector}],
                         "ports": [{"protocol": "TCP", "port": port},
                                   {"protocol": "UDP", "port": port}]}],
        },
    }


# A plain (unquoted) scalar that go-yaml's YAML 1.1 resolver reads as a string whatever its
# letters: an optional "-"/"--" (options), then a letter, "_" or "/", then name characters.
# Anything else (a leading digit, ".", "+", a lone "-", spaces, ...) is quoted.
_PLAIN_SAFE = re.compile(r"(?:--?)?[A-Za-z_/][A-Za-z0-9_./:@=+-]*")
# Words YAML 1.1 reads as booleans or null (go-yaml resolve.go), and the forms of infinity
# and NaN that Go's strconv.ParseFloat takes after a sign (go-yaml tries it on "+"/"-").
_YAML11_WORDS = re.compile(
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL|-?(?i:inf|infinity|nan)")


def needs_quotes(text: str) -> bool:
    """Whether Kubernetes' YAML reader could read `text`, written plain, as a non-string.

    >>> [needs_quotes(t) for t in ("train.py", "--lr", "1e-3", "y", "08", "0o17", "-inf")]
    [False, False, True, True, True, True, True]
    """
    return not _PLAIN_SAFE.fullmatch(text) or bool(_YAML11_WORDS.fullmatch(text))


def _no_alias_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        # Repeated lists would otherwise print as &id001 / *id001 anchors: valid YAML, but
        # unreadable in a manifest meant to be reviewed and edited.
        def ignore_aliases(self, data):
            return True

    def represent_str(dumper, text):
        # PyYAML quotes only what its own resolver would type, which misses "1e-3", "y",
        # "08", "0o17", "5e4": go-yaml types those (module docstring).
        style = '"' if needs_quotes(text) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper


def to_yaml(docs: Sequence[dict], header: str) -> str:
    """The documents as one YAML stream after `header` (comment lines, each ending in a
    newline), every string quoted where Kubernetes would read it as something else."""
    import yaml

    return header + yaml.dump_all(docs, Dumper=_no_alias_dumper(), sort_keys=False,
                                  default_flow_style=False)
