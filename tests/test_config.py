"""Config errors name the file, the line and the key; `ether run` exits 2 and starts nothing."""

import subprocess
import sys
import textwrap

import pytest

from ether.config import ConfigError, load
from ether.transport.broker import BrokerAddress


def write(tmp_path, text):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "text, line, key, reason",
    [
        ("instances:\n  a:\n    class_path: lab_classes.Echo\n   bad: [\n", 4, "", "not valid YAML"),
        (
            "instances:\n  a:\n    class_path: nowhere.Thing\n",
            3,
            "instances.a.class_path",
            "cannot import module 'nowhere'",
        ),
        (
            "instances:\n  a:\n    class_path: lab_classes.Nope\n",
            3,
            "instances.a.class_path",
            "has no class 'Nope'",
        ),
        (
            "instances:\n  p:\n    class_path: lab_classes.Lifecycle\n    kwargs:\n      path: x\n      colour: red\n",
            6,
            "instances.p.kwargs.colour",
            "unexpected keyword argument 'colour'",
        ),
        (
            "instances:\n  p:\n    class_path: lab_classes.Lifecycle\n    kwargs:\n      path: [1, 2]\n",
            5,
            "instances.p.kwargs.path",
            "field 'path'",
        ),
        (
            "instances:\n  p:\n    class_path: lab_classes.Lifecycle\n    args: [[1, 2]]\n",
            4,
            "instances.p.args",
            "field 'path'",
        ),
        (
            "instances:\n  p:\n    class_path: lab_classes.Lifecycle\n    args: [x, y]\n",
            4,
            "instances.p.args",
            "too many positional arguments",
        ),
        (
            "instances:\n  a:\n    class_path: lab_classes.Echo\n    restrat: no\n",
            4,
            "instances.a.restrat",
            "did you mean 'restart'",
        ),
        (
            "instances:\n  a:\n    class_path: lab_classes.Echo\n    restart: sometimes\n",
            4,
            "instances.a.restart",
            "must be one of",
        ),
        ("instance:\n  a: {}\n", 1, "instance", "did you mean 'instances'"),
        (
            "registry:\n  lab_classes.RootEcho:\n    methods:\n      tke:\n        ether_sub: {}\n",
            4,
            "registry.lab_classes.RootEcho.methods.tke",
            "RootEcho has no method 'tke' (did you mean 'take'?)",
        ),
        (
            "registry:\n  lab_classes.RootEcho:\n    methods:\n      take:\n        ether_subscribe: {}\n",
            5,
            "registry.lab_classes.RootEcho.methods.take.ether_subscribe",
            "unknown key",
        ),
        ("broker:\n  url: http://lab:80\n", 2, "broker.url", "only mqtt:// is supported"),
        ("recorder:\n  drain_timeot: 3\n", 2, "recorder.drain_timeot", "did you mean 'drain_timeout'"),
        ("broker:\n  url: mqtt://lab\n  user: me\n", 3, "broker.user", "did you mean 'username'"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, text, line, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key), str(err)
    assert reason in str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_a_good_config_resolves_defaults(tmp_path):
    config = load(write(tmp_path, "instances:\n  a:\n    class_path: lab_classes.Echo\n"))
    a = config.instances["a"]
    assert (a.autorun, a.restart, a.max_restarts, a.args, a.kwargs) == (True, "on-failure", 5, [], {})


def test_yaml_no_is_the_restart_policy_no(tmp_path):
    config = load(write(tmp_path, "instances:\n  a:\n    class_path: lab_classes.Echo\n    restart: no\n"))
    assert config.instances["a"].restart == "no"


def test_ether_run_exits_2_and_starts_nothing(tmp_path):
    path = write(tmp_path, "instances:\n  a:\n    class_path: lab_classes.Echo\n    kwargs: {oops: 1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ether", "run", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert f"{path}:4: instances.a.kwargs.oops:" in proc.stderr
    assert "ready" not in proc.stderr


def test_broker_login_from_yaml_keys(tmp_path):
    text = "broker:\n  url: mqtt://10.0.0.2:1884\n  username: lab pc\n  password: 'p@ss:w'\n"
    url = load(write(tmp_path, text)).broker_url
    assert BrokerAddress.parse(url) == BrokerAddress("10.0.0.2", 1884, "lab pc", "p@ss:w")
