"""Kubernetes manifests, read and checked the way Kubernetes reads and checks them. No cluster.

* `kubectl_read`: ``kubectl label --local -f FILE k=v -o json`` parses a manifest with the
  YAML reader Kubernetes uses (sigs.k8s.io/yaml over go-yaml, YAML 1.1 typing) and prints
  every object as JSON: what the API server would receive from ``kubectl apply``.
* `schema_errors`: an object against the openAPIV3Schema of its CRD (TFJob, Volcano Job,
  TrainJob, TrainingRuntime: tests/k8s/README.md), or a NetworkPolicy against its
  structure. Unknown fields are errors, as with the API server's strict field validation.
  The CRDs' CEL rules (``x-kubernetes-validations``) at every path the object fills are
  evaluated too: transition rules (``oldSelf``) do not apply to a create, the others are
  transcribed in `_CEL`; a rule not transcribed there is itself an error, so a new CRD
  version cannot slip one past.
* `admission_errors`: what the engines' admission webhooks and Kubernetes' own validation
  refuse beyond the schemas, transcribed from their sources (each rule cites its file):
  Volcano's job webhook, JobSet's webhook, Kubernetes' pod template and Job validation.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess

import yaml

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s")
CRDS = ("kubeflow.org_tfjobs.v1.9.0.yaml", "batch.volcano.sh_jobs.v1.15.1.yaml",
        "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
        "trainer.kubeflow.org_trainingruntimes.v2.3.0.yaml")
TFJOB_CRD = os.path.join(HERE, CRDS[0])
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


@functools.cache
def _crds() -> dict:
    """``(apiVersion, kind)`` -> (JSON-schema validator, raw openAPIV3Schema)."""
    import jsonschema

    out = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for name in CRDS:
        with open(os.path.join(HERE, name)) as f:
            crd = next(d for d in yaml.load_all(f, Loader=loader) if d)
        for version in crd["spec"]["versions"]:
            raw = version["schema"]["openAPIV3Schema"]
            schema = _structural(raw)
            schema.pop("additionalProperties", None)  # status is the server's
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            out[key] = (jsonschema.Draft4Validator(schema), raw)
    with open(NETWORK_POLICY) as f:
        out[("networking.k8s.io/v1", "NetworkPolicy")] = (
            jsonschema.Draft7Validator(json.load(f)), None)
    return out


# The CEL rules of the vendored CRDs that can apply to a create, as Python: rule -> test of
# the value at the rule's path. (CEL's `has(x.f)` is "f in x".)
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_CEL = {
    "self >= 1": lambda v: v >= 1,
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
        lambda v: bool(_NAME.fullmatch(v["metadata"]["name"])),
    "size(self.metadata.name) <= 63": lambda v: len(v["metadata"]["name"]) <= 63,
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)]"
    ".filter(x, x).size() <= 1":
        lambda v: sum(k in v for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))":
        lambda v: not (v.get("startupPolicy", {}).get("startupPolicyOrder") == "InOrder"
                       and any("dependsOn" in x for x in v.get("replicatedJobs", ()))),
}


def _cel_errors(schema, value, path: str) -> list[str]:
    errors = []
    for rule in (schema or {}).get("x-kubernetes-validations", ()):
        text = " ".join(rule["rule"].split())
        if "oldSelf" in text:
            continue  # a transition rule: only on update
        if text not in _CEL:
            errors.append(f"{path or '(root)'}: CEL rule not transcribed in k8s_check: {text}")
        elif not _CEL[text](value):
            errors.append(f"{path or '(root)'}: {rule.get('message', text)}")
    if not isinstance(schema, dict):
        return errors
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                errors += _cel_errors(sub, item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def schema_errors(obj: dict) -> list[str]:
    """What the schema (and CEL rules) of `obj`'s kind find wrong with it (``[]``: valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in _crds():
        return [f"no schema for {key}"]
    validator, raw = _crds()[key]
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
              for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))]
    return errors + (_cel_errors(raw, obj, "") if raw else [])


# ------------------------------------------------------------------------ admission rules
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# k8s.io/apimachinery validation.IsValidPortName (IANA_SVC_NAME) and env var names.
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# Volcano v1.15.1 pkg/webhooks/admission/jobs/validate/util.go: policyEventMap and
# policyActionMap (what users may write), plugins/factory.go (the plugins it knows).
_VC_EVENTS = {"*", "PodFailed", "PodEvicted", "PodPending", "Unknown", "TaskCompleted",
              "TaskFailed", "JobUpdated"}
