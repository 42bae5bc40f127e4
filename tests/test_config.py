"""Config errors name the file, the line and the key; `ether run` exits 2 and starts nothing."""

import json
import logging
import subprocess
import sys
import textwrap

import jsonschema
import pytest
import yaml

from ether.config import ConfigError, load
from ether.transport.broker import BrokerAddress
from support import REPO


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
            "must be 'no', 'on-failure' or 'always', got 'sometimes'",
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
        ("broker:\n  url: http://lab:80\n", 2, "broker.url", "the scheme must be mqtt://"),
        ("recorder:\n  drain_timeot: 3\n", 2, "recorder.drain_timeot", "did you mean 'drain_timeout'"),
        ("broker:\n  url: mqtt://lab\n  user: me\n", 3, "broker.user", "did you mean 'username'"),
        ("broker: http://lab:80\n", 1, "broker", "the scheme must be mqtt://"),
        ("instances:\n  sensor:\n", 2, "instances.sensor", "is empty"),
        ("instances:\n  a:\n    kwargs: {x: 1}\n", 2, "instances.a.class_path", "missing 'class_path:'"),
        ("instances:\n  a b:\n    class_path: lab_classes.Echo\n", 2, "instances.a b", "must be a word"),
        ("session: a/b\n", 1, "session", "the session name must be a word"),
        ("session:\n  host: 10.0.0.1\n", 2, "session.host", "use 'broker: mqtt://HOST:PORT'"),
        (
            "instances:\n  a:\n    class_path: lab_classes.Echo\n    max_restarts: -1\n",
            4,
            "instances.a.max_restarts",
            "must be >= 0, got -1",
        ),
        (
            "instances:\n  a:\n    class_path: lab_classes.Echo\n    autorun: maybe\n",
            4,
            "instances.a.autorun",
            "must be true or false",
        ),
        (
            "registry:\n  lab_classes.Echo:\n    methods:\n      echo:\n        ether_sub: {topic: other}\n",
            5,
            "registry.lab_classes.Echo.methods.echo.ether_sub",
            "already subscribes to",
        ),
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


def test_an_empty_value_is_an_empty_section_or_default_options(tmp_path):
    text = "registry:\n  lab_classes.RootEcho:\n    methods:\n      take:\n        ether_start:\ninstances:\nstreams:\n"
    config = load(write(tmp_path, text))
    assert config.registry == {"lab_classes.RootEcho": {"take": {"ether_start": {}}}}
    assert config.instances == {}


def test_a_class_whose_signature_python_cannot_read_is_accepted(tmp_path):
    config = load(
        write(tmp_path, "instances:\n  d:\n    class_path: collections.OrderedDict\n    kwargs: {a: 1}\n")
    )
    assert config.instances["d"].kwargs == {"a": 1}


def test_its_arguments_are_checked_by_the_call_and_the_failure_names_the_instance():
    import ether

    bad = {"class_path": "datetime.date", "kwargs": {"year": "x"}, "restart": "no"}
    with pytest.raises(ether.InstanceStartError, match=r"'day' \(datetime.date\): TypeError"):
        ether.tap({"recorder": False, "instances": {"day": bad}})
    ether.tap({"recorder": False})  # nothing stayed tapped: a fresh tap works
    ether.shutdown()


def run_cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "ether", "run", *args, "--headless"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )


def test_a_bad_broker_url_on_the_command_line_is_a_config_error(tmp_path):
    path = write(tmp_path, "instances: {}\n")
    proc = run_cli(tmp_path, str(path), "--broker", "http://lab:80")
    assert proc.returncode == 2, proc.stderr
    assert "ether: --broker: broker url 'http://lab:80': the scheme must be mqtt://" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_file_says_what_the_session_will_be(tmp_path, caplog):
    ether_log = logging.getLogger("ether")  # does not propagate once a session configured it
    ether_log.addHandler(caplog.handler)
    try:
        assert load(write(tmp_path, "")).instances == {}
        assert "lab.yaml is empty: the session will have only its broker and recorder" in caplog.text
        load(write(tmp_path, "instances:\n"))
        assert "lab.yaml lists no instances" in caplog.text
    finally:
        ether_log.removeHandler(caplog.handler)


SCHEMA = REPO / "docs" / "schemas" / "config.schema.json"


def test_the_committed_json_schema_is_the_models_schema():
    from ether.config.models import json_schema

    assert json.loads(SCHEMA.read_text()) == json_schema(), (
        "docs/schemas/config.schema.json is stale: python -m ether.config > docs/schemas/config.schema.json"
    )


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*/*.yaml")), ids=lambda p: p.parent.name)
def test_the_schema_accepts_every_example_and_so_does_load(example):
    jsonschema.validate(yaml.safe_load(example.read_text()), json.loads(SCHEMA.read_text()))
    load(example)


@pytest.mark.parametrize(
    "text",
    [
        "instances:\n  a:\n    class_path: x.Y\n    restrat: no\n",
        "instances:\n  a b:\n    class_path: x.Y\n",
        "instances:\n  a:\n    kwargs: {}\n",
        "recorder:\n  drain_timeout: -1\n",
        "streams:\n  cam: sometimes\n",
        "registry:\n  x.Y:\n    methods:\n      m:\n        ether_pub: {interval: 0}\n",
    ],
)
def test_the_schema_refuses_what_load_refuses(tmp_path, text):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA.read_text()))
    with pytest.raises(ConfigError):
        load(write(tmp_path, text))
