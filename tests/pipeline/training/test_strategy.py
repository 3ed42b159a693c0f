"""Strategy, role and sharding decisions, with the GPU list and TF_CONFIG replaced: no cluster needed."""
from __future__ import annotations

import json

import pytest
import tensorflow as tf

from common.errors import ConfigError
from pipeline.training import distribute, multiworker

TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}, "task": {"type": "worker", "index": 0}}


def _tf_config(monkeypatch, config):
    monkeypatch.setenv("TF_CONFIG", config if isinstance(config, str) else json.dumps(config))


@pytest.mark.parametrize("gpus,expected", [(0, "default"), (1, "default"), (2, "mirrored"), (4, "mirrored")])
def test_auto_picks_mirrored_only_with_several_gpus(monkeypatch, gpus, expected):
    monkeypatch.setattr(distribute, "visible_gpus", lambda: [f"GPU:{i}" for i in range(gpus)])
    _tf_config(monkeypatch, TWO_WORKERS)  # auto never turns a TF_CONFIG into multi-worker training
    assert distribute.strategy_name("auto") == expected


def test_named_strategies_are_taken_as_given_and_unknown_ones_refused(monkeypatch):
    monkeypatch.setattr(distribute, "visible_gpus", lambda: ["GPU:0", "GPU:1"])
    assert [distribute.strategy_name(n) for n in ("default", "mirrored", "multiworker")] == \
        ["default", "mirrored", "multiworker"]
    with pytest.raises(ConfigError, match="STRATEGY=horovod"):
        distribute.strategy_name("horovod")


def test_default_strategy_on_this_machine(monkeypatch):
    monkeypatch.setattr(distribute, "visible_gpus", lambda: [])
    strategy = distribute.select_strategy("auto")
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
    assert distribute.num_workers(strategy) == 1
    _tf_config(monkeypatch, {**TWO_WORKERS, "task": {"type": "worker", "index": 1}})
    assert distribute.writes_run_folder(strategy)  # a TF_CONFIG without the multi-worker strategy: one process


@pytest.mark.parametrize("config,message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}, "host:port"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}, '"task"'),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}, "index 1"),
])
def test_multiworker_without_a_valid_tf_config_is_a_clear_error(monkeypatch, config, message):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        _tf_config(monkeypatch, config)
    with pytest.raises(ConfigError, match=message):
        distribute.select_strategy("multiworker")


def test_roles_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief() and distribute.worker_index() == 0  # one process: it is the chief
    _tf_config(monkeypatch, TWO_WORKERS)
    assert distribute.is_chief()
    second = {**TWO_WORKERS, "task": {"type": "worker", "index": 1}}
    _tf_config(monkeypatch, second)
    assert not distribute.is_chief() and distribute.worker_index() == 1
    with_chief = {"cluster": {"chief": ["h0:1"], "worker": ["h1:1"]}, "task": {"type": "worker", "index": 0}}
    assert not distribute.is_chief(with_chief)  # a "chief" job outranks worker 0
    assert distribute.is_chief({**with_chief, "task": {"type": "chief", "index": 0}})


def test_worker_dir_is_the_run_folder_on_the_chief_and_a_removed_temporary_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with distribute.worker_dir(tmp_path / "run", chief=True) as d:
        assert d == tmp_path / "run"
    _tf_config(monkeypatch, {**TWO_WORKERS, "task": {"type": "worker", "index": 1}})
    with distribute.worker_dir(tmp_path / "run", chief=False) as d:
        assert d.name.startswith("train-worker1-")
        assert d.parent == tmp_path / "tmp" and d.is_dir()
        (d / "history.csv").write_text("epoch\n")
    assert not d.exists() and not (tmp_path / "run").exists()


def test_auto_shard_rule():
    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.auto_shard_policy(None, 4) == policy.DATA  # generated / file-less source
    assert distribute.auto_shard_policy(3, 4) == policy.DATA  # fewer files than workers
    assert distribute.auto_shard_policy(4, 4) == policy.FILE
    assert distribute.auto_shard_policy(1024, 2) == policy.FILE
    assert distribute.auto_shard_policy(1024, 1) == policy.DATA  # one worker: nothing to split
    ds = distribute.with_auto_shard(tf.data.Dataset.range(3), policy.FILE)
    assert ds.options().experimental_distribute.auto_shard_policy == policy.FILE


def test_launcher_builds_worker_commands_and_cluster_configs():
    argv = ["--data", "shapes", "--workers", "3", "--run", "r", "--strategy=mirrored", "--workers=3"]
    assert multiworker.worker_argv(argv) == ["--data", "shapes", "--run", "r", "--strategy", "multiworker"]
    ports = multiworker.free_ports(3)
    assert len(set(ports)) == 3
    hosts = [f"127.0.0.1:{p}" for p in ports]
    configs = [json.loads(multiworker.tf_config(hosts, i)) for i in range(3)]
    assert [distribute.is_chief(c) for c in configs] == [True, False, False]
    assert all(distribute.read_tf_config(json.dumps(c)) == c for c in configs)
