"""Classes decorated only through YAML `registry:` run like decorated ones (external-class example)."""

from support import REPO


def test_external_classes_from_yaml_registry(run_session):
    session, observer = run_session(REPO / "examples" / "external_classes" / "config.yaml")
    session.start()
    assert observer.wait_for("processed_data", 1)[0][0] == {"result": 84}
    status = session.active_instances()
    assert status["processor2x"]["subscribes"] == ["data"]
    assert status["processor2x"]["publishes"] == ["processed_data"]
