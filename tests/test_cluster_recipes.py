"""The launch recipes in configs/cluster/ start as written: no cluster here, so these check what
a startup would trip on: manifests that parse, pods that mount only volumes, claims and secrets
that exist, secrets the image's user can read, the workers' work root, and a submit script whose
entrypoint reaches the head's shell intact (run for real, against a stand-in `ray` CLI)."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evolve.config.loading import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "configs" / "cluster"
RAY_UID, RAY_GID = 1000, 100  # user ray in the rayproject/ray images


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def _rayjob() -> tuple[dict, list[dict]]:
    docs = _docs("rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    return job, docs


def _pod_specs(job: dict) -> dict[str, dict]:
    """Every pod template of the RayJob, by role, with its labels alongside."""
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]
    if "submitterPodTemplate" in job["spec"]:
        pods["submitter"] = job["spec"]["submitterPodTemplate"]
    return pods


def _created_secrets() -> dict[str, set[str]]:
    """The secrets (and their keys) that the recipe's own kubectl commands create."""
    text = (CLUSTER / "rayjob.yaml").read_text()
    made: dict[str, set[str]] = {}
    for name, args in re.findall(r"kubectl create secret generic (\S+)((?: --from-\S+)+)", text):
        made[name] = set(re.findall(r"--from-(?:file|literal)=([^=\s]+)=", args))
    return made


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_parses(path: Path) -> None:
    assert [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_cluster_run_config_is_valid() -> None:
    config = load_config(CLUSTER / "run.yaml", ["output.results_dir=/results"])
    assert config.workers.gpus_per_worker == 1 and config.workers.network == "isolate"
    assert Path(config.template_dir, "prepare.py").is_file()


def test_rayjob_pods_mount_only_what_exists() -> None:
    job, docs = _rayjob()
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    secrets = _created_secrets()
    assert secrets, "the header must say how to create the secrets"
    for role, template in _pod_specs(job).items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{role}: mounts undefined volume {mount['name']}"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, role
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, role
    auth = job["spec"]["rayClusterSpec"].get("authOptions", {})
    assert auth.get("mode") == "token"
    if auth.get("secretName"):
        assert "auth_token" in secrets[auth["secretName"]]  # the key KubeRay reads


def test_rayjob_secrets_are_readable_by_the_image_user() -> None:
    """Secret files are root-owned: uid 1000 reads them only through fsGroup + a group bit."""
    job, _ = _rayjob()
    for role, template in _pod_specs(job).items():
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "secret" not in volume:
                continue
            mode = volume["secret"].get("defaultMode", 0o644)
            group = spec.get("securityContext", {}).get("fsGroup")
            readable = mode & stat.S_IROTH or (group == RAY_GID and mode & stat.S_IRGRP)
            assert readable, f"{role}: secret {volume['name']} mode {mode:o} unreadable to ray"


def test_rayjob_ray_containers_read_the_token_from_a_mounted_file() -> None:
    """An empty RAY_AUTH_TOKEN stops the operator injecting the literal token into the Ray
    containers' environment (readable in /proc by same-user experiments); Ray then reads
    RAY_AUTH_TOKEN_PATH, which must name a file of a mounted, created secret."""
    job, _ = _rayjob()
    secrets = _created_secrets()
    for role, template in _pod_specs(job).items():
        if role == "submitter":
            continue
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("RAY_AUTH_TOKEN") == "", role
        path = Path(env["RAY_AUTH_TOKEN_PATH"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        secret = volumes[mounts[str(path.parent)]]["secret"]["secretName"]
        assert path.name in secrets[secret], role


def test_rayjob_token_auth_needs_a_ray_version_that_has_it() -> None:
    job, _ = _rayjob()
    version = tuple(int(x) for x in job["spec"]["rayClusterSpec"]["rayVersion"].split("."))
    assert version >= (2, 52, 0)


def test_rayjob_workers_have_the_work_root() -> None:
    """Workers lay out experiments under <results_dir>/<run>/work, the driver's path."""
    job, _ = _rayjob()
    match = re.search(r"output\.results_dir=(\S+?)'?$", job["spec"]["entrypoint"])
    assert match, "the entrypoint must point results at persistent storage"
    results = match.group(1)
    for role, template in _pod_specs(job).items():
        if role in ("head", "submitter"):
            continue
        mounts = [m["mountPath"] for c in template["spec"]["containers"]
                  for m in c.get("volumeMounts", [])]
        assert any(results == p or results.startswith(p.rstrip("/") + "/") for p in mounts), role


def test_rayjob_network_policy_confines_only_the_gpu_pods() -> None:
    job, docs = _rayjob()
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    pods = _pod_specs(job)

    def selected(labels: dict, wanted: dict) -> bool:
        return all(labels.get(k) == v for k, v in wanted.items())

    labels = {role: t.get("metadata", {}).get("labels", {}) for role, t in pods.items()}
    assert selected(labels["gpu8"], selector) and not selected(labels["head"], selector)
    assert "Egress" in policy["spec"]["policyTypes"]
    peers = [peer.get("podSelector", {}).get("matchLabels", {})
             for rule in policy["spec"]["egress"] for peer in rule["to"]
             if "namespaceSelector" not in peer]
    # the workers still reach the head and each other (Ray's own traffic)
    for role in ("head", "gpu8"):
        assert any(selected(labels[role], peer) for peer in peers), role
    assert all("ipBlock" not in peer for rule in policy["spec"]["egress"] for peer in rule["to"])


def test_launcher_installs_what_startup_needs() -> None:
    (config,) = _docs("ray-cluster.yaml")
    setup = " ".join(config["setup_commands"])
    assert "ray[default]" in setup  # dashboard + job server for `ray job submit`
    assert "boto3" in " ".join(config["head_setup_commands"])  # the AWS autoscaler
    assert any("apparmor_restrict_unprivileged_userns=0" in c
               for c in config["worker_setup_commands"])
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        for command in config[key]:
            done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert done.returncode == 0, f"{key}: {command}: {done.stderr}"
    for target, source in config["file_mounts"].items():
        if not source.startswith("~"):
            assert (CLUSTER.parents[1] / source).exists(), target


def test_submit_script_delivers_the_entrypoint_intact(tmp_path: Path) -> None:
    """Run submit.sh against a stand-in `ray` that records its arguments, then run the
    entrypoint the way the job server does (shlex-joined, through a shell) with a stand-in
    `python`: the key comes from the head's file and every extra argument arrives whole."""
    assert subprocess.run(["bash", "-n", str(CLUSTER / "submit.sh")]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ray-argv.json"
    fake_ray = bin_dir / "ray"
    fake_ray.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake_python = bin_dir / "python"
    fake_python.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                           "print(json.dumps({'argv': sys.argv[1:],"
                           " 'key': os.environ.get('ANTHROPIC_API_KEY')}))\n")
    for tool in (fake_ray, fake_python):
        tool.chmod(0o755)
    key_file = tmp_path / "anthropic_key"
    key_file.write_text("sk-test-123")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HEAD": "localhost",
           "KEY_FILE": str(key_file), "RESULTS": str(tmp_path / "results")}
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run([str(CLUSTER / "submit.sh"), "--set", "name=two words"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    argv = json.loads(record.read_text())
    assert argv[:4] == ["job", "submit", "--address", "http://localhost:8265"]
    entrypoint = argv[argv.index("--") + 1:]
    job = subprocess.run(["bash", "-c", shlex.join(entrypoint)], env=env, capture_output=True,
                         text=True, timeout=30)
    assert job.returncode == 0, job.stderr
    seen = json.loads(job.stdout)
    assert seen["key"] == "sk-test-123"
    assert seen["argv"] == ["-m", "evolve.run.cli", "run", "configs/cluster/run.yaml", "--address",
                            "auto", "--set", f"output.results_dir={tmp_path / 'results'}",
                            "--set", "name=two words"]
    assert "sk-test-123" not in " ".join(argv)  # the key never travels in the job request
