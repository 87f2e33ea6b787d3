"""Kubernetes manifests, read and checked the way Kubernetes reads and checks them. No cluster.

* `kubectl_read`: ``kubectl label --local -f FILE k=v -o json`` parses a manifest with the
  YAML reader Kubernetes uses (sigs.k8s.io/yaml over go-yaml, YAML 1.1 typing) and prints
  every object as JSON: what the API server would receive from ``kubectl apply``.
* `schema_errors`: a TFJob against the openAPIV3Schema of Kubeflow's TFJob CRD, a
  NetworkPolicy against its structure (tests/k8s/README.md); unknown fields are errors, as
  with the API server's strict field validation.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

import yaml

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s")
TFJOB_CRD = os.path.join(HERE, "kubeflow.org_tfjobs.v1.9.0.yaml")
NETWORK_POLICY = os.path.join(HERE, "networking.k8s.io_networkpolicy.v1.schema.json")
_LABEL = "tfps.check/read"


def kubectl() -> str | None:
    return shutil.which("kubectl")


def kubectl_read(path: str) -> list[dict]:
    """The objects of the manifest at `path`, as Kubernetes' YAML reader types them."""
    env = dict(os.environ, KUBECONFIG=os.devnull)
    out = subprocess.run([kubectl(), "label", "--local", "-f", path, f"{_LABEL}=x", "-o",
                          "json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"kubectl could not read {path}: {out.stderr.strip()}"
    decoder, i, objects, text = json.JSONDecoder(), 0, [], out.stdout
    while True:  # several objects come back as JSON documents one after the other
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        objects += obj["items"] if obj.get("kind") == "List" else [obj]
    for obj in objects:  # remove the label kubectl was asked to add
        labels = obj["metadata"].get("labels", {})
        labels.pop(_LABEL, None)
        if not labels:
            obj["metadata"].pop("labels", None)
    return objects


def _structural(schema):
    """openAPIV3Schema -> JSON schema: closed objects, nullable, int-or-string."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural(v) for k, v in schema.items() if k != "description"}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    keep_unknown = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and \
            "additionalProperties" not in out and not keep_unknown:
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    for key in [k for k in out if k.startswith("x-kubernetes-")]:
        del out[key]
    return out


@functools.lru_cache(maxsize=None)
def _validators() -> dict:
    import jsonschema

    validators = {}
    with open(TFJOB_CRD) as f:
        crd = next(d for d in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader",
                                                               yaml.SafeLoader)) if d)
    for version in crd["spec"]["versions"]:
        schema = _structural(version["schema"]["openAPIV3Schema"])
        schema.pop("additionalProperties", None)  # status is the server's
        key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
        validators[key] = jsonschema.Draft4Validator(schema)
    with open(NETWORK_POLICY) as f:
        validators[("networking.k8s.io/v1", "NetworkPolicy")] = \
            jsonschema.Draft7Validator(json.load(f))
    return validators


def schema_errors(obj: dict) -> list[str]:
    """What the schema of `obj`'s kind finds wrong with it (``[]``: valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    validator = _validators().get(key)
    if validator is None:
        return [f"no schema for {key}"]
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))]
