"""``--emit ... --data-workers N``: TF's tf.data service beside every engine's job (issue 23).
No TensorFlow, no cluster."""

from __future__ import annotations

import pytest
import yaml
from k8s_check import schema_errors

from tfps.emit import data_service
from tfps.launch import cli


def _emit(tmp_path, engine: str, *extra) -> str:
    script = tmp_path / "train.py"
    script.write_text("")
    config = cli.config_from_args(cli.parse(["--emit", engine, *extra, str(script)]))
    return config.render()


@pytest.mark.parametrize("engine", ["tfjob", "volcano", "trainjob"])
def test_kubernetes_engines_run_the_data_service_beside_the_job(tmp_path, engine):
    objects = list(yaml.safe_load_all(_emit(tmp_path, engine, "--image", "img:1",
                                            "--data-workers", "3", "--namespace", "ml")))
    data = [o for o in objects if o["metadata"]["name"].startswith("tfps-train-d")]
    assert [o["kind"] for o in data] == ["Service", "StatefulSet", "StatefulSet",
                                         "NetworkPolicy"]
    service, dispatcher, workers, policy = data
    assert service["spec"]["clusterIP"] == "None"  # stable names: a restart keeps the address
    assert workers["spec"]["replicas"] == 3 and dispatcher["spec"]["replicas"] == 1
    command = workers["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "tfps.data.service", "data_worker"]
    assert command[-1] == "tfps-train-dispatcher-0.tfps-train-data:2222"
    assert all(o["metadata"].get("namespace") == "ml" for o in data)
    assert not schema_errors(policy)
    text = yaml.safe_dump_all(objects)
    assert text.count("grpc://tfps-train-dispatcher-0.tfps-train-data:2222") == 1  # the chief


def test_no_data_service_without_data_workers(tmp_path):
    assert "tfps.data.service" not in _emit(tmp_path, "tfjob", "--image", "img:1")
    assert "TFPS_DATA_SERVICE" not in _emit(tmp_path, "slurm")


def test_slurm_runs_the_data_service_as_steps_and_exports_its_address(tmp_path):
    script = _emit(tmp_path, "slurm", "--data-workers", "2")
    assert 'export TFPS_DATA_SERVICE="grpc://$data_host:$data_port"' in script
    assert "srun --overlap --ntasks=2 sh -c 'exec python -m tfps.data.service data_worker" \
        in script
    assert script.index("tfps.data.service dispatcher") < script.index("srun --distribution")
    assert "kill $data_pids" in script


def test_the_data_service_address():
    assert data_service.address("job") == "grpc://job-dispatcher-0.job-data:2222"