_VC_ACTIONS = {"AbortJob", "RestartJob", "RestartTask", "RestartPod", "RestartPartition",
               "TerminateJob", "CompleteJob", "ResumeJob"}
_VC_PLUGINS = {"ssh", "env", "svc", "tensorflow", "mpi", "pytorch", "hcclrank", "ray"}


def _pod_template_errors(template: dict, where: str, job: bool) -> list[str]:
    """Kubernetes' ValidatePodTemplate (core/validation), the rules a generated template can
    break: names, ports, env names, requests within limits, restart policy."""
    errors, spec = [], template.get("spec", {})
    allowed = ("OnFailure", "Never") if job else ("Always", "OnFailure", "Never")
    if spec.get("restartPolicy", "Always" if not job else None) not in allowed:
        errors.append(f"{where}: restartPolicy {spec.get('restartPolicy')!r} not in {allowed}")
    for c in spec.get("containers", ()):
        if not _DNS1123.fullmatch(c["name"]) or len(c["name"]) > 63:
            errors.append(f"{where}: container name {c['name']!r}")
        for port in c.get("ports", ()):
            name = port.get("name", "")
            if name and (len(name) > 15 or not _PORT_NAME.fullmatch(name)
                         or "--" in name or not re.search("[a-z]", name)):
                errors.append(f"{where}: port name {name!r} is not an IANA_SVC_NAME")
        for env in c.get("env", ()):
            if not _ENV_NAME.fullmatch(env["name"]):
                errors.append(f"{where}: env name {env['name']!r}")
        res = c.get("resources", {})
        for k, v in res.get("requests", {}).items():
            if k in res.get("limits", {}) and str(res["limits"][k]) != str(v) and k == "memory":
                errors.append(f"{where}: {k} request {v} above its limit")
    return errors


def _job_errors(spec: dict, where: str) -> list[str]:
    """batch/v1 Job validation (pkg/apis/batch/validation) of podFailurePolicy."""
    errors = []
    policy = spec.get("podFailurePolicy")
    if policy is not None:
        if spec["template"]["spec"].get("restartPolicy") != "Never":
            errors.append(f"{where}: podFailurePolicy needs restartPolicy Never")
        for i, rule in enumerate(policy["rules"]):
            if ("onExitCodes" in rule) == ("onPodConditions" in rule):
                errors.append(f"{where}: rule {i}: exactly one of onExitCodes, onPodConditions")
            codes = rule.get("onExitCodes")
            if codes is None:
                continue
            values = codes.get("values", [])
            if values != sorted(set(values)) or not values or len(values) > 255:
                errors.append(f"{where}: rule {i}: values must be sorted, unique, 1-255")
            if codes.get("operator") == "In" and 0 in values:
                errors.append(f"{where}: rule {i}: 0 cannot be used with In")
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        errors.append(f"{where}: an Indexed Job needs completions")
    return errors


def _volcano_errors(job: dict) -> list[str]:
    """Volcano v1.15.1 pkg/webhooks/admission/jobs/validate: validateJobCreate."""
    errors, spec, name = [], job["spec"], job["metadata"]["name"]
    tasks, seen, total = spec.get("tasks", []), set(), 0
    if not tasks:
        errors.append("No task specified in job spec")
    for task in tasks:
        total += task["replicas"]
        if task["name"] in seen or not _DNS1123.fullmatch(task["name"]):
            errors.append(f"task name {task['name']!r}: duplicated or not DNS-1123")
        seen.add(task["name"])
        if not 0 <= task.get("minAvailable", task["replicas"]) <= task["replicas"]:
            errors.append(f"task {task['name']}: minAvailable not in [0, replicas]")
        for i in range(task["replicas"]):
            if len(f"{name}-{task['name']}-{i}") > 63:
                errors.append(f"pod name {name}-{task['name']}-{i} longer than 63")
        errors += _volcano_policy_errors(task.get("policies", []), task["name"])
        errors += _pod_template_errors(task["template"], f"task {task['name']}", job=False)
    if spec.get("minAvailable", 0) > total:
        errors.append("job 'minAvailable' should not be greater than total replicas in tasks")
    errors += _volcano_policy_errors(spec.get("policies", []), "job")
    errors += [f"unable to find job plugin: {p}" for p in spec.get("plugins", {})
               if p not in _VC_PLUGINS]
    if spec.get("queue") == "root":
        errors.append("can not submit job to root queue")
    return errors


