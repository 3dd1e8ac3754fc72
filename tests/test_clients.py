"""suite/clients.py's own logic: junit outcomes and the comparison."""
import importlib.util
import os

SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "suite")
spec = importlib.util.spec_from_file_location(
    "clients", os.path.join(SUITE, "clients.py"))
clients = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clients)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="test.test_a" name="test_ok" time="0.1"/>
<testcase classname="test.test_a" name="test_bad" time="0.1"><failure message="x"/></testcase>
<testcase classname="test.test_a" name="test_err" time="0.1"><error message="y"/></testcase>
<testcase classname="test.test_a" name="test_skip" time="0.0"><skipped message="z"/></testcase>
</testsuite></testsuites>
"""


def run(tests, stopped=None):
    return dict(tests=tests, stopped=stopped, seconds=1.0, summary="")


def test_outcomes_from_junit(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    assert clients.outcomes(str(path)) == {
        "test.test_a::test_ok": "passed", "test.test_a::test_bad": "failed",
        "test.test_a::test_err": "failed", "test.test_a::test_skip": "skipped"}
    assert clients.outcomes(str(tmp_path / "absent.xml")) == {}


def test_compare_needs_every_stdlib_pass_and_the_alias(capsys):
    std = run({"a": "passed", "b": "passed", "c": "failed"})
    same = {"stdlib": std, "cmultiprocessing": run({"a": "passed",
                                                    "b": "passed"}),
            "alias": "cmultiprocessing []"}
    assert clients.compare("lib", same)
    missing = dict(same, cmultiprocessing=run({"a": "passed",
                                                "b": "failed"}))
    assert not clients.compare("lib", missing)
    assert "not passed: b" in capsys.readouterr().out
    stopped = dict(same, cmultiprocessing=run({"a": "passed", "b": "passed"},
                                              stopped="stopped after 5 s"))
    assert not clients.compare("lib", stopped)
    no_alias = dict(same, alias="multiprocessing []")
    assert not clients.compare("lib", no_alias)
    nothing = dict(same, stdlib=run({}))
    assert not clients.compare("lib", nothing)
