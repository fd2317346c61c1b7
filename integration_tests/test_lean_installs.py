"""Lean images without a Docker engine: install each Docker target's exact set (setup.py with
KINESIS_COLLECTIONS_TARGET, from the same files the Dockerfile copies) into a fresh venv, run the connector's spec and
check, and assert what the venv does not have. Prints each venv's installed size (README, "Images")."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {
    "source": {"package": "source_kinesis", "script": "source-kinesis",
               "absent_modules": ["duckdb", "pyarrow", "psycopg", "asyncssh", "destination_collection", "collection_runner"],
               "absent_scripts": ["destination-collection", "kinesis-collection"]},
    "destination": {"package": "destination_collection", "script": "destination-collection",
                    "absent_modules": ["boto3", "botocore", "source_kinesis", "collection_runner"],
                    "absent_scripts": ["source-kinesis", "kinesis-collection"]},
}


def _install(target: str, folder) -> str:
    """A venv with the target installed from a copy of what its Docker stage copies; its bin folder."""
    source = folder / "src"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, TARGETS[target]["package"]), source / TARGETS[target]["package"],
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "KINESIS_COLLECTIONS_TARGET": target}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(source)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(venv / "bin")


def _messages(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _size_mb(path: str) -> float:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total / 1e6


@pytest.mark.parametrize("target", list(TARGETS))
def test_each_docker_target_installs_its_connector_alone(target, tmp_path, kinesis_mock, kinesis, new_stream):
    spec = TARGETS[target]
    bin_dir = _install(target, tmp_path)
    python = os.path.join(bin_dir, "python")
    assert os.path.exists(os.path.join(bin_dir, spec["script"]))
    for script in spec["absent_scripts"]:
        assert not os.path.exists(os.path.join(bin_dir, script)), f"the {target} install has {script}"
    present = subprocess.run(
        [python, "-c", "import importlib.util, json, sys; "
                       "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))",
         *spec["absent_modules"]], capture_output=True, text=True, timeout=60, check=True, cwd=str(tmp_path))
    assert json.loads(present.stdout) == [], f"the {target} install has {present.stdout.strip()}"

    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run([os.path.join(bin_dir, spec["script"]), "spec"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    assert [m["type"] for m in _messages(run.stdout) if m["type"] == "SPEC"] == ["SPEC"]

    if target == "source":
        config = kinesis_mock.source_config([new_stream(shards=1, prefix="lean")])
    else:
        config = {"store": {"store_type": "duckdb", "path": str(tmp_path / "lean.duckdb")}}
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    run = subprocess.run([os.path.join(bin_dir, spec["script"]), "check", "--config", str(config_path)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    statuses = [m["connectionStatus"] for m in _messages(run.stdout) if m["type"] == "CONNECTION_STATUS"]
    assert [s["status"] for s in statuses] == ["SUCCEEDED"], (statuses, run.stderr[-2000:])
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    print(f"{target}: installed size {_size_mb(site):.0f} MB (site-packages)")