def _volcano_policy_errors(policies: list[dict], where: str) -> list[str]:
    """validate/util.go validatePolicies."""
    errors, events, codes = [], set(), set()
    for policy in policies:
        listed = ([policy["event"]] if "event" in policy else []) + policy.get("events", [])
        if listed and "exitCode" in policy:
            errors.append(f"{where}: must not specify event and exitCode simultaneously")
        elif not listed and "exitCode" not in policy:
            errors.append(f"{where}: either event and exitCode should be specified")
        for event in listed:
            if event not in _VC_EVENTS or policy.get("action") not in _VC_ACTIONS:
                errors.append(f"{where}: invalid policy event/action {event}/{policy}")
            if event in events:
                errors.append(f"{where}: duplicate event {event} across different policy")
            events.add(event)
        if not listed and "exitCode" in policy:
            if policy["exitCode"] == 0 or policy["exitCode"] in codes:
                errors.append(f"{where}: exitCode {policy['exitCode']} zero or duplicated")
            if policy.get("action") not in _VC_ACTIONS:
                errors.append(f"{where}: invalid policy action {policy.get('action')}")
            codes.add(policy["exitCode"])
    if "*" in events and len(events) > 1:
        errors.append(f"{where}: if there's * here, no other policy should be here")
    return errors


def _jobset_errors(name: str, spec: dict) -> list[str]:
    """JobSet v0.12.0 pkg/webhooks/jobset_webhook.go ValidateCreate, on the JobSet Trainer
    builds from the runtime (named after the TrainJob)."""
    errors, names = [], set()
    rule_name = re.compile(r"^[a-zA-Z]([a-zA-Z0-9_,:]*[a-zA-Z0-9_])?$")
    for rjob in spec["replicatedJobs"]:
        names.add(rjob["name"])
        job = rjob["template"]["spec"]
        replicas = rjob.get("replicas", 1)
        longest_job = f"{name}-{rjob['name']}-{replicas - 1}"
        if not _NAME.fullmatch(longest_job) or len(longest_job) > 63:
            errors.append(f"job name {longest_job!r} is not a DNS-1035 label")
        if job.get("completionMode") == "Indexed" and job.get("completions") is not None:
            pod = f"{longest_job}-{job['completions'] - 1}-abcde"
            if len(pod) > 63:
                errors.append(f"pod name {pod!r} longer than 63")
        errors += _job_errors(job, f"replicatedJob {rjob['name']}")
        errors += _pod_template_errors(job["template"], f"replicatedJob {rjob['name']}",
                                       job=True)
    for rule in spec.get("failurePolicy", {}).get("rules", ()):
        if not rule_name.match(rule.get("name", "")) or len(rule.get("name", "")) > 128:
            errors.append(f"failure policy rule name {rule.get('name')!r}")
        errors += [f"failure policy target {t!r} is no replicatedJob"
                   for t in rule.get("targetReplicatedJobs", ()) if t not in names]
    errors += [f"success policy target {t!r} is no replicatedJob"
               for t in spec.get("successPolicy", {}).get("targetReplicatedJobs", ())
               if t not in names]
    return errors


def admission_errors(objects: list[dict]) -> list[str]:
    """What admission (the engines' webhooks, Kubernetes' validation) refuses in `objects`,
    a whole manifest (a TrainJob is checked with the runtime it names)."""
    errors = []
    runtimes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "TrainingRuntime"}
    for obj in objects:
        kind = obj["kind"]
        if kind == "Job" and obj["apiVersion"].startswith("batch.volcano.sh/"):
            errors += _volcano_errors(obj)
        elif kind == "TFJob":
            for rtype, rspec in obj["spec"]["tfReplicaSpecs"].items():
                errors += _pod_template_errors(rspec["template"], rtype, job=False)
        elif kind == "TrainJob":
            runtime = runtimes.get(obj["spec"]["runtimeRef"]["name"])
            if runtime is None:
                errors.append(f"TrainJob {obj['metadata']['name']}: its runtime is not here")
                continue
            errors += _jobset_errors(obj["metadata"]["name"], runtime["spec"]["template"]["spec"])
    return errors
